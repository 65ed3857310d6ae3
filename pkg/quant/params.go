package quant

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the package returns wraps one of them.
var (
	// ErrParams marks invalid quantization parameters.
	ErrParams = errors.New("quant: invalid parameters")
	// ErrNonFinite marks a NaN or ±Inf input when Params.AllowNonFinite is off.
	ErrNonFinite = errors.New("quant: non-finite value")
	// ErrDType marks an element type the package cannot quantize to or from.
	ErrDType = errors.New("quant: unsupported dtype")
	// ErrLength marks input whose length disagrees with the element count.
	ErrLength = errors.New("quant: wrong length")
	// ErrBackend marks a backend that is unavailable or failed.
	ErrBackend = errors.New("quant: backend")
)

// Type is the 4-bit data type.
type Type string

const (
	NF4 Type = "nf4"
	FP4 Type = "fp4"
)

// DType is an element type of raw tensor bytes, spelled as in safetensors.
type DType string

const (
	F32  DType = "F32"
	F16  DType = "F16"
	BF16 DType = "BF16"
)

// Size returns the bytes per element, or 0 for a type the package does not handle.
func (d DType) Size() int {
	switch d {
	case F32:
		return 4
	case F16, BF16:
		return 2
	}
	return 0
}

// NestedBlockSize is the block size of double quantization, fixed by bitsandbytes.
const NestedBlockSize = 256

// DefaultBlockSize is the block size bitsandbytes and transformers use by default.
const DefaultBlockSize = 64

// Params are the settings of one quantization.
type Params struct {
	Type        Type
	BlockSize   int  // 32, 64, ..., 4096
	DoubleQuant bool // quantize the absmax values to 8 bits with NestedBlockSize
	// AllowNonFinite quantizes NaN and ±Inf the way bitsandbytes' CUDA kernel
	// does instead of failing with ErrNonFinite.
	AllowNonFinite bool
	// ReduceGPU is the GPU whose torch reduction order the double-quantization
	// offset follows (mean.go); the zero value means DefaultReduceGPU.
	ReduceGPU ReduceGPU
}

// OffsetGPU is p.ReduceGPU, or DefaultReduceGPU when unset.
func (p Params) OffsetGPU() ReduceGPU {
	if p.ReduceGPU == (ReduceGPU{}) {
		return DefaultReduceGPU
	}
	return p.ReduceGPU
}

// DefaultParams returns NF4, block size 64, with double quantization: what
// transformers' BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
// bnb_4bit_use_double_quant=True) produces.
func DefaultParams() Params {
	return Params{Type: NF4, BlockSize: DefaultBlockSize, DoubleQuant: true}
}

// Validate reports whether p names a supported type and block size.
func (p Params) Validate() error {
	if p.Type != NF4 && p.Type != FP4 {
		return fmt.Errorf("%w: type %q (want nf4 or fp4)", ErrParams, p.Type)
	}
	if p.BlockSize < 32 || p.BlockSize > 4096 || p.BlockSize&(p.BlockSize-1) != 0 {
		return fmt.Errorf("%w: block size %d (want a power of two from 32 to 4096)", ErrParams, p.BlockSize)
	}
	if p.ReduceGPU != (ReduceGPU{}) {
		return p.ReduceGPU.Validate()
	}
	return nil
}

// Sizes are the byte lengths of the sections of a quantized tensor, in the order
// a stream payload carries them: packed codes, absmax, nested absmax.
type Sizes struct {
	Elements int64
	Blocks   int64 // absmax values
	Packed   int64 // ceil(n/2): two codes a byte
	Absmax   int64 // Blocks bytes of U8 codes with double quant, else Blocks*4 of F32
	Nested   int64 // ceil(Blocks/256)*4 with double quant, else 0
}

// Total returns the payload length: Packed + Absmax + Nested.
func (s Sizes) Total() int64 { return s.Packed + s.Absmax + s.Nested }

// NestedBlocks returns the number of nested absmax values.
func (s Sizes) NestedBlocks() int64 { return s.Nested / 4 }

// SizesFor returns the section sizes of n quantized elements.
func SizesFor(n int64, p Params) Sizes {
	bs := int64(p.BlockSize)
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	s := Sizes{Elements: n, Blocks: (n + bs - 1) / bs, Packed: (n + 1) / 2}
	if p.DoubleQuant {
		s.Absmax = s.Blocks
		s.Nested = (s.Blocks + NestedBlockSize - 1) / NestedBlockSize * 4
	} else {
		s.Absmax = s.Blocks * 4
	}
	return s
}

// NonFiniteError reports the first NaN or ±Inf of a tensor. It wraps ErrNonFinite.
type NonFiniteError struct {
	Index int64   // element index in row-major order
	Value float32 // the offending value, converted to float32
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("%v %v at element %d (use --allow-nonfinite to quantize it as bitsandbytes does)", ErrNonFinite, e.Value, e.Index)
}

func (e *NonFiniteError) Unwrap() error { return ErrNonFinite }
