package detect

import (
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	nf4cli "github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Version is the stage version recorded in the stream header.
const Version = "0.1.0"

// Exit statuses: the ones every nf4pipe tool shares (internal/cli).
const (
	ExitOK    = nf4cli.ExitOK
	ExitInput = nf4cli.ExitInput // no model, a bad config.json or safetensors file
	ExitUsage = nf4cli.ExitUsage // bad flags or arguments
)

func init() {
	nf4cli.RegisterInputErrors(ErrInput, ErrConfig, checkpoint.ErrLayout, checkpoint.ErrQuantState, checkpoint.ErrConfig, checkpoint.ErrDType)
}

// Main runs the detect command line with args (args[0] is the program name)
// and returns the exit status. stdoutIsTerminal makes it refuse to write a
// binary stream to a terminal.
func Main(args []string, stdout, stderr io.Writer, stdoutIsTerminal bool) int {
	app := &cli.App{
		Name:      "detect",
		Usage:     "identify a Hugging Face model and stream its tensors with roles and quantization decisions",
		UsageText: "detect [flags] MODEL_DIR | MODEL.safetensors | config.json | ORG/NAME",
		Version:   nf4cli.Version,
		Description: "Writes a tensor stream to stdout (or -o FILE, written whole or not at all) and a\n" +
			"report to stderr. With a config.json alone it writes tensor descriptors without data,\n" +
			"so plan can run before the weights are downloaded. A model id ORG/NAME that is not a local\n" +
			"path is read from the local Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else\n" +
			"~/.cache/huggingface/hub), never downloaded. A checkpoint already in bitsandbytes 4-bit\n" +
			"streams its 4-bit weights as stored, counted as the parameters they hold.\n\n" +
			"Exit status: 0 done, 2 bad flags or arguments, 3 no model or an invalid config.json or\n" +
			"safetensors file, 4 the output could not be written.\n\n" +
			"Examples:\n" +
			"   detect --info ~/models/Llama-3.1-8B            # report only\n" +
			"   detect --info --json config.json               # machine-readable report\n" +
			"   detect --info meta-llama/Llama-3.1-8B --revision main   # from the HF cache\n" +
			"   detect -q -o llama.stream ~/models/Llama-3.1-8B\n" +
			"   detect MODEL | plan --gpus 24GiB | quantize | place --out MODEL-nf4",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "info", Usage: "print the report on stdout and write no stream"},
			&cli.BoolFlag{Name: "json", Usage: "report as JSON"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` instead of stdout"},
			&cli.StringFlag{Name: "revision", Usage: "with a model id: the branch, tag or commit `REV` in the Hugging Face cache (default main)"},
			&cli.BoolFlag{Name: "quantize-experts", Usage: "also quantize MoE expert matrices (transformers keeps them 16-bit)"},
			&cli.StringSliceFlag{Name: "skip", Usage: "keep tensors whose name matches the glob `PATTERN` (repeatable)"},
			&cli.StringSliceFlag{Name: "only", Usage: "quantize only tensors whose name matches the glob `PATTERN` (repeatable)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no report and no progress line on stderr when streaming"},
		},
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return nf4cli.Usagef("want exactly one MODEL path or id, got %d (see detect --help)", c.NArg())
			}
			pol := arch.Policy{QuantizeExperts: c.Bool("quantize-experts"), Skip: c.StringSlice("skip"), Only: c.StringSlice("only")}
			out := c.String("output")
			if !c.Bool("info") && (out == "" || out == "-") && stdoutIsTerminal {
				return nf4cli.Usagef("stdout is a terminal; pipe the stream into the next stage, give -o FILE, or use --info")
			}
			return run(c, c.Args().First(), pol, args)
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return nf4cli.Usagef("%v (see detect --help)", err)
		},
	}
	return nf4cli.Run(app, args)
}

func run(c *cli.Context, path string, pol arch.Policy, args []string) error {
	m, err := OpenRevision(path, c.String("revision"), pol)
	if err != nil {
		return err
	}
	defer m.Close()
	rep := m.Report()
	writeReport := func(w io.Writer) error {
		if c.Bool("json") {
			return rep.WriteJSON(w)
		}
		return rep.WriteText(w)
	}
	if c.Bool("info") {
		return writeReport(c.App.Writer)
	}
	out, err := nf4cli.CreateOutput(c, c.String("output"))
	if err != nil {
		return err
	}
	defer out.Abort()
	stage := tensorstream.Stage{Name: "detect", Version: Version, Args: stageArgs(args)}
	if !c.Bool("quiet") {
		m.Progress = nf4cli.NewProgress(c.App.ErrWriter, "detect", m.PayloadBytes())
	}
	err = m.Stream(out.Writer, stage) // the file itself: a pipe is spliced into
	m.Progress.Done()
	if err != nil {
		return err
	}
	if err := out.Commit(); err != nil {
		return err
	}
	if c.Bool("quiet") {
		return nil
	}
	return writeReport(c.App.ErrWriter)
}

func stageArgs(args []string) []string {
	if len(args) == 0 {
		return nil
	}
	out := append([]string(nil), args[1:]...)
	for i, a := range out {
		if p, err := filepath.Abs(a); err == nil && fileExists(a) {
			out[i] = p
		}
	}
	return out
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }
