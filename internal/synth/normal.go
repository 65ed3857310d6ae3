package synth

import (
	"encoding/binary"
	"math"
	"math/bits"
)

// A value table holds 65536 encoded elements whose values are the quantiles
// Φ⁻¹((i+½)/65536) of a normal distribution, scaled and shifted. Indexing it
// with uniform 16-bit random numbers draws from that distribution (to within
// the table's resolution) at the cost of a table load per element, which is
// what makes generating gigabytes of weights cheap. Every entry is finite:
// the extreme quantiles are about ±4.3σ.
type table struct {
	elem int // bytes per element: 2 or 4
	b16  [1 << 16]uint16
	b32  []uint32 // F32 only
}

func quantile(i int) float64 {
	p := (float64(i) + 0.5) / (1 << 16)
	return math.Sqrt2 * math.Erfinv(2*p-1)
}

// newTable builds the table of mean+std·z for dtype, one of BF16, F16, F32.
func newTable(dtype string, mean, std float64) *table {
	t := &table{elem: 2}
	if dtype == "F32" {
		t.elem = 4
		t.b32 = make([]uint32, 1<<16)
	}
	for i := 0; i < 1<<16; i++ {
		v := float32(mean + std*quantile(i))
		switch dtype {
		case "F32":
			t.b32[i] = math.Float32bits(v)
		case "F16":
			t.b16[i] = f32ToF16(v)
		default:
			t.b16[i] = f32ToBF16(v)
		}
	}
	return t
}

// f32ToBF16 rounds to nearest even, as torch does when casting.
func f32ToBF16(v float32) uint16 {
	b := math.Float32bits(v)
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// f32ToF16 rounds a float32 of normal float16 range (or a subnormal, flushed
// to a correctly rounded subnormal) to nearest even. Values in the table are
// far from float16's overflow, so infinities need no care beyond saturation.
func f32ToF16(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	exp := int(b>>23&0xff) - 127 + 15
	man := b & 0x7fffff
	switch {
	case exp >= 31:
		return sign | 0x7bff // saturate at the largest finite value
	case exp <= 0:
		if exp < -10 {
			return sign
		}
		man |= 0x800000
		shift := uint(14 - exp)
		half := uint32(1) << (shift - 1)
		r := man >> shift
		if rem := man & (1<<shift - 1); rem > half || rem == half && r&1 == 1 {
			r++
		}
		return sign | uint16(r)
	}
	r := uint32(exp)<<10 | man>>13
	if rem := man & 0x1fff; rem > 0x1000 || rem == 0x1000 && r&1 == 1 {
		r++ // may carry into the exponent, which is the right answer
	}
	if r >= 0x7c00 {
		return sign | 0x7bff
	}
	return sign | uint16(r)
}

// rng is wyrand: one multiply-xorshift a draw, ample for picking table entries.
type rng uint64

func (r *rng) next() uint64 {
	*r += 0xa0761d6478bd642f
	hi, lo := bits.Mul64(uint64(*r), uint64(*r)^0xe7037ed1a0b428db)
	return hi ^ lo
}

// fill writes len(dst)/elem elements drawn from t into dst; len(dst) must be a
// multiple of 8.
func (t *table) fill(dst []byte, r *rng) {
	if t.elem == 4 {
		for i := 0; i+8 <= len(dst); i += 8 {
			x := r.next()
			binary.LittleEndian.PutUint32(dst[i:], t.b32[uint16(x)])
			binary.LittleEndian.PutUint32(dst[i+4:], t.b32[uint16(x>>16)])
		}
		return
	}
	for i := 0; i+8 <= len(dst); i += 8 {
		x := r.next()
		v := uint64(t.b16[uint16(x)]) | uint64(t.b16[uint16(x>>16)])<<16 |
			uint64(t.b16[uint16(x>>32)])<<32 | uint64(t.b16[uint16(x>>48)])<<48
		binary.LittleEndian.PutUint64(dst[i:], v)
	}
}
