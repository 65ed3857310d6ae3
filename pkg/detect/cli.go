package detect

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	nf4cli "github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
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

var errUsage = errors.New("usage")

// Main runs the detect command line with args (args[0] is the program name)
// and returns the exit status. stdoutIsTerminal makes it refuse to write a
// binary stream to a terminal.
func Main(args []string, stdout, stderr io.Writer, stdoutIsTerminal bool) int {
	var status = ExitOK
	app := &cli.App{
		Name:      "detect",
		Usage:     "identify a Hugging Face model and stream its tensors with roles and quantization decisions",
		UsageText: "detect [flags] MODEL_DIR | MODEL.safetensors | config.json",
		Description: "Writes a tensor stream to stdout (or -o FILE) and a report to stderr.\n" +
			"With a config.json alone it writes tensor descriptors without data, so plan can run\n" +
			"before the weights are downloaded.\n\n" +
			"Examples:\n" +
			"   detect --info ~/models/Llama-3.1-8B            # report only\n" +
			"   detect --info --json config.json               # machine-readable report\n" +
			"   detect MODEL | plan --gpus 24GiB | quantize | place --out MODEL-nf4",
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "info", Usage: "print the report on stdout and write no stream"},
			&cli.BoolFlag{Name: "json", Usage: "report as JSON"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` instead of stdout"},
			&cli.BoolFlag{Name: "quantize-experts", Usage: "also quantize MoE expert matrices (transformers keeps them 16-bit)"},
			&cli.StringSliceFlag{Name: "skip", Usage: "keep tensors whose name matches the glob `PATTERN` (repeatable)"},
			&cli.StringSliceFlag{Name: "only", Usage: "quantize only tensors whose name matches the glob `PATTERN` (repeatable)"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no report on stderr when streaming"},
		},
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("%w: want exactly one MODEL path, got %d", errUsage, c.NArg())
			}
			pol := arch.Policy{QuantizeExperts: c.Bool("quantize-experts"), Skip: c.StringSlice("skip"), Only: c.StringSlice("only")}
			out := c.String("output")
			if !c.Bool("info") && out == "" && stdoutIsTerminal {
				return fmt.Errorf("%w: stdout is a terminal; pipe the stream into the next stage, give -o FILE, or use --info", errUsage)
			}
			return run(c.Args().First(), pol, c.Bool("info"), c.Bool("json"), c.Bool("quiet"), out, args, stdout, stderr)
		},
		ExitErrHandler: func(*cli.Context, error) {},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return fmt.Errorf("%w: %v", errUsage, err)
		},
	}
	if err := app.Run(args); err != nil {
		status = nf4cli.Code(err)
		switch {
		case errors.Is(err, errUsage):
			status = ExitUsage
		case errors.Is(err, ErrInput), errors.Is(err, ErrConfig):
			status = ExitInput
		}
		if status == ExitUsage {
			fmt.Fprintf(stderr, "detect: %v (see detect --help)\n", err)
		} else {
			fmt.Fprintln(stderr, err)
		}
	}
	return status
}

func run(path string, pol arch.Policy, info, asJSON, quiet bool, out string, args []string, stdout, stderr io.Writer) (err error) {
	m, err := Open(path, pol)
	if err != nil {
		return err
	}
	defer m.Close()
	rep := m.Report()
	writeReport := func(w io.Writer) error {
		if asJSON {
			return rep.WriteJSON(w)
		}
		return rep.WriteText(w)
	}
	if info {
		return writeReport(stdout)
	}
	dst := stdout
	if out != "" {
		f, err := os.Create(out)
		if err != nil {
			return err
		}
		defer func() {
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(out)
			}
		}()
		dst = f
	}
	stage := tensorstream.Stage{Name: "detect", Version: Version, Args: stageArgs(args)}
	if err := m.Stream(dst, stage); err != nil {
		return err
	}
	if quiet {
		return nil
	}
	return writeReport(stderr)
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
