package safetensors_test

import (
	"bytes"
	"fmt"
	"log"

	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

// Serialize writes a safetensors image with the bytes the Python library
// writes (its tensor order, the header padded to 8 bytes); ReadHeader reads
// it back, checking every offset against the image's size.
func ExampleReadHeader() {
	img, err := safetensors.Serialize([]safetensors.Tensor{
		{Name: "weight", DType: safetensors.BF16, Shape: []int64{2, 2}, Data: make([]byte, 8)},
		{Name: "bias", DType: safetensors.F32, Shape: []int64{2}, Data: make([]byte, 8)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		log.Fatal(err)
	}
	h, err := safetensors.ReadHeader(bytes.NewReader(img), int64(len(img)))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("metadata:", h.Metadata)
	for _, t := range h.Tensors {
		fmt.Printf("%s %s %v at %d..%d\n", t.Name, t.DType, t.Shape, t.Begin, t.End)
	}
	// Output:
	// metadata: map[format:pt]
	// bias F32 [2] at 0..8
	// weight BF16 [2 2] at 8..16
}
