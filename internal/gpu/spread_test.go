package gpu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// named is a CPU backend under another name that counts its runs.
type named struct {
	quant.Backend
	runs int
}

func (n *named) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	n.runs++
	return n.Backend.QuantizeBlocks(packed, absmax, src, dt, p, first)
}

func TestSpreadMatchesOneBackend(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	n := 3*minSpreadBlocks*64 + 37
	src := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(math.Float32bits(float32(r.NormFloat64()))>>16))
	}
	p := quant.DefaultParams()
	want, err := quant.Quantize(src, quant.BF16, p, quant.CPU(1))
	if err != nil {
		t.Fatal(err)
	}
	a, b := &named{Backend: quant.CPU(1)}, &named{Backend: quant.CPU(1)}
	got, err := quant.Quantize(src, quant.BF16, p, Spread(a, b))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Packed, want.Packed) || !bytes.Equal(got.Absmax, want.Absmax) ||
		!bytes.Equal(got.Nested, want.Nested) || got.NestedOffset != want.NestedOffset {
		t.Fatal("spread result differs from one backend's")
	}
	if a.runs == 0 || b.runs == 0 {
		t.Fatalf("runs %d and %d: one backend did nothing", a.runs, b.runs)
	}
}

func TestSpreadNamesFirstNonFinite(t *testing.T) {
	n := 4 * minSpreadBlocks * 64
	src := make([]byte, 4*n)
	for _, i := range []int{n - 5, n/2 + 3} {
		binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(float32(math.Inf(1))))
	}
	_, err := quant.Quantize(src, quant.F32, quant.DefaultParams(), Spread(quant.CPU(1), quant.CPU(1)))
	var nf *quant.NonFiniteError
	if !errors.As(err, &nf) || nf.Index != int64(n/2+3) {
		t.Fatalf("got %v, want the non-finite value at %d", err, n/2+3)
	}
}
