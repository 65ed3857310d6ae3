// Command detect identifies a Hugging Face model's architecture and writes its
// tensors, annotated with roles and quantization decisions, as a tensor stream.
package main

import (
	"io"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

func main() { cli.Main(newApp(), exitTable) }

// exitTable maps detect's errors to its exit statuses.
var exitTable = cli.Table{
	{Code: cli.ExitOK, Meaning: "done"},
	{Code: cli.ExitUsage, Meaning: "bad flags or arguments", Errs: []error{arch.ErrPattern, hfcache.ErrRevision}},
	{Code: cli.ExitInput, Meaning: "no model (nor in the Hugging Face cache), or an invalid config.json, safetensors file or 4-bit checkpoint", Errs: []error{
		detect.ErrInput, detect.ErrConfig, arch.ErrConfig, arch.ErrShape, hfcache.ErrNotCached,
		checkpoint.ErrLayout, checkpoint.ErrQuantState, checkpoint.ErrConfig, checkpoint.ErrDType,
		safetensors.ErrHeader, safetensors.ErrTruncated, safetensors.ErrDType, safetensors.ErrShape,
		safetensors.ErrOffsets, safetensors.ErrDuplicate, safetensors.ErrMissingShard, safetensors.ErrIndex,
		safetensors.ErrNotFound, safetensors.ErrSize}},
	{Code: cli.ExitOutput, Meaning: "the output could not be written (permission, disk full, ...)"},
}

func newApp() *ucli.App {
	return &ucli.App{
		Name:      "detect",
		Usage:     "identify a Hugging Face model and stream its tensors with roles and quantization decisions",
		UsageText: "detect [flags] MODEL_DIR | MODEL.safetensors | config.json | ORG/NAME",
		Description: "Writes a tensor stream to stdout (or -o FILE, written whole or not at all) and a\n" +
			"report to stderr. With a config.json alone it writes tensor descriptors without data,\n" +
			"so plan can run before the weights are downloaded. A model id ORG/NAME that is not a local\n" +
			"path is read from the local Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else\n" +
			"~/.cache/huggingface/hub), never downloaded. A checkpoint already in bitsandbytes 4-bit\n" +
			"streams its 4-bit weights as stored, counted as the parameters they hold. Flags may\n" +
			"come before or after MODEL; -- ends them.\n\n" +
			"Examples:\n" +
			"   detect --info testdata/models/llama                  # report only\n" +
			"   detect testdata/models/llama/config.json --info --json   # machine-readable report\n" +
			"   detect --info meta-llama/Llama-3.1-8B --revision main      # from the HF cache\n" +
			"   detect -q -o llama.stream testdata/models/llama\n" +
			"   detect testdata/models/llama | quantize | place --out llama-nf4",
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "info", Usage: "print the report on stdout and write no stream"},
			&ucli.BoolFlag{Name: "json", Usage: "the report as JSON (with --info on stdout, else on stderr)"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` instead of stdout"},
			&ucli.StringFlag{Name: "revision", Usage: "with a model id: the branch, tag or commit `REV` in the Hugging Face cache (default main)"},
			&ucli.BoolFlag{Name: "quantize-experts", Usage: "also quantize MoE expert matrices (transformers keeps them 16-bit)"},
			&ucli.StringSliceFlag{Name: "skip", Usage: "keep tensors whose name matches the glob `PATTERN` (repeatable)"},
			&ucli.StringSliceFlag{Name: "only", Usage: "quantize only tensors whose name matches the glob `PATTERN` (repeatable)"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no text report and no progress line on stderr when streaming (--json still writes the JSON one)"},
		},
		DisableSliceFlagSeparator: true, // a glob may hold a comma
		HideHelpCommand:           true,
		Action:                    action,
	}
}

func action(c *ucli.Context) error {
	if c.NArg() != 1 {
		return cli.Usagef("want exactly one MODEL path or id, got %d (see detect --help)", c.NArg())
	}
	pol := arch.Policy{QuantizeExperts: c.Bool("quantize-experts"), Skip: c.StringSlice("skip"), Only: c.StringSlice("only")}
	out := c.String("output")
	if !c.Bool("info") && (out == "" || out == "-") && cli.IsTerminal(c.App.Writer) {
		return cli.Usagef("stdout is a terminal; pipe the stream into the next stage, give -o FILE, or use --info")
	}
	m, err := detect.OpenRevision(c.Args().First(), c.String("revision"), pol)
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
	o, err := cli.CreateOutput(c, out)
	if err != nil {
		return err
	}
	defer o.Abort()
	stage := tensorstream.Stage{Name: "detect", Version: cli.Version, Args: cli.StageArgs(c)}
	if !c.Bool("quiet") {
		if p := cli.NewProgress(c.App.ErrWriter, "detect", m.PayloadBytes()); p != nil {
			m.Progress = p
			defer p.Done()
		}
	}
	err = m.Stream(o.Writer, stage) // the file itself: a pipe is spliced into
	if err != nil {
		return err
	}
	if err := o.Commit(); err != nil {
		return err
	}
	if c.Bool("quiet") && !c.Bool("json") {
		return nil
	}
	return writeReport(c.App.ErrWriter)
}
