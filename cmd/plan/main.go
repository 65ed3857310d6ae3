// Command plan decides how a model trains with QLoRA on given GPUs (compute
// dtype, attention, checkpointing, optimizer, device map), predicts the peak
// memory of every device, and writes the plan into the tensor stream.
package main

import (
	"os"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/plan"
)

func main() {
	os.Exit(plan.Main(os.Args, os.Stdin, os.Stdout, os.Stderr, cli.IsTerminal(os.Stdout)))
}
