// Command place writes a quantized tensor stream as a Hugging Face checkpoint in
// the bitsandbytes 4-bit layout, or uploads it to the planned GPUs, passing the
// stream on to the next stage.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/units"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/place"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

func main() {
	// A next stage that stops reading stops the emission, not the placement.
	cli.PassSIGPIPE()
	cli.Main(newApp(), exitTable)
}

// exitTable maps place's errors to its exit statuses.
var exitTable = cli.Table{
	{Code: cli.ExitOK, Meaning: "done"},
	{Code: cli.ExitUsage, Meaning: "bad flags (or --gpu in a build without CUDA)", Errs: []error{place.ErrNoCUDA, safetensors.ErrSize}},
	{Code: cli.ExitInput, Meaning: "an invalid or truncated stream, or one that is not quantized", Errs: []error{place.ErrStream,
		checkpoint.ErrConfig, checkpoint.ErrQuantState, checkpoint.ErrLayout, checkpoint.ErrDType,
		tensorstream.ErrCorrupt, tensorstream.ErrChecksum, tensorstream.ErrVersion, tensorstream.ErrLimit, tensorstream.ErrSize}},
	{Code: cli.ExitOutput, Meaning: "DIR could not be written (it exists without --force, --force would replace what place must not, disk full, permission)",
		Errs: []error{place.ErrExists, place.ErrReplace, place.ErrOutput}},
	{Code: 130, Meaning: "interrupted (SIGINT; 143 for SIGTERM): nothing is left under DIR"},
}

