package verify_test

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
	"github.com/nf4pipe/nf4pipe/pkg/verify"
)

// The pipeline detect | quantize | place --out DIR | verify --reference SRC
// as library calls, on the tiny llama in the repository's testdata. Each
// stage reads the stream the previous one wrote; here they meet in memory
// instead of in pipes.
func Example_pipeline() {
	src := filepath.Join("..", "..", "testdata", "models", "llama")
	out, err := os.MkdirTemp("", "llama-nf4-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(out)
	dir := filepath.Join(out, "llama-nf4")

	m, err := detect.Open(src, arch.Policy{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	var detected, quantized bytes.Buffer
	if err := m.Stream(&detected, tensorstream.Stage{Name: "detect", Version: "example"}); err != nil {
		log.Fatal(err)
	}

	opt := quantize.DefaultOptions()
	opt.Device = "cpu"
	sum, err := quantize.Run(&detected, &quantized, opt)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("quantize: %d tensors to NF4, %d kept\n", sum.Quantized, sum.Kept)

	placed, err := place.Place(context.Background(), &quantized, place.Options{Out: dir})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("place: %d shard, %d state-dict entries\n", placed.Shards, placed.Entries)

	rep, err := verify.Run(verify.Options{Checkpoint: dir, Reference: src})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("verify: ok %v, %.2f bits per weight\n", rep.Err() == nil, rep.Totals.BitsPerWeight)

	got, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		log.Fatal(err)
	}
	want, err := os.ReadFile(filepath.Join(src+"-bnb-nf4", "model.safetensors"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("byte-identical to what transformers + bitsandbytes saved:", bytes.Equal(got, want))
	// Output:
	// quantize: 14 tensors to NF4, 7 kept
	// place: 1 shard, 91 state-dict entries
	// verify: ok true, 4.13 bits per weight
	// byte-identical to what transformers + bitsandbytes saved: true
}
