// Command plan decides how a model trains with QLoRA on given GPUs (compute
// dtype, attention, checkpointing, optimizer, device map), predicts the peak
// memory of every device, and writes the plan into the tensor stream.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/plan"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

func main() { cli.Main(newApp(), exitTable) }

// exitTable maps plan's errors to its exit statuses.
var exitTable = cli.Table{
	{Code: cli.ExitOK, Meaning: "it fits"},
	{Code: cli.ExitUsage, Meaning: "bad flags or arguments", Errs: []error{plan.ErrSettings, gpus.ErrSpec, gpus.ErrSize, gpus.ErrMaxMem, gpus.ErrCapOverTotal}},
	{Code: cli.ExitInput, Meaning: "an invalid stream or model description", Errs: []error{plan.ErrModel,
		tensorstream.ErrCorrupt, tensorstream.ErrChecksum, tensorstream.ErrVersion, tensorstream.ErrLimit, tensorstream.ErrSize}},
	{Code: cli.ExitOutput, Meaning: "the output could not be written"},
	{Code: cli.ExitNoFit, Meaning: "it does not fit (the plan is still written, with advice)", Errs: []error{plan.ErrNoFit}},
}

func newApp() *ucli.App {
	return &ucli.App{
		Name:      "plan",
		Usage:     "decide how a model trains with QLoRA on given GPUs and predict whether it fits",
		UsageText: "detect MODEL | plan [flags] | quantize | ...",
		Description: "Reads a tensor stream (a config-only one will do), writes it on with the plan in\n" +
			"its header and a device on every tensor, and reports per device the predicted\n" +
			"peak memory, item by item, with the decisions and their reasons (stderr).\n" +
			"--report and --emit print on stdout instead and end the pipeline there (no stream\n" +
			"on stdout; with -o FILE the stream still goes to FILE). --json only changes the\n" +
			"report's format: with --report on stdout, else on stderr beside the stream.\n\n" +
			"Examples:\n" +
			"   detect testdata/models/llama/config.json | plan --gpus t4 --report   # does it fit on a T4 at 2048 tokens?\n" +
			"   detect testdata/models/llama | plan --gpus rtx4090x2 --report --json\n" +
			"   detect testdata/models/llama | plan --gpus 24GiB,24GiB --max-memory 0:20GiB --emit python\n" +
			"   plan --gpus t4 -q -i llama.stream -o planned.stream\n" +
			"   detect testdata/models/llama | plan --gpus a100-80 | quantize | place --out llama-nf4\n" +
			"   detect testdata/models/gemma3 | plan --gpus l4 --images 1 --report   # a vision-language model, one image a sample\n\n" +
			"GPU presets: " + strings.Join(gpus.PresetNames(), ", "),
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "gpus", Usage: "GPUs as `LIST` of sizes or presets, each optionally xN: 24GiB,24GiB | rtx4090x2 | t4 (default: the driver or nvidia-smi)"},
			&ucli.StringFlag{Name: "max-memory", Usage: "per-device caps, `IDX:SIZE,...` e.g. 0:20GiB,1:24GiB"},
			&ucli.Int64Flag{Name: "seq-len", Value: 2048, Usage: "training sequence length (`N` tokens)"},
			&ucli.Int64Flag{Name: "batch-size", Value: 1, Usage: "per-device batch size `N`"},
			&ucli.Int64Flag{Name: "lora-rank", Value: 16, Usage: "LoRA rank `R`"},
			&ucli.StringFlag{Name: "lora-targets", Value: "all-linear", Usage: "LoRA target modules, `LIST` e.g. q_proj,v_proj"},
			&ucli.StringFlag{Name: "gradient-checkpointing", Value: "auto", Usage: "`MODE`: auto | on | off | offload"},
			&ucli.StringFlag{Name: "optimizer", Value: string(plan.PagedAdamW8bit), Usage: "`NAME`: adamw | adamw_8bit | paged_adamw_8bit"},
			&ucli.StringFlag{Name: "recipe", Value: string(plan.RecipeHFPeft), Usage: "`NAME`: hf-peft (float32 cast of non-quantized parameters) | lean"},
			&ucli.StringFlag{Name: "strategy", Value: string(plan.Sequential), Usage: "`NAME`: sequential | balanced"},
			&ucli.StringFlag{Name: "attention", Value: string(plan.AttnAuto), Usage: "`NAME`: auto | flash_attention_2 | sdpa | eager"},
			&ucli.Int64Flag{Name: "images", Value: 0, Usage: "vision-language models: `N` images a sample (0: text-only fine-tuning, what the --emit snippet's dataset does)"},
			&ucli.Int64Flag{Name: "image-tokens", Value: 0, Usage: "tokens `N` one image makes, instead of the family's default (llava-1.5 576, gemma3 mm_tokens_per_image, qwen vl 256 = a 448x448 image; mllama: the tokens its cross-attention attends to, 4 tiles x 1601)"},
			&ucli.BoolFlag{Name: "report", Usage: "print the report on stdout; no stream on stdout"},
			&ucli.BoolFlag{Name: "json", Usage: "the report as JSON (the plan itself): with --report on stdout, else on stderr"},
			&ucli.StringFlag{Name: "emit", Usage: "print a ready-to-run snippet (`LANG`: python) on stdout; no stream on stdout"},
			&ucli.StringFlag{Name: "model-path", Usage: "model `PATH` to put in the --emit snippet"},
			&ucli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` instead of stdin"},
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` instead of stdout"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no text report on stderr when streaming (--json still writes the JSON one)"},
		},
		HideHelpCommand: true,
		Action:          action,
	}
}

