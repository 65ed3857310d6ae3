package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
)

const description = `Reads a tensor stream (stdin or -i FILE), quantizes every tensor that detect marked
for quantization to bitsandbytes 4-bit, bit-identical to bitsandbytes, and passes the
others through unchanged (or converted with --cast). The stream goes to stdout (or -o
FILE), a one-line summary to stderr.

--only and --skip override detect's decision: --skip keeps the tensors it matches,
--only quantizes exactly the floating tensors of two or more dimensions it matches
(--only '*' quantizes all of them). Patterns are globs on tensor names (path.Match).

Exit status: 0 done, 2 bad flags (or --device cuda in a build without CUDA),
3 input it cannot quantize (truncated or corrupt stream, FP8 or integer tensors marked
for quantization, NaN/Inf weights, a config-only stream), 4 the output could not be
written.

Example:
   detect ~/models/Llama-3.2-1B | quantize | place --out Llama-3.2-1B-nf4
   detect M -o m.stream && quantize -i m.stream -o m-nf4.stream --json
   detect M | quantize --type fp4 --blocksize 128 --double-quant=false --skip '*.mlp.down_proj.weight' | place --out M-fp4`

func newApp() *ucli.App {
	return &ucli.App{
		Name:      "quantize",
		Usage:     "quantize a tensor stream to bitsandbytes NF4/FP4 with double quantization",
		UsageText: "quantize [flags] < STREAM > STREAM",
		Version:   cli.Version,
		Description: description + "\n\n   This build: " + map[bool]string{true: "with CUDA (--device cuda uses the GPUs; auto stays on the CPU, which keeps up with any pipe)",
			false: "CPU only (make cuda builds the GPU path)"}[quantize.CUDABuilt],
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "type", Value: "nf4", Usage: "4-bit data type: nf4 or fp4"},
			&ucli.IntFlag{Name: "blocksize", Value: quant.DefaultBlockSize, Usage: "values per absmax block: a power of two from 32 to 4096"},
			&ucli.BoolFlag{Name: "double-quant", Value: true, Usage: "quantize the absmax values to 8 bits (--double-quant=false: float32 absmax)"},
			&ucli.StringFlag{Name: "device", Value: "auto", Usage: "auto, cpu, cuda or cuda:N[,N...] (tensors go round-robin over the GPUs listed)"},
			&ucli.StringSliceFlag{Name: "only", Usage: "quantize exactly the 2+-D floating tensors whose name matches the glob `PATTERN` (repeatable)"},
			&ucli.StringSliceFlag{Name: "skip", Usage: "keep tensors whose name matches the glob `PATTERN` (repeatable; wins over --only)"},
			&ucli.IntFlag{Name: "threads", Usage: "CPU threads, 0 for all cores"},
			&ucli.BoolFlag{Name: "allow-nonfinite", Usage: "quantize NaN and ±Inf weights as bitsandbytes does instead of failing"},
			&ucli.StringFlag{Name: "offset-gpu", Usage: "sum the double-quantization offset in torch's order on this GPU: a name (h100, h200, a100, a10g, l4, t4, rtx4090, ...) or `SMSxTHREADS` (default: the first local GPU in a CUDA build, else h100/h200)"},
			&ucli.StringFlag{Name: "cast", Usage: "convert kept F32/F16/BF16 tensors to `DTYPE`: bf16, f16 or f32"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` (- for stdin)"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` (- for stdout); written whole or not at all"},
			&ucli.BoolFlag{Name: "json", Usage: "write the summary as JSON on stderr"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no summary and no progress line"},
		},
		DisableSliceFlagSeparator: true, // a glob may hold a comma
		HideHelpCommand:           true,
		Action:                    action,
		OnUsageError: func(_ *ucli.Context, err error, _ bool) error {
			return cli.Usagef("%v (see quantize --help)", err)
		},
	}
}

