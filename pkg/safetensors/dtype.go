package safetensors

import (
	"fmt"
	"math/bits"

	"github.com/nf4pipe/nf4pipe/pkg/dtype"
)

// DType names an element type exactly as a safetensors header spells it; it
// is dtype.DType, the one definition every package shares.
type DType = dtype.DType

// The element types of the safetensors format. The first fifteen are the ones
// checkpoints for this project carry; the rest exist in the format (newer
// releases of the Rust crate) and are read and written for completeness.
const (
	BOOL       = dtype.Bool
	U8         = dtype.U8
	I8         = dtype.I8
	F8E5M2     = dtype.F8E5M2
	F8E4M3     = dtype.F8E4M3
	I16        = dtype.I16
	U16        = dtype.U16
	F16        = dtype.F16
	BF16       = dtype.BF16
	I32        = dtype.I32
	U32        = dtype.U32
	F32        = dtype.F32
	F64        = dtype.F64
	I64        = dtype.I64
	U64        = dtype.U64
	F4         = dtype.F4
	F6E2M3     = dtype.F6E2M3
	F6E3M2     = dtype.F6E3M2
	F8E8M0     = dtype.F8E8M0
	F8E4M3FNUZ = dtype.F8E4M3FNUZ
	F8E5M2FNUZ = dtype.F8E5M2FNUZ
	C64        = dtype.C64
)

// ranks mirrors `enum Dtype` in huggingface/safetensors safetensors/src/tensor.rs
// (main, 0.6/0.7): BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0,
// F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64.
// The enum derives Ord, so the declaration order is the order that serialize
// sorts by (descending). Older releases (0.4) lack F4, F6_*, F8_E8M0, FNUZ and C64
// but keep the same relative order for the others, so the ranks agree.
var ranks = map[DType]int{
	BOOL: 0, F4: 1, F6E2M3: 2, F6E3M2: 3, U8: 4, I8: 5, F8E5M2: 6, F8E4M3: 7, F8E8M0: 8,
	F8E4M3FNUZ: 9, F8E5M2FNUZ: 10, I16: 11, U16: 12, F16: 13, BF16: 14,
	I32: 15, U32: 16, F32: 17, C64: 18, F64: 19, I64: 20, U64: 21,
}

// rank is d's position in the Rust Dtype enum; see ranks.
func rank(d DType) int { return ranks[d] }

// NumElements returns the product of shape, failing with ErrShape on a negative
// dimension or on overflow of int64. A scalar (empty shape) has one element.
func NumElements(shape []int64) (int64, error) {
	n := uint64(1)
	for _, d := range shape {
		if d < 0 {
			return 0, fmt.Errorf("%w: negative dimension %d in shape %v", ErrShape, d, shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<63-1 {
			return 0, fmt.Errorf("%w: shape %v overflows", ErrShape, shape)
		}
		n = lo
	}
	return int64(n), nil
}

// ByteLen returns the payload size of a tensor of dtype d and the given shape,
// as safetensors computes it: elements × bits / 8, which must be whole bytes.
func ByteLen(d DType, shape []int64) (int64, error) {
	if !d.Valid() {
		return 0, fmt.Errorf("%w: %q", ErrDType, string(d))
	}
	n, err := NumElements(shape)
	if err != nil {
		return 0, err
	}
	hi, lo := bits.Mul64(uint64(n), uint64(d.Bits()))
	if hi != 0 || lo > 1<<63-1 {
		return 0, fmt.Errorf("%w: shape %v of %s overflows", ErrShape, shape, d)
	}
	if lo%8 != 0 {
		return 0, fmt.Errorf("%w: shape %v of %s is not a whole number of bytes", ErrShape, shape, d)
	}
	return int64(lo / 8), nil
}
