package quantize_test

import (
	"bytes"
	"fmt"
	"io"
	"log"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Quantize detect's stream of a model on the CPU: NF4 with double
// quantization, blocksize 64, as transformers' BitsAndBytesConfig defaults to.
func ExampleRun() {
	m, err := detect.Open(filepath.Join("..", "..", "testdata", "models", "llama"), arch.Policy{})
	if err != nil {
		log.Fatal(err)
	}
	defer m.Close()
	var in bytes.Buffer
	if err := m.Stream(&in, tensorstream.Stage{Name: "detect", Version: "example"}); err != nil {
		log.Fatal(err)
	}
	o := quantize.DefaultOptions()
	o.Device = "cpu"
	sum, err := quantize.Run(&in, io.Discard, o)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d quantized, %d kept, %.3f bits per weight\n", sum.Quantized, sum.Kept, sum.BitsPerWeight())
	// Output:
	// 14 quantized, 7 kept, 4.127 bits per weight
}
