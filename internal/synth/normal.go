package synth

import (
	"encoding/binary"
	"math"
	"math/bits"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
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
func f32ToBF16(v float32) uint16 { return quant.F32ToBF16(v) }

// f32ToF16 rounds to nearest even, as torch does, except that a value beyond
// float16's range saturates at the largest finite one instead of becoming
// ±Inf: a generated weight is always finite.
func f32ToF16(v float32) uint16 {
	h := quant.F32ToF16(v)
	if h&0x7fff >= 0x7c00 {
		return h&0x8000 | 0x7bff
	}
	return h
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
