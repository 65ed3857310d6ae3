package place

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	icli "github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/units"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	ucli "github.com/urfave/cli/v2"
)

// ExitInterrupted is the status after SIGINT or SIGTERM, as a shell reports 128+2.
const ExitInterrupted = 130

func init() {
	icli.RegisterInputErrors(ErrStream, checkpoint.ErrConfig, checkpoint.ErrQuantState, checkpoint.ErrLayout, checkpoint.ErrDType)
}

// Main runs the place tool with args (args[0] is the program name) and returns
// the exit status. ctx cancelled (by SIGINT or SIGTERM in cmd/place) aborts the
// placement and leaves no output directory.
func Main(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, stdoutIsTerminal bool) int {
	app := &ucli.App{
		Name:      "place",
		Usage:     "write a quantized tensor stream as a Hugging Face bitsandbytes 4-bit checkpoint, or onto GPUs",
		UsageText: "place --out DIR [flags] < STREAM",
		Version:   icli.Version,
		Description: "Writes model.safetensors (or shards with model.safetensors.index.json), config.json with\n" +
			"quantization_config, the source's tokenizer and generation files, and the plan (" + PlanFile + ")\n" +
			"into DIR, atomically: nothing appears under DIR unless everything was written.\n" +
			"When stdout is not a terminal the stream is passed on, so verify can follow.\n\n" +
			"Exit status: 0 done, 2 bad flags, 3 an invalid or truncated stream, 4 DIR could not be\n" +
			"written (it exists without --force, disk full, file-size limit, permission), 130\n" +
			"interrupted (SIGINT/SIGTERM). On any failure nothing is left under DIR.\n\n" +
			"Examples:\n" +
			"   detect MODEL | plan --gpus 24GiB | quantize | place --out MODEL-nf4 | verify --reference MODEL\n" +
			"   quantize -i model.stream | place --out MODEL-nf4 --max-shard-size 2GB\n" +
			"   detect MODEL | plan --gpus h100 | quantize | place --gpu --json   # CUDA build",
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "out", Aliases: []string{"d"}, Usage: "write the checkpoint into `DIR`"},
			&ucli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "replace DIR if it exists"},
			&ucli.StringFlag{Name: "max-shard-size", Value: "5GB", Usage: "largest shard, as transformers takes it (`SIZE`: 5GB, 500MB, 2GiB)"},
			&ucli.StringFlag{Name: "compute-dtype", Usage: "bnb_4bit_compute_dtype (bfloat16, float16, float32); default: the plan's, else the model's dtype"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` instead of stdin"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "pass the stream on into `FILE`"},
			&ucli.BoolFlag{Name: "emit-stream", Aliases: []string{"emit"}, Usage: "pass the stream on to stdout even when it is a terminal (with --gpu: as read back from device memory)"},
			&ucli.BoolFlag{Name: "no-emit", Usage: "do not pass the stream on"},
			&ucli.BoolFlag{Name: "gpu", Usage: "upload every tensor to its planned GPU and report device memory (CUDA build)"},
			&ucli.BoolFlag{Name: "json", Usage: "report as JSON"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no summary line and no progress line"},
		},
		HideHelpCommand: true,
		Action: func(c *ucli.Context) error {
			return action(ctx, c, stdoutIsTerminal)
		},
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return icli.Usagef("%v (see place --help)", err)
		},
	}
	return icli.Run(app, args)
}

func action(ctx context.Context, c *ucli.Context, stdoutIsTerminal bool) error {
	if c.NArg() > 0 {
		return icli.Usagef("unexpected argument %q: the stream comes on stdin or with -i", c.Args().First())
	}
	size, err := safetensors.ParseSize(c.String("max-shard-size"))
	if err != nil {
		return icli.WithCode(icli.ExitUsage, err)
	}
	opt := Options{Out: c.String("out"), Force: c.Bool("force"), MaxShardSize: size, GPU: c.Bool("gpu"), Args: c.Args().Slice()}
	if d := c.String("compute-dtype"); d != "" {
		if opt.ComputeDType = torchDType(d); opt.ComputeDType == "" {
			return icli.Usagef("--compute-dtype %q: want bfloat16, float16 or float32", d)
		}
	}
	if opt.Out == "" && !opt.GPU {
		return icli.Usagef("give --out DIR (and/or --gpu in a CUDA build)")
	}
	if p := c.String("input"); (p == "" || p == "-") && icli.IsTerminal(c.App.Reader) {
		return icli.Usagef("no input: pipe a stream in (... | quantize | place --out DIR) or give -i FILE")
	}
	in, err := icli.OpenInput(c, c.String("input"))
	if err != nil {
		return err
	}
	defer in.Close()
	var out *icli.Output
	streamToStdout := false
	switch {
	case c.Bool("no-emit"):
	case c.String("output") != "":
		if out, err = icli.CreateOutput(c, c.String("output")); err != nil {
			return err
		}
		defer out.Abort()
		opt.Emit = out
	case c.Bool("emit-stream") || !stdoutIsTerminal:
		opt.Emit, streamToStdout = c.App.Writer, true
	}
	if !c.Bool("quiet") {
		opt.Progress = icli.NewProgress(c.App.ErrWriter, "place", 0)
	}
	rep, err := Place(ctx, in, opt)
	opt.Progress.Done()
	if err != nil {
		if errors.Is(err, ErrInterrupted) {
			return icli.WithCode(ExitInterrupted, err)
		}
		if errors.Is(err, ErrExists) {
			// The output cannot be written where asked: status 4, as for a
			// full disk, so that scripts tell it from bad input (3).
			return icli.WithCode(icli.ExitOutput, err)
		}
		if errors.Is(err, ErrNoCUDA) {
			return icli.WithCode(icli.ExitUsage, err)
		}
		return err
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return err
		}
	}
	report := c.App.ErrWriter
	if !streamToStdout && c.Bool("json") {
		report = c.App.Writer
	}
	if c.Bool("json") {
		enc := json.NewEncoder(report)
		enc.SetIndent("", "  ")
		return enc.Encode(rep)
	}
	if !c.Bool("quiet") {
		fmt.Fprintln(report, Summary(rep))
		for _, d := range rep.GPU {
			fmt.Fprintln(report, DeviceLine(d))
		}
	}
	return nil
}

// Summary is the one-line report.
func Summary(r *Report) string {
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

// DeviceLine reports one device of a --gpu run.
func DeviceLine(d DeviceReport) string {
	s := fmt.Sprintf("place: %s (%s): %d tensors, %s placed, %s device memory used (free %s -> %s)",
		d.Device, d.Name, d.Tensors, units.Bytes(d.PlacedBytes), units.Bytes(d.UsedBytes), units.Bytes(d.FreeBefore), units.Bytes(d.FreeAfter))
	if d.PlannedWeights > 0 {
		s += fmt.Sprintf("; plan: %s of weights, %s peak in training", units.Bytes(d.PlannedWeights), units.Bytes(d.PlannedTotal))
	}
	return s
}
