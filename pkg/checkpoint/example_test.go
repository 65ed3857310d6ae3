package checkpoint_test

import (
	"fmt"
	"log"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Open a 4-bit checkpoint that transformers wrote: its quantization_config,
// and each 4-bit weight back as one stream tensor with its quant state.
func ExampleOpen() {
	ck, err := checkpoint.Open(filepath.Join("..", "..", "testdata", "models", "llama-bnb-nf4"))
	if err != nil {
		log.Fatal(err)
	}
	defer ck.Close()
	qc := ck.QuantConfig
	fmt.Printf("%s, double quant %v, compute %s\n", qc.QuantType, qc.DoubleQuant, qc.ComputeDType)
	var quantized int
	for _, t := range ck.Tensors {
		if t.Encoding == tensorstream.BNB4 {
			quantized++
		}
	}
	fmt.Printf("%d tensors, %d of them 4-bit\n", len(ck.Tensors), quantized)
	for _, t := range ck.Tensors {
		if t.Name == "model.layers.0.self_attn.q_proj.weight" {
			q := t.Quant
			packed, absmax, nested := q.Sections(t.NumElements())
			fmt.Printf("%s %v %s: %s, blocksize %d\n", t.Name, t.Shape, t.DType, q.Type, q.BlockSize)
			fmt.Printf("payload %d bytes: packed %d, absmax %d, nested %d\n", t.Size, packed, absmax, nested)
		}
	}
	// Output:
	// nf4, double quant true, compute bfloat16
	// 21 tensors, 14 of them 4-bit
	// model.layers.0.self_attn.q_proj.weight [128 128] BF16: nf4, blocksize 64
	// payload 8452 bytes: packed 8192, absmax 256, nested 4
}
