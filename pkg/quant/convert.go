package quant

import "math"

// Conversions between float32 and the 16-bit float formats, exact where
// widening and rounding as torch and CUDA do where narrowing. The package's
// kernels call the unexported names; the exported ones are the same functions
// for other packages.

// BF16ToF32 widens a bfloat16 bit pattern exactly.
func BF16ToF32(h uint16) float32 { return bf16ToF32(h) }

// F16ToF32 widens an IEEE half bit pattern exactly, subnormals, ±Inf and NaN
// (its payload kept) included.
func F16ToF32(h uint16) float32 { return f16ToF32(h) }

// F32ToBF16 rounds to the nearest bfloat16, ties to even, with overflow to
// ±Inf. A NaN keeps its sign and top payload bits and is made quiet (0x0040
// set); c10::BFloat16 (quantize --cast) writes every NaN as 0x7FC0.
func F32ToBF16(f float32) uint16 { return f32ToBF16(f) }

// F32ToF16 rounds to the nearest IEEE half, ties to even, with overflow to
// ±Inf and gradual underflow, as torch and CUDA's __float2half do. A NaN
// keeps its sign and top payload bits and is made quiet (0x0200 set);
// c10::Half (quantize --cast) writes sign|0x7E00.
func F32ToF16(f float32) uint16 { return f32ToF16(f) }

func bf16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

func f16ToF32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	mag := uint32(h & 0x7FFF)
	if mag >= 0x7C00 {
		return math.Float32frombits(sign | 0x7F800000 | (mag&0x3FF)<<13)
	}
	// Shifting puts the half's exponent and mantissa under a float32 exponent
	// 112 too small; the power-of-two multiply fixes it exactly, subnormals too.
	f := math.Float32frombits(mag<<13) * 0x1p112
	return math.Float32frombits(math.Float32bits(f) | sign)
}

func f32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7FFFFFFF > 0x7F800000 {
		return uint16(b>>16) | 0x0040
	}
	return uint16((b + 0x7FFF + (b>>16)&1) >> 16)
}

func f32ToF16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	mag := b & 0x7FFFFFFF
	switch {
	case mag > 0x7F800000: // NaN
		return sign | 0x7E00 | uint16(mag>>13)&0x1FF
	case mag >= 0x477FF000: // rounds to 65520 or more: Inf
		return sign | 0x7C00
	case mag >= 0x38800000: // normal half
		// Rebias the exponent (127 -> 15) and round the 13 dropped bits.
		m := mag - (112 << 23)
		return sign | uint16((m+0xFFF+(m>>13)&1)>>13)
	case mag < 0x33000000: // below half the smallest subnormal: ±0
		return sign
	default: // subnormal half
		e := mag >> 23
		m := mag&0x7FFFFF | 0x800000
		shift := 126 - e // 14 + (113 - e) ... places the value in units of 2^-24
		// value = m * 2^(e-150); in units of 2^-24 that is m >> (126-e).
		r := m >> shift
		rem := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rem > half || (rem == half && r&1 == 1) {
			r++
		}
		return sign | uint16(r)
	}
}
