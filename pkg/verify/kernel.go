package verify

import (
	"encoding/binary"
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// kernel compares chunks of one 4-bit tensor with its reference. It is read
// only while chunks are compared, so several goroutines share it.
type kernel struct {
	cb    *codebook
	bs    int
	round func(float32) float32 // to the tensor's dtype, as dequantization rounds
	// fast is set when the vector kernel applies: BF16 reference, BF16
	// dequantization, and a CPU that has it (kernel_amd64.go).
	fast bool
}

// The per-block results of a chunk, folded into the tensor's sums in block
// order (fold) so that they do not depend on how chunks were scheduled.
// Blocks come in groups of eight, field-major within a group, the layout the
// vector kernel writes: field f of block b is v[(b/8)*groupWords + f*8 + b%8].
const (
	fSSE    = iota // float32 Σ(x-q)², in element order, pairs first
	fXX            // float32 Σx²
	fXQ            // float32 Σxq
	fMaxD          // bits of max |x-q|: magnitudes order as their bits do
	fInside        // sign bit set when every value passed the quick cell test
	nFields
	groupWords = 8 * nFields
)

// blockSums holds a chunk's per-block results.
type blockSums struct {
	v      []uint32
	refMax []float32 // max |x| of each block
}

func (s *blockSums) reset(nblocks int) {
	s.v = grow(s.v, (nblocks+7)/8*groupWords)
	s.refMax = grow(s.refMax, nblocks)
}

func (s *blockSums) at(b, f int) *uint32 { return &s.v[b>>3*groupWords+f*8+b&7] }

// blocks compares whole blocks given as float32 values x (the last may be a
// tensor's short last block), their packed codes and dequantized absmax,
// writing block b's results at index off+b of s.
func (k *kernel) blocks(s *blockSums, off int, x []float32, packed []byte, amax []float32) {
	bs := k.bs
	for b := 0; b*bs < len(x); b++ {
		k.block(s, off+b, x[b*bs:min((b+1)*bs, len(x))], packed[b*bs/2:], amax[b])
	}
}

// block compares block b, values xs (a whole block, or a tensor's last
// elements) with codes ps and absmax a.
//
// The inner loop has no data-dependent branch: a value is inside its code's
// cell when |x - mid| - halfwidth is negative, so the AND of those floats' bits
// keeps the sign bit only if every value of the block is inside; a block that
// loses it is rescanned (strays) to count and locate the strays. The products
// are converted explicitly so that no compiler fuses them into FMAs: the
// vector kernel computes the very same float32 operations.
func (k *kernel) block(s *blockSums, b int, xs []float32, ps []byte, a float32) {
	var q, mid, hw [16]float32
	const sign = 1 << 31
	var mb uint32 // magnitudes order as their bits do
	for _, v := range xs {
		mb = max(mb, math.Float32bits(v)&^sign)
	}
	m := math.Float32frombits(mb)
	s.refMax[b] = m
	for c := range 16 {
		q[c] = k.round(mulFTZ(k.cb.deq[c], a))
		mid[c], hw[c] = k.cb.mid[c]*m, k.cb.hw[c]*m
		if m == 0 {
			hw[c] = float32(math.Inf(1))
		}
	}
	var sse, xx, xq float32
	var mxb uint32
	inside := uint32(math.MaxUint32)
	half := len(xs) / 2
	pairs := ps[:half]
	xp := xs[:2*half]
	for i, p := range pairs {
		x0, x1 := xp[2*i], xp[2*i+1]
		c0, c1 := p>>4, p&15
		q0, q1 := q[c0], q[c1]
		e0 := math.Float32frombits(math.Float32bits(x0-mid[c0])&^sign) - hw[c0]
		e1 := math.Float32frombits(math.Float32bits(x1-mid[c1])&^sign) - hw[c1]
		inside &= math.Float32bits(e0) & math.Float32bits(e1)
		d0, d1 := x0-q0, x1-q1
		sse += float32(d0*d0) + float32(d1*d1)
		xx += float32(x0*x0) + float32(x1*x1)
		xq += float32(x0*q0) + float32(x1*q1)
		mxb = max(mxb, math.Float32bits(d0)&^sign, math.Float32bits(d1)&^sign)
	}
	if len(xs)&1 == 1 { // a tensor's odd last element: the high nibble
		v := xs[len(xs)-1]
		c := ps[half] >> 4
		e := math.Float32frombits(math.Float32bits(v-mid[c])&^sign) - hw[c]
		inside &= math.Float32bits(e)
		d := v - q[c]
		sse += float32(d * d)
		xx += float32(v * v)
		xq += float32(v * q[c])
		mxb = max(mxb, math.Float32bits(d)&^sign)
	}
	*s.at(b, fSSE) = math.Float32bits(sse)
	*s.at(b, fXX) = math.Float32bits(xx)
	*s.at(b, fXQ) = math.Float32bits(xq)
	*s.at(b, fMaxD) = mxb
	*s.at(b, fInside) = inside
}

// fold adds the sums of a chunk's nblocks blocks to acc, in block order.
// The largest error is taken over the chunk's bits first: magnitudes order as
// their bits do, and a NaN's bits order above all, as math.Max keeps a NaN.
func (s *blockSums) fold(acc *accum, nblocks int) {
	var mxb uint32
	for g := 0; g < nblocks; g += 8 {
		v := s.v[g/8*groupWords : (g/8+1)*groupWords]
		sse, xx, xq, md := v[fSSE*8:fSSE*8+8], v[fXX*8:fXX*8+8], v[fXQ*8:fXQ*8+8], v[fMaxD*8:fMaxD*8+8]
		for l := range min(8, nblocks-g) {
			e := float64(math.Float32frombits(sse[l]))
			x := float64(math.Float32frombits(xx[l]))
			p := float64(math.Float32frombits(xq[l]))
			acc.sse += e
			acc.xx += x
			acc.xq += p
			acc.qq += e - x + 2*p // sum of q²
			mxb = max(mxb, md[l])
		}
	}
	acc.maxAbs = math.Max(acc.maxAbs, float64(math.Float32frombits(mxb)))
}

// strays counts the values of a block that lie outside their code's cell
// (xs, ps and m as for block); first is the block's first element index.
// It returns the count and the index of the first.
func (k *kernel) strays(first int64, xs []float32, ps []byte, m float32) (n, at int64) {
	at = -1
	for j, v := range xs {
		c := ps[j/2] >> 4
		if j&1 == 1 {
			c = ps[j/2] & 15
		}
		if v < k.cb.lo[c]*m || v > k.cb.hi[c]*m {
			if n == 0 {
				at = first + int64(j)
			}
			n++
		}
	}
	return n, at
}

// mulFTZ is the float32 product with subnormal operands and result flushed to
// zero, as bitsandbytes' fast-math kernel and quant.Decoder compute it.
func mulFTZ(a, b float32) float32 { return ftz(float32(ftz(a) * ftz(b))) }

func ftz(f float32) float32 {
	if b := math.Float32bits(f); b&0x7f800000 == 0 {
		return math.Float32frombits(b & 0x80000000)
	}
	return f
}

// rounder returns the rounding of a float32 to dtype d (the identity for F32).
func rounder(d tensorstream.DType) func(float32) float32 {
	switch d {
	case tensorstream.BF16:
		return roundBF16
	case tensorstream.F16:
		return roundF16
	}
	return func(f float32) float32 { return f }
}

// roundBF16 rounds to the nearest bfloat16, ties to even, as torch does.
func roundBF16(f float32) float32 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return f // NaN
	}
	b += 0x7fff + (b>>16)&1
	return math.Float32frombits(b & 0xffff0000)
}

