package arch_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
)

// From a config.json alone: the architecture, every tensor the checkpoint
// will hold, which of them transformers quantizes, and the parameter count.
func ExampleResolve() {
	data, err := os.ReadFile(filepath.Join("..", "..", "testdata", "configs", "meta-llama__Llama-3.1-8B.json"))
	if err != nil {
		log.Fatal(err)
	}
	cfg, err := arch.ParseConfig(data)
	if err != nil {
		log.Fatal(err)
	}
	m, err := arch.Resolve(cfg)
	if err != nil {
		log.Fatal(err)
	}
	f := arch.Summarize(m, arch.Annotate(m.Tensors(), arch.Policy{}))
	fmt.Printf("%s: %d layers, hidden %d, %d heads (%d KV)\n", f.Family, f.Layers, f.Hidden, f.Heads, f.KVHeads)
	fmt.Printf("%d tensors, %d quantized, %d parameters\n", f.Tensors, f.QuantizedTensors, f.Params.Total)
	// Output:
	// llama: 32 layers, hidden 4096, 32 heads (8 KV)
	// 291 tensors, 224 quantized, 8030261248 parameters
}
