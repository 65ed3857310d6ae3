package verify

import (
	"encoding/binary"
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// kernel compares one chunk of a 4-bit tensor with its reference. It holds the
// per-block tables, so a chunk costs a table lookup, two compares and four
// multiply-adds per element.
type kernel struct {
	cb    *codebook
	bs    int
	round func(float32) float32 // to the tensor's dtype, as dequantization rounds

	bad      int64 // elements whose code is not the nearest to the reference
	firstBad int64 // element index of the first, -1 if none

	refMax []float32 // max |x| of each block of the last chunk
}

// chunk compares elements [base, base+len(x)) given their packed codes and the
// dequantized absmax of their blocks; base is a multiple of the block size.
//
// The inner loop has no data-dependent branch: a value is inside its code's
// cell when |x - mid| - halfwidth is negative, so the AND of those floats' bits
// keeps the sign bit only if every value of the block is inside; a block that
// loses it is rescanned to count and locate the strays.
func (k *kernel) chunk(acc *accum, base int64, x []float32, packed []byte, amax []float32) {
	var q, mid, hw [16]float32
	const sign = 1 << 31
	bs := k.bs
	k.refMax = grow(k.refMax, (len(x)+bs-1)/bs)
	for b := 0; b*bs < len(x); b++ {
		xs := x[b*bs : min((b+1)*bs, len(x))]
		ps := packed[b*bs/2:]
		a := amax[b]
		var mb uint32 // magnitudes order as their bits do
		for _, v := range xs {
			mb = max(mb, math.Float32bits(v)&^sign)
		}
		m := math.Float32frombits(mb)
		k.refMax[b] = m
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
			sse += d0*d0 + d1*d1
			xx += x0*x0 + x1*x1
			xq += x0*q0 + x1*q1
			mxb = max(mxb, math.Float32bits(d0)&^sign, math.Float32bits(d1)&^sign)
		}
		if len(xs)&1 == 1 { // a tensor's odd last element: the high nibble
			v := xs[len(xs)-1]
			c := ps[half] >> 4
			e := math.Float32frombits(math.Float32bits(v-mid[c])&^sign) - hw[c]
			inside &= math.Float32bits(e)
			d := v - q[c]
			sse += d * d
			xx += v * v
			xq += v * q[c]
			mxb = max(mxb, math.Float32bits(d)&^sign)
		}
		if inside&sign == 0 {
			k.strays(base+int64(b*bs), xs, ps, m)
		}
		acc.sse += float64(sse)
		acc.xx += float64(xx)
		acc.xq += float64(xq)
		acc.qq += float64(sse) - float64(xx) + 2*float64(xq) // sum of q²
		acc.maxAbs = math.Max(acc.maxAbs, float64(math.Float32frombits(mxb)))
	}
	acc.n += int64(len(x))
}

// strays counts the values of a block that lie outside their code's cell.
func (k *kernel) strays(first int64, xs []float32, ps []byte, m float32) {
	for j, v := range xs {
		c := ps[j/2] >> 4
		if j&1 == 1 {
			c = ps[j/2] & 15
		}
		if v < k.cb.lo[c]*m || v > k.cb.hi[c]*m {
			if k.bad == 0 {
				k.firstBad = first + int64(j)
			}
			k.bad++
		}
	}
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
