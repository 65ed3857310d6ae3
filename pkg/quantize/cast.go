package quantize

import (
	"encoding/binary"
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// The conversions are torch's: widening is exact, narrowing rounds to nearest,
// ties to even, overflows to ±Inf and underflows gradually. pkg/quant has the
// same functions unexported; these are the stage's own.

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1F
	man := uint32(h & 0x3FF)
	switch {
	case exp == 0x1F:
		return math.Float32frombits(sign | 0x7F800000 | man<<13)
	case exp == 0:
		// man * 2^-24, exact in float32.
		f := float32(man) * 0x1p-24
		return math.Float32frombits(math.Float32bits(f) | sign)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
}

// f32ToBF16 gives NaN as 0x7FC0, as c10::BFloat16 does.
func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7FFFFFFF > 0x7F800000 {
		return 0x7FC0
	}
	return uint16((b + 0x7FFF + (b>>16)&1) >> 16)
}

// f32ToF16 gives NaN as sign|0x7E00, as c10::Half does.
func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23) & 0xFF
	man := b & 0x7FFFFF
	if exp == 0xFF {
		if man != 0 {
			return sign | 0x7E00
		}
		return sign | 0x7C00
	}
	e := exp - 127 + 15
	if e >= 0x1F {
		return sign | 0x7C00
	}
	if e <= 0 {
		if e < -10 {
			return sign // below half the smallest subnormal
		}
		// A subnormal half counts units of 2^-24.
		m := man | 0x800000
		shift := uint(14 - e)
		r, rem, half := m>>shift, m&(1<<shift-1), uint32(1)<<(shift-1)
		if rem > half || rem == half && r&1 == 1 {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(e)<<10 | man>>13
	rem := man & 0x1FFF
	if rem > 0x1000 || rem == 0x1000 && r&1 == 1 {
		r++ // a carry into the exponent is right, up to Inf
	}
	return sign | uint16(r)
}

// elementF32 returns element i of raw little-endian src as float32.
func elementF32(src []byte, dt quant.DType, i int) float32 {
	switch dt {
	case quant.F32:
		return math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	case quant.F16:
		return f16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
	return bf16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
}

// castInto converts the raw elements of src (type from) into dst (type to)
// and returns the bytes written. dst must hold len(src)/from.Size()*to.Size().
func castInto(dst, src []byte, from, to tensorstream.DType) []byte {
	n := len(src) / from.Size()
	dst = dst[:n*to.Size()]
	at := func(i int) float32 { return elementF32(src, quant.DType(from), i) }
	switch to {
	case tensorstream.F32:
		for i := range n {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(at(i)))
		}
	case tensorstream.BF16:
		for i := range n {
			binary.LittleEndian.PutUint16(dst[2*i:], f32ToBF16(at(i)))
		}
	case tensorstream.F16:
		for i := range n {
			binary.LittleEndian.PutUint16(dst[2*i:], f32ToF16(at(i)))
		}
	}
	return dst
}
