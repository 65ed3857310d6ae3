package plan_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/plan"
)

// Does Llama 3.1 8B train with QLoRA on one T4, and on an RTX 4090? From its
// config.json alone, with the default settings (sequence 2048, batch 1, LoRA
// rank 16 on every linear layer, paged 8-bit AdamW).
func ExampleMake() {
	cfg, err := os.ReadFile(filepath.Join("..", "..", "testdata", "configs", "meta-llama__Llama-3.1-8B.json"))
	if err != nil {
		log.Fatal(err)
	}
	m, err := plan.FromConfig(cfg)
	if err != nil {
		log.Fatal(err)
	}
	for _, spec := range []string{"t4", "rtx4090"} {
		gs, err := gpus.Parse(spec)
		if err != nil {
			log.Fatal(err)
		}
		p, err := plan.Make(m, gs, plan.DefaultSettings())
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: fits %v, compute %s, attention %s\n", gs[0].Name, p.Fits, p.ComputeDType.Value, p.Attention.Value)
	}
	// Output:
	// Tesla T4 16GB: fits true, compute fp16, attention sdpa
	// GeForce RTX 4090 24GB: fits true, compute bf16, attention flash_attention_2
}
