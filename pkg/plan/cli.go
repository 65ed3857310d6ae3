package plan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"

	nf4cli "github.com/nf4pipe/nf4pipe/internal/cli"
)

// Exit statuses: the ones every nf4pipe tool shares (internal/cli).
const (
	ExitOK    = nf4cli.ExitOK
	ExitUsage = nf4cli.ExitUsage // bad flags or arguments
	ExitInput = nf4cli.ExitInput // a bad stream or model description
	ExitNoFit = nf4cli.ExitNoFit // the plan was made, and it does not fit
)

func init() {
	nf4cli.RegisterInputErrors(ErrModel)
	nf4cli.RegisterUsageErrors(ErrSettings)
}

// Main runs the plan command line with args (args[0] is the program name)
// and returns the exit status.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer, stdoutIsTerminal bool) int {
	app := &cli.App{
		Name:      "plan",
		Usage:     "decide how a model trains with QLoRA on given GPUs and predict whether it fits",
		UsageText: "detect MODEL | plan [flags] | quantize | ...",
		Version:   nf4cli.Version,
		Description: "Reads a tensor stream (a config-only one will do), writes it on with the plan in\n" +
			"its header and a device on every tensor, and reports per device the predicted\n" +
			"peak memory, item by item, with the decisions and their reasons (stderr).\n" +
			"Exit status: 0 it fits, 2 bad flags, 3 an invalid stream or model description, 4 the\n" +
			"output could not be written, 5 it does not fit (the plan is still written, with advice).\n\n" +
			"Examples:\n" +
			"   detect config.json | plan --gpus t4 --report        # does it fit on a T4 at 2048 tokens?\n" +
			"   detect MODEL | plan --gpus rtx4090x2 --json\n" +
			"   detect MODEL | plan --gpus 24GiB,24GiB --max-memory 0:20GiB --emit python\n" +
			"   plan --gpus t4 -q -i model.stream -o planned.stream\n" +
			"   detect MODEL | plan --gpus a100-80 | quantize | place --out MODEL-nf4\n\n" +
			"GPU presets: " + strings.Join(gpus.PresetNames(), ", "),
		Reader:    stdin,
		Writer:    stdout,
		ErrWriter: stderr,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "gpus", Usage: "GPUs as `LIST` of sizes or presets, each optionally xN: 24GiB,24GiB | rtx4090x2 | t4 (default: the driver or nvidia-smi)"},
			&cli.StringFlag{Name: "max-memory", Usage: "per-device caps, `IDX:SIZE,...` e.g. 0:20GiB,1:24GiB"},
			&cli.Int64Flag{Name: "seq-len", Value: 2048, Usage: "training sequence length"},
			&cli.Int64Flag{Name: "batch-size", Value: 1, Usage: "per-device batch size"},
			&cli.Int64Flag{Name: "lora-rank", Value: 16, Usage: "LoRA rank"},
			&cli.StringFlag{Name: "lora-targets", Value: "all-linear", Usage: "LoRA target modules, e.g. q_proj,v_proj"},
			&cli.StringFlag{Name: "gradient-checkpointing", Value: "auto", Usage: "auto | on | off | offload"},
			&cli.StringFlag{Name: "optimizer", Value: string(PagedAdamW8bit), Usage: "adamw | adamw_8bit | paged_adamw_8bit"},
			&cli.StringFlag{Name: "recipe", Value: string(RecipeHFPeft), Usage: "hf-peft (float32 cast of non-quantized parameters) | lean"},
			&cli.StringFlag{Name: "strategy", Value: string(Sequential), Usage: "sequential | balanced"},
			&cli.StringFlag{Name: "attention", Value: string(AttnAuto), Usage: "auto | flash_attention_2 | sdpa | eager"},
			&cli.BoolFlag{Name: "report", Usage: "print the report on stdout and write no stream"},
			&cli.BoolFlag{Name: "json", Usage: "print the plan as JSON on stdout and write no stream"},
			&cli.StringFlag{Name: "emit", Usage: "print a ready-to-run snippet (`LANG`: python) on stdout and write no stream"},
			&cli.StringFlag{Name: "model-path", Usage: "model path to put in the --emit snippet"},
			&cli.StringFlag{Name: "input", Aliases: []string{"i"}, Usage: "read the stream from `FILE` instead of stdin"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "write the stream to `FILE` instead of stdout"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no report on stderr when streaming"},
		},
		HideHelpCommand: true,
		Action: func(c *cli.Context) error {
			return action(c, args, stdoutIsTerminal)
		},
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return nf4cli.Usagef("%v (see plan --help)", err)
		},
	}
	return nf4cli.Run(app, args)
}

