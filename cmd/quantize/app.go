package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

const description = `Reads a tensor stream (stdin or -i FILE), quantizes every tensor that detect marked
for quantization to bitsandbytes 4-bit, bit-identical to bitsandbytes, and passes the
others through unchanged (or converted with --cast). A kept tensor that detect
annotated with "store" (deepseek_v3's router correction bias, which transformers keeps
float32) is written in that dtype, --cast or not. The stream goes to stdout (or -o
FILE), a one-line summary to stderr.

--only and --skip override detect's decision: --skip keeps the tensors it matches,
--only quantizes exactly the floating tensors of two or more dimensions it matches
(--only '*' quantizes all of them). Patterns are globs on tensor names (path.Match).

Examples:
   detect testdata/models/llama | quantize | place --out llama-nf4
   detect testdata/models/llama -o llama.stream && quantize -i llama.stream -o llama-nf4.stream --json
   detect testdata/models/llama | quantize --type fp4 --blocksize 128 --double-quant=false --skip '*.mlp.down_proj.weight' | place --out llama-fp4`

func newApp() *ucli.App {
	return &ucli.App{
		Name:      "quantize",
		Usage:     "quantize a tensor stream to bitsandbytes NF4/FP4 with double quantization",
		UsageText: "quantize [flags] < STREAM > STREAM",
		Description: description + "\n\n   This build: " + map[bool]string{true: "with CUDA (the GPU opens in the background while the CPU starts; --device cuda then hands it the work, auto shares each run with it while that measures faster than the CPU alone)",
			false: "CPU only (make cuda builds the GPU path)"}[quantize.CUDABuilt],
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "type", Value: string(quant.DefaultParams().Type), Usage: "4-bit data `TYPE`: " + qtype.Names()},
			&ucli.IntFlag{Name: "blocksize", Value: quant.DefaultBlockSize, Usage: "values per absmax block (`N`): a power of two from 32 to 4096"},
			&ucli.BoolFlag{Name: "double-quant", Value: true, Usage: "quantize the absmax values to 8 bits (--double-quant=false: float32 absmax)"},
			&ucli.StringFlag{Name: "device", Value: "auto", Usage: "`DEVICE`: auto, cpu, cuda or cuda:N[,N...] (tensors go round-robin over the GPUs listed)"},
			&ucli.StringSliceFlag{Name: "only", Usage: "quantize exactly the 2+-D floating tensors whose name matches the glob `PATTERN` (repeatable)"},
			&ucli.StringSliceFlag{Name: "skip", Usage: "keep tensors whose name matches the glob `PATTERN` (repeatable; wins over --only)"},
			&ucli.IntFlag{Name: "threads", Usage: "CPU threads (`N`), 0 for all cores"},
			&ucli.BoolFlag{Name: "allow-nonfinite", Usage: "quantize NaN and ±Inf weights as bitsandbytes does instead of failing"},
			&ucli.StringFlag{Name: "offset-gpu", Usage: "sum the double-quantization offset in torch's order on this GPU: a --gpus preset name (h100, h200, a100-80, a10g, l4, t4, rtx4090, ...) or `SMSxTHREADS` (default h100/h200, where the bytes were checked against transformers; local: the first local GPU, CUDA build)"},
			&ucli.StringFlag{Name: "cast", Usage: "convert kept F32/F16/BF16 tensors to `DTYPE`: bf16, f16 or f32"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` (- for stdin)"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` (- for stdout); written whole or not at all"},
			&ucli.BoolFlag{Name: "json", Usage: "the summary as JSON (on stderr: the stream keeps stdout)"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no text summary and no progress line (--json still writes the JSON one)"},
		},
		DisableSliceFlagSeparator: true, // a glob may hold a comma
		HideHelpCommand:           true,
		Action:                    action,
	}
}

