package quantize

import (
	"encoding/binary"
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// The conversions are torch's (pkg/quant's), except that narrowing writes a
// NaN as c10 does, one canonical quiet NaN per sign, where quant keeps the
// payload as CUDA does.

// f32ToBF16 is quant.F32ToBF16 with c10::BFloat16's NaN, 0x7FC0.
func f32ToBF16(f float32) uint16 {
	if f != f {
		return 0x7FC0
	}
	return quant.F32ToBF16(f)
}

// f32ToF16 is quant.F32ToF16 with c10::Half's NaN, sign|0x7E00.
func f32ToF16(f float32) uint16 {
	if f != f {
		return uint16(math.Float32bits(f)>>16)&0x8000 | 0x7E00
	}
	return quant.F32ToF16(f)
}

// elementF32 returns element i of raw little-endian src as float32.
func elementF32(src []byte, dt quant.DType, i int) float32 {
	switch dt {
	case quant.F32:
		return math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	case quant.F16:
		return quant.F16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
	}
	return quant.BF16ToF32(binary.LittleEndian.Uint16(src[2*i:]))
}

// CanCast reports whether Cast converts from one dtype to the other: both
// are F32, F16 or BF16.
func CanCast(from, to tensorstream.DType) bool { return castable(from) && castable(to) }

func castable(dt tensorstream.DType) bool {
	return dt == tensorstream.F32 || dt == tensorstream.F16 || dt == tensorstream.BF16
}

// Cast converts the raw little-endian elements of src (type from) into dst
// (type to), as quantize --cast does, and returns the bytes written: widening
// is exact, narrowing rounds to nearest even (overflow to ±Inf, F16 underflow
// gradual) and writes a NaN as c10 does (BF16 0x7FC0, F16 sign|0x7E00).
// CanCast(from, to) must hold and dst must hold len(src)/from.Size()*to.Size()
// bytes. verify casts the reference with it to check a cast tensor.
func Cast(dst, src []byte, from, to tensorstream.DType) []byte {
	n := len(src) / from.Size()
	dst = dst[:n*to.Size()]
	at := func(i int) float32 { return elementF32(src, from, i) }
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