// roundF16 rounds to the nearest IEEE half, ties to even: float64 holds the
// float32 exactly, and adding then subtracting a power of two rounds at the
// half's ulp for that binade.
func roundF16(f float32) float32 {
	x := float64(f)
	ax := math.Abs(x)
	switch {
	case ax != ax || ax == 0 || math.IsInf(ax, 0):
		return f
	case ax >= 65520:
		return float32(math.Copysign(math.Inf(1), x))
	}
	e := math.Floor(math.Log2(ax))
	if ax < math.Ldexp(1, int(e)) { // Log2 rounding near a power of two
		e--
	} else if ax >= math.Ldexp(1, int(e)+1) {
		e++
	}
	e = max(e, -14) // subnormals share the ulp of the smallest binade
	ulp := math.Ldexp(1, int(e)-10)
	r := math.RoundToEven(x/ulp) * ulp
	return float32(r)
}

// widen converts little-endian elements of dtype d into float32 values.
func widen(dst []float32, src []byte, d tensorstream.DType) {
	switch d {
	case tensorstream.BF16:
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
		}
	case tensorstream.F16:
		for i := range dst {
			dst[i] = halfToF32(binary.LittleEndian.Uint16(src[2*i:]))
		}
	case tensorstream.F32:
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
		}
	}
}

func halfToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	man := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	v := float32(man) * (1.0 / (1 << 24)) // subnormal: man * 2^-24
	if sign != 0 {
		v = -v
	}
	return v
}

// widenable reports whether verify can read reference values of dtype d.
func widenable(d tensorstream.DType) bool {
	return d == tensorstream.BF16 || d == tensorstream.F16 || d == tensorstream.F32
}
