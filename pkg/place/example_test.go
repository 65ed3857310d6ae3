package place_test

import (
	"bytes"
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/place"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// detect | quantize | place as library calls: the checkpoint written is the
// one transformers and bitsandbytes wrote for the same model, byte for byte.
func ExamplePlace() {
	models := filepath.Join("..", "..", "testdata", "models")
	m, err := detect.Open(filepath.Join(models, "llama"), arch.Policy{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	var detected, quantized bytes.Buffer
	if err := m.Stream(&detected, tensorstream.Stage{Name: "detect", Version: "example"}); err != nil {
		log.Fatal(err)
	}
	o := quantize.DefaultOptions()
	o.Device = "cpu"
	if _, err := quantize.Run(&detected, &quantized, o); err != nil {
		log.Fatal(err)
	}
	tmp, err := os.MkdirTemp("", "place-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, "llama-nf4")
	rep, err := place.Place(context.Background(), &quantized, place.Options{Out: out})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d tensors (%d 4-bit) as %d state-dict entries in %d shard\n", rep.Tensors, rep.Quantized, rep.Entries, rep.Shards)
	for _, name := range []string{"model.safetensors", "config.json"} {
		got, err1 := os.ReadFile(filepath.Join(out, name))
		want, err2 := os.ReadFile(filepath.Join(models, "llama-bnb-nf4", name))
		if err1 != nil || err2 != nil {
			log.Fatal(err1, err2)
		}
		fmt.Printf("%s identical to transformers': %v\n", name, bytes.Equal(got, want))
	}
	// Output:
	// 21 tensors (14 4-bit) as 91 state-dict entries in 1 shard
	// model.safetensors identical to transformers': true
	// config.json identical to transformers': true
}