func action(c *ucli.Context) error {
	if c.NArg() > 0 {
		return cli.Usagef("unexpected argument %q: the stream comes on stdin or with -i FILE", c.Args().First())
	}
	cast, err := quantize.ParseCast(c.String("cast"))
	if err != nil {
		return fail(err)
	}
	offsetGPU, err := offsetGeometry(c.String("offset-gpu"))
	if err != nil {
		return cli.Usagef("--offset-gpu: %v", err)
	}
	opt := quantize.Options{
		Params: quant.Params{Type: quant.Type(strings.ToLower(c.String("type"))), BlockSize: c.Int("blocksize"),
			DoubleQuant: c.Bool("double-quant"), AllowNonFinite: c.Bool("allow-nonfinite"), ReduceGPU: offsetGPU},
		Device: c.String("device"), Threads: c.Int("threads"),
		Only: c.StringSlice("only"), Skip: c.StringSlice("skip"), Cast: cast,
		Version: cli.Version, Args: stageArgs(c),
	}
	if err := opt.Validate(); err != nil {
		return fail(err)
	}
	inPath, outPath := c.String("input"), c.String("output")
	if (inPath == "" || inPath == "-") && cli.IsTerminal(orStd(c.App.Reader, os.Stdin)) {
		return cli.Usagef("no input: pipe a stream in (detect MODEL | quantize) or give -i FILE")
	}
	if (outPath == "" || outPath == "-") && cli.IsTerminal(orStd(c.App.Writer, os.Stdout)) {
		return cli.Usagef("stdout is a terminal: pipe the stream into the next stage or give -o FILE")
	}
	in, err := cli.OpenInput(c, inPath)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := cli.CreateOutput(c, outPath)
	if err != nil {
		return err
	}
	defer out.Abort()
	if !c.Bool("quiet") {
		opt.Progress = cli.NewProgress(c.App.ErrWriter, "quantize", 0)
	}
	sum, err := quantize.Run(in, out, opt)
	opt.Progress.Done()
	if err != nil {
		return fail(err)
	}
	if err := out.Commit(); err != nil {
		return err
	}
	switch {
	case c.Bool("quiet"):
		return nil
	case c.Bool("json"):
		return sum.WriteJSON(c.App.ErrWriter)
	}
	return sum.WriteText(c.App.ErrWriter)
}

// offsetGeometry is the GPU whose torch reduction order the offset follows:
// the named one, else the first local GPU (CUDA builds), else quant's default
// (an H100/H200, where transformers + bitsandbytes were checked).
func offsetGeometry(name string) (quant.ReduceGPU, error) {
	if name != "" {
		return quant.ParseReduceGPU(name)
	}
	if n, err := gpu.Count(); err == nil && n > 0 {
		if g, err := gpu.ReduceGeometry(0); err == nil {
			return g, nil
		}
	}
	return quant.DefaultReduceGPU, nil
}

// stageArgs are the flags as given, for the header's stage record.
func stageArgs(c *ucli.Context) []string {
	var out []string
	for _, name := range c.FlagNames() {
		if name == "quiet" || name == "json" || name == "input" || name == "output" || !c.IsSet(name) {
			continue
		}
		for _, v := range flagValues(c, name) {
			out = append(out, "--"+name+"="+v)
		}
	}
	return out
}

func flagValues(c *ucli.Context, name string) []string {
	switch name {
	case "only", "skip":
		return c.StringSlice(name)
	}
	return []string{fmt.Sprint(c.Value(name))}
}

// fail gives err its exit status; cli.Run prints it once, as "quantize: ...".
func fail(err error) error {
	return cli.WithCode(exitCode(err), err)
}

func exitCode(err error) int {
	switch {
	case errors.Is(err, quantize.ErrWrite):
		return cli.ExitOutput
	case errors.Is(err, quantize.ErrUsage), errors.Is(err, quantize.ErrNoCUDA):
		return cli.ExitUsage
	case errors.Is(err, quantize.ErrUnsupported), errors.Is(err, quantize.ErrNoData),
		errors.Is(err, quantize.ErrRead), errors.Is(err, quant.ErrNonFinite), errors.Is(err, quant.ErrDType):
		return cli.ExitInput
	}
	return cli.Code(err)
}

// orStd is v, or the standard file def when v is nil (the app's default).
func orStd(v any, def *os.File) any {
	if v == nil {
		return def
	}
	return v
}
