package synth

import (
	"fmt"
	"os"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	ucli "github.com/urfave/cli/v2"
)

// App returns the synth command line.
func App() *ucli.App {
	return &ucli.App{
		Name:    "synth",
		Usage:   "synthetic checkpoints and streams for nf4pipe's benchmarks",
		Version: cli.Version,
		Commands: []*ucli.Command{
			modelCommand(), streamCommand(), rssCommand(),
		},
	}
}

func modelCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "model",
		Usage:     "write a sharded BF16 checkpoint with normally distributed weights",
		ArgsUsage: "DIR",
		Description: "Writes the safetensors shards, model.safetensors.index.json, config.json and\n" +
			"generation_config.json of a llama-layout model into DIR.\n\n" +
			"Example:\n   synth model --preset tinyllama-1.1b out/synth/tinyllama-1.1b\n" +
			"   synth model --preset tiny --layers 4 /tmp/m\n" +
			"   synth model --config ../shared/testdata/configs/Qwen__Qwen3-8B.json /tmp/qwen3",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "preset", Value: "tinyllama-1.1b", Usage: "dimensions: " + fmt.Sprint(PresetNames())},
			&ucli.StringFlag{Name: "config", Usage: "derive the tensors from this config.json (any family pkg/arch knows) instead of a preset"},
			&ucli.Int64Flag{Name: "hidden", Usage: "override hidden_size"},
			&ucli.Int64Flag{Name: "intermediate", Usage: "override intermediate_size"},
			&ucli.Int64Flag{Name: "layers", Usage: "override num_hidden_layers"},
			&ucli.Int64Flag{Name: "heads", Usage: "override num_attention_heads"},
			&ucli.Int64Flag{Name: "kv-heads", Usage: "override num_key_value_heads"},
			&ucli.Int64Flag{Name: "vocab", Usage: "override vocab_size"},
			&ucli.Uint64Flag{Name: "seed", Value: 1, Usage: "PRNG seed"},
			&ucli.Float64Flag{Name: "std", Value: 0.02, Usage: "standard deviation of the weights"},
			&ucli.StringFlag{Name: "max-shard-size", Value: "2GB", Usage: "shard size limit, as save_pretrained's max_shard_size"},
			&ucli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress lines"},
		},
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 {
				return cli.Usagef("model: want one DIR argument")
			}
			var config []byte
			if path := c.String("config"); path != "" {
				b, err := os.ReadFile(path)
				if err != nil {
					return cli.WithCode(cli.ExitInput, err)
				}
				config = b
			} else {
				d, err := PresetDims(c.String("preset"))
				if err != nil {
					return cli.WithCode(cli.ExitUsage, err)
				}
				for name, p := range map[string]*int64{"hidden": &d.Hidden, "intermediate": &d.Intermediate,
					"layers": &d.Layers, "heads": &d.Heads, "kv-heads": &d.KVHeads, "vocab": &d.Vocab} {
					if c.IsSet(name) {
						*p = c.Int64(name)
					}
				}
				if config, err = d.ConfigJSON(); err != nil {
					return cli.WithCode(cli.ExitUsage, err)
				}
			}
			shard, err := safetensors.ParseSize(c.String("max-shard-size"))
			if err != nil {
				return cli.WithCode(cli.ExitUsage, err)
			}
			opt := Options{Config: config, Seed: c.Uint64("seed"), Std: c.Float64("std"), MaxShardSize: shard}
			start, last := time.Now(), time.Now()
			if !c.Bool("quiet") {
				opt.Progress = func(done, total int64) {
					if time.Since(last) > 5*time.Second || done == total {
						last = time.Now()
						fmt.Fprintf(c.App.ErrWriter, "synth: %.2f / %.2f GB\n", float64(done)/1e9, float64(total)/1e9)
					}
				}
			}
			res, err := WriteModel(c.Args().First(), opt)
			if err != nil {
				return err
			}
			el := time.Since(start)
			fmt.Fprintf(c.App.ErrWriter, "synth: %s: %d tensors, %d parameters, %.2f GB in %d file(s), %.1f s (%.2f GB/s)\n",
				res.Dir, res.Tensors, res.Params, float64(res.Bytes)/1e9, len(res.Files), el.Seconds(),
				float64(res.Bytes)/1e9/el.Seconds())
			return nil
		},
	}
}

