package verify

import (
	"encoding/binary"
	"fmt"
	"github.com/stretchr/testify/require"
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
				require.NoError(t, err)
				out, err := d.Decode(nil, packed)
				require.NoError(t, err)
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
		require.NoError(t, err)
		deq, err := q.Dequantize(quant.F32)
		require.NoError(t, err)
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

// TestFastMatchesPlain compares chunks with the vector kernel (where the CPU
// has it) and with the Go kernel alone: every per-block field, every block
// maximum, the stray count and its first index must be bit-identical. The
// chunks hold strays (flipped codes), all-zero blocks, NaN and infinite
// references, subnormals, values near the BF16 maximum, FP4's -0, short
// groups and a short odd last block.
func TestFastMatchesPlain(t *testing.T) {
	if !useFast(tensorstream.BF16, tensorstream.BF16, 64) {
		t.Skip("no vector kernel on this CPU or build")
	}
	r := rand.New(rand.NewPCG(11, 3))
	var strays int64
	defer func() {
		if strays < 1000 {
			t.Errorf("only %d strays: the test does not exercise the rescan", strays)
		}
	}()
	for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
		for _, bs := range []int{32, 64, 128, 256, 4096} {
			for _, n := range []int{8 * bs, 13*bs + 7, 40*bs - 1, 3 * bs} {
				x := gaussian(n, 0.02, uint64(n+bs))
				ref := bf16(x)
				q, err := quant.Quantize(ref, quant.BF16, quant.Params{Type: qt, BlockSize: bs}, quant.CPU(1))
				require.NoError(t, err)
				amax := make([]float32, len(q.Absmax)/4)
				for i := range amax {
					amax[i] = math.Float32frombits(binary.LittleEndian.Uint32(q.Absmax[4*i:]))
				}
				packed := append([]byte(nil), q.Packed...)
				for range max(1, n/97) { // strays
					packed[r.IntN(len(packed))] ^= byte(1 + r.IntN(255))
				}
				put := func(i int, bits uint16) { binary.LittleEndian.PutUint16(ref[2*i:], bits) }
				nb := (n + bs - 1) / bs
				for b := range nb { // most blocks made special
					i0 := b * bs
					switch r.IntN(10) {
					case 0:
						for i := i0; i < min(i0+bs, n); i++ {
							put(i, uint16(r.IntN(2))<<15) // ±0
						}
					case 1:
						put(i0+r.IntN(min(bs, n-i0)), 0x7fc1) // NaN
					case 2:
						put(i0+r.IntN(min(bs, n-i0)), 0xff80) // -Inf
					case 3:
						put(i0+r.IntN(min(bs, n-i0)), 0x0003) // subnormal
						amax[b] = 1e-40
					case 4:
						put(i0, 0x7f7f) // BF16 maximum: q may round to infinity
						amax[b] = math.MaxFloat32
					case 5:
						amax[b] = -amax[b] // double quantization can make it negative
					case 8: // normal absmax, subnormal products value*absmax: flushed
						amax[b] = float32(1e-37 * (1 + r.Float64()))
					case 6, 7: // q = absmax for the ±1 codes: BF16 rounding ties and near ties
						low := []uint32{0x8000, 0x7fff, 0x8001, 0x18000}[r.IntN(4)]
						amax[b] = math.Float32frombits(math.Float32bits(amax[b])&^0x1ffff | low)
					}
				}
				strays += sameAsPlain(t, fmt.Sprintf("%s/bs%d/n%d", qt, bs, n), qt, bs, ref, packed, amax)
			}
		}
	}
}

