package qtype_test

import (
	"fmt"
	"log"

	"github.com/nf4pipe/nf4pipe/pkg/qtype"
)

// The registry's facts about NF4, and the byte sizes of a 4096×4096 weight
// quantized with double quantization at the default block sizes.
func ExampleLookup() {
	t, err := qtype.Lookup("nf4")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(t.Name, t.Map[0], t.Map[7], t.Map[15])
	s := qtype.SizesFor(4096*4096, qtype.DefaultBlockSize, qtype.NestedBlockSize)
	fmt.Printf("packed %d, absmax %d, nested %d: %.3f bits a weight\n", s.Packed, s.Absmax, s.Nested, float64(8*s.Total())/float64(s.Elements))
	_, err = qtype.Lookup("int4")
	fmt.Println(err)
	// Output:
	// nf4 -1 0 1
	// packed 8388608, absmax 262144, nested 4096: 4.127 bits a weight
	// qtype: unknown quant type "int4" (want nf4 or fp4)
}