func action(c *ucli.Context) error {
	if c.NArg() != 0 {
		return cli.Usagef("unexpected argument %q: plan reads a stream, on stdin or with -i FILE (see plan --help)", c.Args().First())
	}
	s := plan.Settings{SeqLen: c.Int64("seq-len"), Batch: c.Int64("batch-size"), Rank: c.Int64("lora-rank"),
		Checkpointing: plan.Checkpointing(c.String("gradient-checkpointing")), Optimizer: plan.Optimizer(c.String("optimizer")),
		Recipe: plan.Recipe(c.String("recipe")), Strategy: plan.Strategy(c.String("strategy")), Attention: plan.Attention(c.String("attention")),
		Images: c.Int64("images"), ImageTokens: c.Int64("image-tokens")}
	if t := c.String("lora-targets"); t != "" && t != "all-linear" {
		s.Targets = strings.Split(t, ",")
	}
	if err := s.Validate(); err != nil {
		return cli.WithCode(cli.ExitUsage, fmt.Errorf("%w (see plan --help)", err))
	}
	if e := c.String("emit"); e != "" && e != "python" {
		return cli.Usagef("--emit %q: only python is known", e)
	}
	gs, err := inventory(c.Context, c.String("gpus"), c.String("max-memory"))
	if err != nil {
		return err
	}
	toStdout := c.Bool("report") || c.String("emit") != ""
	inPath, outPath := c.String("input"), c.String("output")
	if (inPath == "" || inPath == "-") && cli.IsTerminal(c.App.Reader) {
		return cli.Usagef("no input: pipe a stream in (detect MODEL | plan) or give -i FILE")
	}
	var out *cli.Output
	dst := io.Writer(io.Discard)
	switch {
	case outPath != "" && outPath != "-":
		if out, err = cli.CreateOutput(c, outPath); err != nil {
			return err
		}
		defer out.Abort()
		dst = out
	case !toStdout && cli.IsTerminal(c.App.Writer):
		return cli.Usagef("stdout is a terminal; pipe the stream on, give -o FILE, or use --report")
	case !toStdout:
		dst = &outputWriter{w: c.App.Writer}
	}
	in, err := cli.OpenInput(c, inPath)
	if err != nil {
		return err
	}
	defer in.Close()
	stage := tensorstream.Stage{Name: "plan", Version: cli.Version, Args: cli.StageArgs(c)}
	p, err := plan.Stream(in, dst, gs, s, stage)
	if ow, ok := dst.(*outputWriter); ok && ow.err != nil {
		return cli.WithCode(cli.ExitOutput, fmt.Errorf("writing the output: %w", err))
	}
	if err != nil {
		return err
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return err
		}
	}
	reported := true
	report := c.App.ErrWriter
	if toStdout {
		report = c.App.Writer
	}
	switch {
	case c.String("emit") == "python":
		err = p.WritePython(c.App.Writer, c.String("model-path"))
	case c.Bool("json"):
		err = p.WriteJSON(report)
	case c.Bool("report") || !c.Bool("quiet"):
		err = p.WriteReport(report)
	default:
		reported = false
	}
	if err != nil {
		return cli.WithCode(cli.ExitOutput, fmt.Errorf("writing the report: %w", err))
	}
	if p.Fits {
		return nil
	}
	switch {
	case !reported:
		return cli.WithCode(cli.ExitNoFit, errors.New("does not fit the GPUs (drop -q for the report and its advice)"))
	case toStdout:
		return cli.WithCode(cli.ExitNoFit, errors.New("does not fit the GPUs; see the advice"))
	}
	return cli.Silent(cli.ExitNoFit) // the report on stderr says so, with the advice
}

// outputWriter keeps the first error of writing stdout, so that the failure
// plan.Stream then returns is reported as the output's (status 4), not taken
// for a fault of the input.
type outputWriter struct {
	w   io.Writer
	err error
}

func (o *outputWriter) Write(b []byte) (int, error) {
	n, err := o.w.Write(b)
	if err != nil && o.err == nil {
		o.err = err
	}
	return n, err
}

// inventory lists the GPUs: given ones, else the driver's, else nvidia-smi's.
func inventory(ctx context.Context, spec, maxMem string) ([]gpus.GPU, error) {
	var gs []gpus.GPU
	var err error
	switch {
	case spec != "":
		gs, err = gpus.Parse(spec)
		if err != nil {
			err = fmt.Errorf("--gpus: %w", err)
		}
	default:
		ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		if gs, err = gpus.Local(ctx); err != nil {
			err = fmt.Errorf("%w; give the GPUs with --gpus, e.g. --gpus 24GiB or --gpus t4", err)
		}
	}
	if err != nil {
		return nil, err
	}
	if maxMem != "" {
		if err := gpus.ApplyMaxMemory(gs, maxMem); err != nil {
			return nil, fmt.Errorf("--max-memory: %w", err)
		}
	}
	return gs, nil
}