func action(c *cli.Context, args []string, stdoutIsTerminal bool) error {
	if c.NArg() != 0 {
		return nf4cli.Usagef("plan takes no arguments, it reads a stream (see plan --help)")
	}
	s := Settings{SeqLen: c.Int64("seq-len"), Batch: c.Int64("batch-size"), Rank: c.Int64("lora-rank"),
		Checkpointing: Checkpointing(c.String("gradient-checkpointing")), Optimizer: Optimizer(c.String("optimizer")),
		Recipe: Recipe(c.String("recipe")), Strategy: Strategy(c.String("strategy")), Attention: Attention(c.String("attention"))}
	if t := c.String("lora-targets"); t != "" && t != "all-linear" {
		s.Targets = strings.Split(t, ",")
	}
	if err := s.Validate(); err != nil {
		return nf4cli.WithCode(nf4cli.ExitUsage, fmt.Errorf("%w (see plan --help)", err))
	}
	if e := c.String("emit"); e != "" && e != "python" {
		return nf4cli.Usagef("--emit %q: only python is known", e)
	}
	gs, err := inventory(c.Context, c.String("gpus"), c.String("max-memory"))
	if err != nil {
		return err
	}
	toStdout := c.Bool("report") || c.Bool("json") || c.String("emit") != ""
	inPath, outPath := c.String("input"), c.String("output")
	if (inPath == "" || inPath == "-") && nf4cli.IsTerminal(c.App.Reader) {
		return nf4cli.Usagef("no input: pipe a stream in (detect MODEL | plan) or give -i FILE")
	}
	var out *nf4cli.Output
	dst := io.Writer(io.Discard)
	switch {
	case outPath != "" && outPath != "-":
		if out, err = nf4cli.CreateOutput(c, outPath); err != nil {
			return err
		}
		defer out.Abort()
		dst = out
	case !toStdout && stdoutIsTerminal:
		return nf4cli.Usagef("stdout is a terminal; pipe the stream on, give -o FILE, or use --report/--json")
	case !toStdout:
		dst = c.App.Writer
	}
	in, err := nf4cli.OpenInput(c, inPath)
	if err != nil {
		return err
	}
	defer in.Close()
	stage := tensorstream.Stage{Name: "plan", Version: Version, Args: args[1:]}
	p, err := Stream(in, dst, gs, s, stage)
	if err != nil {
		return err
	}
	if out != nil {
		if err := out.Commit(); err != nil {
			return err
		}
	}
	reported := true
	switch {
	case c.Bool("json"):
		err = p.WriteJSON(c.App.Writer)
	case c.String("emit") == "python":
		err = p.WritePython(c.App.Writer, c.String("model-path"))
	case c.Bool("report"):
		err = p.WriteReport(c.App.Writer)
	case !c.Bool("quiet"):
		err = p.WriteReport(c.App.ErrWriter)
	default:
		reported = false
	}
	if err != nil {
		return err
	}
	if p.Fits {
		return nil
	}
	switch {
	case !reported:
		return nf4cli.WithCode(ExitNoFit, errors.New("does not fit the GPUs (drop -q for the report and its advice)"))
	case toStdout:
		return nf4cli.WithCode(ExitNoFit, errors.New("does not fit the GPUs; see the advice"))
	}
	return nf4cli.Status(ExitNoFit) // the report on stderr says so, with the advice
}

// inventory lists the GPUs: given ones, else the driver's, else nvidia-smi's.
func inventory(ctx context.Context, spec, maxMem string) ([]gpus.GPU, error) {
	var gs []gpus.GPU
	var err error
	switch {
	case spec != "":
		gs, err = gpus.Parse(spec)
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
			return nil, err
		}
	}
	return gs, nil
}