func streamCommand() *ucli.Command {
	return &ucli.Command{
		Name:  "stream",
		Usage: "write a tensor stream of BF16 matrices to stdout (no disk)",
		Description: "Each tensor is annotated as a quantizable linear weight, so quantize can read it.\n\n" +
			"Example:\n   synth stream --gib 4 | passthru | passthru > /dev/null\n" +
			"   synth stream --gib 1 | bin/quantize > /dev/null",
		Flags: []ucli.Flag{
			&ucli.Float64Flag{Name: "gib", Value: 1, Usage: "payload GiB in all"},
			&ucli.Int64Flag{Name: "tensor-mib", Value: 64, Usage: "MiB per tensor"},
			&ucli.Int64Flag{Name: "cols", Value: 4096, Usage: "elements per row"},
			&ucli.Uint64Flag{Name: "seed", Value: 1, Usage: "PRNG seed"},
			&ucli.IntFlag{Name: "chunk", Usage: "stream chunk size in bytes (default: the writer's)"},
		},
		Action: func(c *ucli.Context) error {
			opt := StreamOptions{Bytes: int64(c.Float64("gib") * (1 << 30)), TensorBytes: c.Int64("tensor-mib") << 20,
				Cols: c.Int64("cols"), Seed: c.Uint64("seed"), ChunkSize: c.Int("chunk")}
			w := c.App.Writer
			if w == nil {
				w = os.Stdout
			}
			_, err := WriteStream(w, opt)
			if err != nil {
				return cli.WithCode(cli.ExitOutput, err)
			}
			return nil
		},
	}
}

func rssCommand() *ucli.Command {
	return &ucli.Command{
		Name:      "rss",
		Usage:     "run a command and report its peak RSS and times (like GNU time -v)",
		ArgsUsage: "-- COMMAND [ARG...]",
		Description: "The command inherits stdin, stdout and stderr, so it can stand in a pipe.\n" +
			"The line \"LABEL peak_rss_mib=... wall_s=... user_s=... sys_s=... exit=...\" is\n" +
			"appended to -o FILE (default: stderr); synth exits with the command's status.\n\n" +
			"Example:\n   synth rss -o rss.txt -l detect -- bin/detect M | synth rss -o rss.txt -l quantize -- bin/quantize >/dev/null",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "append the report line to this file"},
			&ucli.StringFlag{Name: "label", Aliases: []string{"l"}, Usage: "label of the line (default: the command)"},
		},
		Action: func(c *ucli.Context) error {
			argv := c.Args().Slice()
			if len(argv) == 0 {
				return cli.Usagef("rss: no command")
			}
			u, err := Measure(argv)
			if err != nil {
				return err
			}
			label := c.String("label")
			if label == "" {
				label = argv[0]
			}
			line := fmt.Sprintf("%s %s\n", label, u)
			if path := c.String("output"); path != "" {
				f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
				if err != nil {
					return cli.WithCode(cli.ExitOutput, err)
				}
				_, err = f.WriteString(line) // one write: concurrent stages append whole lines
				if cerr := f.Close(); err == nil {
					err = cerr
				}
				if err != nil {
					return cli.WithCode(cli.ExitOutput, err)
				}
			} else {
				fmt.Fprint(c.App.ErrWriter, line)
			}
			if u.ExitCode != 0 {
				return cli.WithCode(u.ExitCode, fmt.Errorf("%s exited with status %d", argv[0], u.ExitCode))
			}
			return nil
		},
	}
}
