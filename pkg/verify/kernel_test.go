package verify

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// TestTableMatchesDecoder pins the kernel's per-block value tables to
// quant.Decoder, the project's dequantization, bit for bit: every code, both
// types, three output dtypes, normal, tiny and subnormal absmax values.
func TestTableMatchesDecoder(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	absmax := []float32{0, 1, 0.02, 1e-38, 1e-40, 3.4e38, 65504, 70000}
	for range 200 {
		absmax = append(absmax, float32(math.Ldexp(r.Float64(), r.IntN(60)-40)))
	}
	packed := make([]byte, 16) // one 32-element block: codes 0..15, then zeros
	for i := range 8 {
		packed[i] = byte(2*i)<<4 | byte(2*i+1)
	}
	for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
		cb := codebookFor(string(qt))
		for _, dt := range []quant.DType{quant.BF16, quant.F16, quant.F32} {
			round := rounder(tensorstream.DType(dt))
			for _, a := range absmax {
				d, err := quant.NewDecoder(quant.Params{Type: qt, BlockSize: 32}, 32, []float32{a}, dt)
				if err != nil {
					t.Fatal(err)
				}
				out, err := d.Decode(nil, packed)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]float32, 32)
				widen(got, out, tensorstream.DType(dt))
				for c := range 16 {
					want := round(mulFTZ(cb.deq[c], a))
					if math.Float32bits(got[c]) != math.Float32bits(want) {
						t.Fatalf("%s %s absmax %g code %d: decoder %g (%08x), kernel table %g (%08x)",
							qt, dt, a, c, got[c], math.Float32bits(got[c]), want, math.Float32bits(want))
					}
				}
			}
		}
	}
}

// TestRoundF16 checks the half rounding on every half value and the midpoints
// between neighbours (ties to even).
func TestRoundF16(t *testing.T) {
	for h := range 0x7c00 { // positive finite halves
		v := halfToF32(uint16(h))
		if got := roundF16(v); got != v {
			t.Fatalf("half %#04x = %g rounds to %g", h, v, got)
		}
		if h+1 < 0x7c00 {
			next := halfToF32(uint16(h + 1))
			mid := float32((float64(v) + float64(next)) / 2)
			want := v
			if h&1 == 1 {
				want = next
			}
			if got := roundF16(mid); got != want {
				t.Fatalf("midpoint %g of %#04x rounds to %g, want %g", mid, h, got, want)
			}
		}
	}
	var b [2]byte
	binary.LittleEndian.PutUint16(b[:], 0x3c00)
	if halfToF32(0x3c00) != 1 || roundF16(65520) != float32(math.Inf(1)) {
		t.Fatal("half 1.0 or overflow")
	}
}

// TestGaussianEnvelopeMonteCarlo checks the closed-form Gaussian error against
// pkg/quant quantizing normal samples.
func TestGaussianEnvelopeMonteCarlo(t *testing.T) {
	n := 1 << 20
	if testing.Short() {
		n = 1 << 18
	}
	x := gaussian(n, 1, 3)
	for _, p := range []quant.Params{{Type: quant.NF4, BlockSize: 64}, {Type: quant.FP4, BlockSize: 64}, {Type: quant.NF4, BlockSize: 256, DoubleQuant: true}} {
		ref := make([]byte, 4*n)
		for i, v := range x {
			binary.LittleEndian.PutUint32(ref[4*i:], math.Float32bits(v))
		}
		q, err := quant.Quantize(ref, quant.F32, p, quant.CPU(1))
		if err != nil {
			t.Fatal(err)
		}
		deq, err := q.Dequantize(quant.F32)
		if err != nil {
			t.Fatal(err)
		}
		var sse, xx float64
		for i, v := range x {
			d := float64(math.Float32frombits(binary.LittleEndian.Uint32(deq[4*i:]))) - float64(v)
			sse += d * d
			xx += float64(v) * float64(v)
		}
		got := math.Sqrt(sse / xx)
		want := GaussianRelError(p.Type.Map(), p.BlockSize)
		if math.Abs(got/want-1) > 0.01 {
			t.Errorf("%+v: Monte Carlo relative error %.5f, closed form %.5f", p, got, want)
		}
	}
	if e := EnvelopeFor("nf4", 64, 0); e.Gaussian < 0.091 || e.Gaussian > 0.093 || math.Abs(e.MinSQNR-18.44) > 0.1 {
		t.Errorf("nf4/64 envelope %+v", e)
	}
}