func newApp() *ucli.App {
	return &ucli.App{
		Name:      "place",
		Usage:     "write a quantized tensor stream as a Hugging Face bitsandbytes 4-bit checkpoint, or onto GPUs",
		UsageText: "place --out DIR [flags] < STREAM",
		Description: "Writes model.safetensors (or shards with model.safetensors.index.json), config.json with\n" +
			"quantization_config, the source's tokenizer and generation files, and " + place.PlanFile + "\n" +
			"(the plan and the stages that ran; it marks the directory as place's) into DIR,\n" +
			"atomically: nothing appears under DIR unless everything was written. --force replaces\n" +
			"only a directory place wrote, or an empty one; never the source model, nor the working\n" +
			"directory or one above it.\n\n" +
			"The stream is passed on, with a record of this stage, when stdout is a pipe or a socket\n" +
			"(so that verify can follow) or to -o FILE; never into a regular file or a terminal\n" +
			"by redirection (--emit-stream forces it). Its end comes after DIR is complete.\n\n" +
			"Examples:\n" +
			"   detect testdata/models/llama | quantize | place --out llama-nf4 | verify --checkpoint llama-nf4 --reference testdata/models/llama\n" +
			"   quantize -i llama.stream | place --force --out llama-nf4 --max-shard-size 2GB   # replace it\n" +
			"   detect MODEL | plan --gpus h100 | quantize | place --gpu --json   # CUDA build",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "out", Aliases: []string{"d"}, Usage: "write the checkpoint into `DIR`"},
			&ucli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace DIR if it is a checkpoint place wrote (or empty)"},
			&ucli.StringFlag{Name: "max-shard-size", Value: "5GB", Usage: "largest shard, as transformers takes it (`SIZE`: 5GB, 500MB, 2GiB)"},
			&ucli.StringFlag{Name: "compute-dtype", Usage: "bnb_4bit_compute_dtype (`DTYPE`: bfloat16, float16, float32); default: the plan's, else the model's dtype"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` instead of stdin"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "pass the stream on into `FILE`"},
			&ucli.BoolFlag{Name: "emit-stream", Aliases: []string{"emit"}, Usage: "pass the stream on to stdout whatever it is (with --gpu: as read back from device memory)"},
			&ucli.BoolFlag{Name: "no-emit", Usage: "do not pass the stream on"},
			&ucli.BoolFlag{Name: "gpu", Usage: "upload every tensor to its planned GPU and report device memory (CUDA build)"},
			&ucli.BoolFlag{Name: "json", Usage: "the report as JSON, on stderr"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no text summary and no progress line (--json still writes the JSON one)"},
		},
		HideHelpCommand: true,
		Action:          action,
	}
}

func action(c *ucli.Context) error {
	if c.NArg() > 0 {
		return cli.Usagef("unexpected argument %q: the stream comes on stdin or with -i", c.Args().First())
	}
	size, err := safetensors.ParseSize(c.String("max-shard-size"))
	if err != nil {
		return cli.WithCode(cli.ExitUsage, fmt.Errorf("--max-shard-size: %w", err))
	}
	opt := place.Options{Out: c.String("out"), Force: c.Bool("force"), MaxShardSize: size, GPU: c.Bool("gpu"),
		Version: cli.Version, Args: cli.StageArgs(c)}
	if d := c.String("compute-dtype"); d != "" {
		if opt.ComputeDType = place.TorchDType(d); opt.ComputeDType == "" {
			return cli.Usagef("--compute-dtype %q: want bfloat16, float16 or float32", d)
		}
	}
	if opt.Out == "" && !opt.GPU {
		return cli.Usagef("give --out DIR (and/or --gpu in a CUDA build)")
	}
	if p := c.String("input"); (p == "" || p == "-") && cli.IsTerminal(c.App.Reader) {
		return cli.Usagef("no input: pipe a stream in (... | quantize | place --out DIR) or give -i FILE")
	}
	in, err := cli.OpenInput(c, c.String("input"))
	if err != nil {
		return err
	}
	defer in.Close()
	var out *cli.Output
	switch {
	case c.Bool("no-emit"):
	case c.String("output") != "":
		if out, err = cli.CreateOutput(c, c.String("output")); err != nil {
			return err
		}
		defer out.Abort()
		opt.Emit = out
	case c.Bool("emit-stream") || cli.IsPipe(c.App.Writer):
		opt.Emit = c.App.Writer
	}
	if !c.Bool("quiet") {
		if p := cli.NewProgress(c.App.ErrWriter, "place", 0); p != nil {
			opt.Progress = p
			defer p.Done()
		}
	}
	// place watches the context and removes its partial directory itself:
	// the interrupt handler waits for that before it ends the process.
	release := cli.Hold()
	rep, err := place.Place(c.Context, in, opt)
	release()
	if err != nil {
		if errors.Is(err, place.ErrExists) {
			return cli.WithCode(cli.ExitOutput, fmt.Errorf("%w (use --force to replace it)", err))
		}
		return err
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return err
		}
	}
	report := c.App.ErrWriter
	if c.Bool("json") {
		enc := json.NewEncoder(report)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if !c.Bool("quiet") {
		fmt.Fprintln(report, summary(rep))
		for _, d := range rep.GPU {
			fmt.Fprintln(report, deviceLine(d))
		}
	}
	return nil
}

// summary is the one-line report.
func summary(r *place.Report) string {
	var b strings.Builder
	if r.Dir != "" {
		shards := "1 shard"
		if r.Shards != 1 {
			shards = fmt.Sprintf("%d shards", r.Shards)
		}
		fmt.Fprintf(&b, "place: wrote %s: %d files, %s, %s, %d entries from %d tensors (%d 4-bit)",
			r.Dir, len(r.Files), units.Bytes(r.Bytes), shards, r.Entries, r.Tensors, r.Quantized)
	} else {
		fmt.Fprintf(&b, "place: placed %d tensors (%d 4-bit), %s", r.Tensors, r.Quantized, units.Bytes(r.Payload))
	}
	fmt.Fprintf(&b, " in %.2fs", r.Seconds)
	if r.EmitClosed {
		b.WriteString("; the next stage closed the pipe early")
	}
	return b.String()
}

// deviceLine reports one device of a --gpu run.
func deviceLine(d place.DeviceReport) string {
	s := fmt.Sprintf("place: %s (%s): %d tensors, %s placed, %s device memory used (free %s -> %s)",
		d.Device, d.Name, d.Tensors, units.Bytes(d.PlacedBytes), units.Bytes(d.UsedBytes), units.Bytes(d.FreeBefore), units.Bytes(d.FreeAfter))
	if d.PlannedWeights > 0 {
		s += fmt.Sprintf("; plan: %s of weights, %s peak in training", units.Bytes(d.PlannedWeights), units.Bytes(d.PlannedTotal))
	}
	return s
}