// sameAsPlain compares the n = len(ref)/2 BF16 reference values with the
// packed codes and absmax through the vector kernel and through the Go
// kernel alone, and fails unless every per-block field, every block maximum,
// the stray count and its first index are bit-identical. It returns the
// stray count.
func sameAsPlain(t *testing.T, name string, qt quant.Type, bs int, ref, packed []byte, amax []float32) int64 {
	t.Helper()
	n := len(ref) / 2
	nb := (n + bs - 1) / bs
	k := &kernel{cb: codebookFor(string(qt)), bs: bs, round: roundBF16}
	var got, want chunkWork
	for _, w := range []*chunkWork{&got, &want} {
		w.e0, w.e1, w.nblocks = int64(n), int64(2*n), nb
		w.refBuf, w.packed, w.amax = ref, packed, amax
		w.bad, w.badAt = 0, -1
	}
	k.fast = true
	got.compare(k, tensorstream.BF16)
	k.fast = false
	want.compare(k, tensorstream.BF16)
	if got.bad != want.bad || got.badAt != want.badAt {
		t.Errorf("%s: strays %d at %d, plain %d at %d", name, got.bad, got.badAt, want.bad, want.badAt)
	}
	for b := range nb {
		if math.Float32bits(got.sums.refMax[b]) != math.Float32bits(want.sums.refMax[b]) {
			t.Fatalf("%s: block %d max %g, plain %g", name, b, got.sums.refMax[b], want.sums.refMax[b])
		}
		for f := range nFields {
			g, w := *got.sums.at(b, f), *want.sums.at(b, f)
			if f == fInside { // only the sign is a result; a zero block sets it either way
				g, w = g>>31, w>>31
			}
			if g != w && !(f < fMaxD && isNaN32(g) && isNaN32(w)) {
				t.Fatalf("%s: block %d field %d: %#08x, plain %#08x", name, b, f, g, w)
			}
		}
	}
	return want.bad
}

// FuzzFastMatchesPlain cross-checks the vector kernel against the Go kernel
// on fuzzed BF16 references, codes and absmax bits: 8 or 9 blocks of 32 or
// 64 elements (one group for the kernel, a leftover block for Go), each input
// repeated to fill its section.
func FuzzFastMatchesPlain(f *testing.F) {
	if !useFast(tensorstream.BF16, tensorstream.BF16, 64) {
		f.Skip("no vector kernel on this CPU or build")
	}
	f.Add([]byte{0x80, 0x3f, 0x00, 0xbf, 0x01, 0x00, 0x80, 0x7f}, []byte{0x12, 0x34, 0xf0}, []byte{0x00, 0x00, 0x80, 0x3f}, uint8(0), false)
	f.Add([]byte{0xc1, 0x7f, 0x03, 0x00, 0x7f, 0x7f, 0x00, 0x80}, []byte{0x7e, 0x81}, []byte{0x01, 0x00, 0x80, 0x00, 0x5c, 0x8e, 0x08, 0x02}, uint8(1), true)
	f.Add([]byte{0x12, 0x3d, 0x95, 0xbe}, []byte{0xa5}, []byte{0xff, 0xff, 0x7f, 0x7f, 0x00, 0x80, 0x00, 0x3f}, uint8(3), false)
	f.Fuzz(func(t *testing.T, refIn, packedIn, amaxIn []byte, shape uint8, fp4 bool) {
		qt := quant.NF4
		if fp4 {
			qt = quant.FP4
		}
		bs := 32 << (shape & 1)
		n := (8 + int(shape>>1&1)) * bs
		ref, packed := cycle(refIn, 2*n), cycle(packedIn, n/2)
		amaxBytes := cycle(amaxIn, 4*(n/bs))
		amax := make([]float32, n/bs)
		for i := range amax {
			amax[i] = math.Float32frombits(binary.LittleEndian.Uint32(amaxBytes[4*i:]))
		}
		sameAsPlain(t, fmt.Sprintf("%s/bs%d/n%d", qt, bs, n), qt, bs, ref, packed, amax)
	})
}

// cycle returns n bytes of b repeated (zeros when b is empty).
func cycle(b []byte, n int) []byte {
	out := make([]byte, n)
	if len(b) > 0 {
		for i := range out {
			out[i] = b[i%len(b)]
		}
	}
	return out
}

func isNaN32(b uint32) bool { return b&0x7fffffff > 0x7f800000 }
