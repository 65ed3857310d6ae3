package safetensors

import (
	"fmt"
	"math/bits"
)

// DType names an element type exactly as a safetensors header spells it.
type DType string

// The element types of the safetensors format. The first fifteen are the ones
// checkpoints for this project carry; the rest exist in the format (newer
// releases of the Rust crate) and are read and written for completeness.
const (
	BOOL       DType = "BOOL"
	U8         DType = "U8"
	I8         DType = "I8"
	F8E5M2     DType = "F8_E5M2"
	F8E4M3     DType = "F8_E4M3"
	I16        DType = "I16"
	U16        DType = "U16"
	F16        DType = "F16"
	BF16       DType = "BF16"
	I32        DType = "I32"
	U32        DType = "U32"
	F32        DType = "F32"
	F64        DType = "F64"
	I64        DType = "I64"
	U64        DType = "U64"
	F4         DType = "F4"
	F6E2M3     DType = "F6_E2M3"
	F6E3M2     DType = "F6_E3M2"
	F8E8M0     DType = "F8_E8M0"
	F8E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8E5M2FNUZ DType = "F8_E5M2FNUZ"
	C64        DType = "C64"
)

type dtypeInfo struct {
	rank int // position in the Rust crate's Dtype enum (declaration order)
	bits int // width of one element
}

// dtypes mirrors `enum Dtype` in huggingface/safetensors safetensors/src/tensor.rs
// (main, 0.6/0.7): BOOL, F4, F6_E2M3, F6_E3M2, U8, I8, F8_E5M2, F8_E4M3, F8_E8M0,
// F8_E4M3FNUZ, F8_E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64.
// The enum derives Ord, so the declaration order is the order that serialize
// sorts by (descending). Older releases (0.4) lack F4, F6_*, F8_E8M0, FNUZ and C64
// but keep the same relative order for the others, so the ranks agree.
var dtypes = map[DType]dtypeInfo{
	BOOL: {0, 8}, F4: {1, 4}, F6E2M3: {2, 6}, F6E3M2: {3, 6},
	U8: {4, 8}, I8: {5, 8}, F8E5M2: {6, 8}, F8E4M3: {7, 8}, F8E8M0: {8, 8},
	F8E4M3FNUZ: {9, 8}, F8E5M2FNUZ: {10, 8},
	I16: {11, 16}, U16: {12, 16}, F16: {13, 16}, BF16: {14, 16},
	I32: {15, 32}, U32: {16, 32}, F32: {17, 32}, C64: {18, 64},
	F64: {19, 64}, I64: {20, 64}, U64: {21, 64},
}

// Valid reports whether d is a dtype of the safetensors format.
func (d DType) Valid() bool { _, ok := dtypes[d]; return ok }

// Bits returns the width of one element in bits, or 0 for an unknown dtype.
func (d DType) Bits() int { return dtypes[d].bits }

// Size returns the size of one element in bytes, or 0 for an unknown dtype or
// one narrower than a byte (F4, F6_*).
func (d DType) Size() int {
	b := dtypes[d].bits
	if b%8 != 0 {
		return 0
	}
	return b / 8
}

// rank is d's position in the Rust Dtype enum; see dtypes.
func (d DType) rank() int { return dtypes[d].rank }

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
