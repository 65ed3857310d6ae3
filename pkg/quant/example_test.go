package quant_test

import (
	"encoding/binary"
	"fmt"
	"log"
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// Quantize a block of 64 float32 values to NF4, as bitsandbytes'
// quantize_4bit does, and decode it back.
func ExampleQuantize() {
	src := make([]byte, 64*4)
	for i := range 64 {
		v := float32(i-32) / 16 // -2 .. 1.9375
		binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
	}
	p := quant.Params{Type: quant.NF4, BlockSize: 64}
	q, err := quant.Quantize(src, quant.F32, p, quant.CPU(1))
	if err != nil {
		log.Fatal(err)
	}
	absmax := math.Float32frombits(binary.LittleEndian.Uint32(q.Absmax))
	fmt.Printf("%d values -> %d packed bytes, absmax %v\n", q.N, len(q.Packed), absmax)
	fmt.Printf("codes of -2, -1.9375: %02x; of 0, 0.0625: %02x; of 1.875, 1.9375: %02x\n", q.Packed[0], q.Packed[16], q.Packed[31])

	d, err := quant.NewDecoder(p, q.N, []float32{absmax}, quant.F32)
	if err != nil {
		log.Fatal(err)
	}
	out, err := d.Decode(nil, q.Packed)
	if err != nil {
		log.Fatal(err)
	}
	first := math.Float32frombits(binary.LittleEndian.Uint32(out))
	last := math.Float32frombits(binary.LittleEndian.Uint32(out[len(out)-4:]))
	fmt.Printf("decoded: first %v, last %.4f\n", first, last)
	// Output:
	// 64 values -> 32 packed bytes, absmax 2
	// codes of -2, -1.9375: 00; of 0, 0.0625: 77; of 1.875, 1.9375: ff
	// decoded: first -2, last 2.0000
}
