package detect_test

import (
	"bytes"
	"fmt"
	"log"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Open a model directory, read what detect found, and write it as a stream,
// each tensor annotated with its role and whether to quantize it.
func ExampleOpen() {
	m, err := detect.Open(filepath.Join("..", "..", "testdata", "models", "llama"), arch.Policy{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	f := m.Facts
	fmt.Printf("%s: %d layers, %d tensors, %d quantized\n", f.Family, f.Layers, f.Tensors, f.QuantizedTensors)

	var stream bytes.Buffer
	if err := m.Stream(&stream, tensorstream.Stage{Name: "detect", Version: "example"}); err != nil {
		log.Fatal(err)
	}
	r := tensorstream.NewReader(&stream)
	t, err := r.Next()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Name, t.DType, t.Shape, t.AnnString(tensorstream.AnnRole), t.AnnBool(tensorstream.AnnQuantize))
	// Output:
	// llama: 2 layers, 21 tensors, 14 quantized
	// lm_head.weight BF16 [1024 128] lm_head false
}