func action(c *ucli.Context) error {
	if c.NArg() > 0 {
		return cli.Usagef("unexpected argument %q: the stream comes on stdin or with -i FILE", c.Args().First())
	}
	cast, err := quantize.ParseCast(c.String("cast"))
	if err != nil {
		return flagError(err)
	}
	local := strings.EqualFold(c.String("offset-gpu"), "local")
	if local && !quantize.CUDABuilt {
		return cli.Usagef("--offset-gpu local: this build sees no GPU; use the CUDA build (make cuda) or name the GPU (a --gpus preset or SMSxTHREADS)")
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
		Version: cli.Version, Args: cli.StageArgs(c), LocalOffsetGPU: local,
	}
	if err := opt.Validate(); err != nil {
		return flagError(err)
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
		if p := cli.NewProgress(c.App.ErrWriter, "quantize", 0); p != nil {
			opt.Progress = p
			defer p.Done()
		}
	}
	sum, err := quantize.Run(in, out, opt)
	if err != nil {
		return hint(err)
	}
	if err := out.Commit(); err != nil {
		return err
	}
	switch {
	case c.Bool("json"):
		return sum.WriteJSON(c.App.ErrWriter)
	case c.Bool("quiet"):
		return nil
	}
	return sum.WriteText(c.App.ErrWriter)
}

// exitTable maps quantize's errors to its exit statuses.
var exitTable = cli.Table{
	{Code: cli.ExitOK, Meaning: "done"},
	{Code: cli.ExitUsage, Meaning: "bad flags (or --device cuda in a build without CUDA)", Errs: []error{quantize.ErrUsage, quantize.ErrNoCUDA, quant.ErrParams, arch.ErrPattern}},
	{Code: cli.ExitInput, Meaning: "input it cannot quantize: a truncated or corrupt stream, FP8 or integer tensors marked for quantization, NaN/Inf weights, a config-only stream",
		Errs: []error{quantize.ErrUnsupported, quantize.ErrNoData, quantize.ErrRead, quant.ErrNonFinite, quant.ErrDType, quant.ErrLength,
			tensorstream.ErrCorrupt, tensorstream.ErrChecksum, tensorstream.ErrVersion, tensorstream.ErrLimit, tensorstream.ErrSize}},
	{Code: cli.ExitOutput, Meaning: "the output could not be written", Errs: []error{quantize.ErrWrite}},
}

// offsetGeometry is the GPU whose torch reduction order the offset follows:
// the named one (a gpus preset, or SMSxTHREADS); for "" and "local" the zero
// ReduceGPU, which is quant's default (an H100/H200, where transformers +
// bitsandbytes were checked) unless Options.LocalOffsetGPU ("local") has the
// stage ask the driver for the first local GPU's.
func offsetGeometry(name string) (quant.ReduceGPU, error) {
	if name == "" || strings.EqualFold(name, "local") {
		return quant.ReduceGPU{}, nil
	}
	if p, ok := gpus.LookupPreset(name); ok {
		return p.ReduceGPU(), nil
	}
	g, err := quant.ParseReduceGPU(name)
	if err != nil {
		return g, fmt.Errorf("%q is neither a GPU preset (%s) nor SMSxTHREADS such as 108x2048", name, strings.Join(gpus.PresetNames(), ", "))
	}
	return g, nil
}

// orStd is v, or the standard file def when v is nil (the app's default).
func orStd(v any, def *os.File) any {
	if v == nil {
		return def
	}
	return v
}

// hint adds to err the flag that gets past it, where there is one: the
// library's errors name no flags.
func hint(err error) error {
	var nf *quant.NonFiniteError
	switch {
	case errors.As(err, &nf):
		return fmt.Errorf("%w (--allow-nonfinite quantizes it as bitsandbytes does)", err)
	case errors.Is(err, quantize.ErrUnsupported):
		return fmt.Errorf("%w with --skip NAME", err)
	}
	return err
}

// flags name the flag of each quantize.Options field.
var flags = map[string]string{"Type": "--type", "BlockSize": "--blocksize", "Pattern": "--only/--skip",
	"Cast": "--cast", "Threads": "--threads", "Device": "--device"}

// flagError says an invalid option as the flag that gave it.
func flagError(err error) error {
	var oe *quantize.OptionError
	if errors.As(err, &oe) && flags[oe.Option] != "" {
		return cli.Usagef("%s %s: %s", flags[oe.Option], oe.Value, oe.Why)
	}
	return err
}
