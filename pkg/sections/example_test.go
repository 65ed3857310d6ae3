package sections_test

import (
	"fmt"
	"log"

	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// A stage writes its section into the stream header with its Set function;
// a later stage reads it back typed, with an error for a malformed one and
// nil for a missing one.
func ExampleGetQuantize() {
	h := &tensorstream.Header{}
	err := sections.SetQuantize(h, &sections.Quantize{Type: "nf4", BlockSize: 64, DoubleQuant: true, Device: "cpu"})
	if err != nil {
		log.Fatal(err)
	}
	q, err := sections.GetQuantize(h)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(q.Type, q.BlockSize, q.DoubleQuant, q.Device)
	src, err := sections.GetSource(h)
	fmt.Println(src == nil, err)
	// Output:
	// nf4 64 true cpu
	// true <nil>
}
