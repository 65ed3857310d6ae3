package quant

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/nf4pipe/nf4pipe/pkg/dtype"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
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

// Type is the 4-bit data type: a name of pkg/qtype's registry. The constants
// are the types this package has encoders for.
type Type string

const (
	NF4 Type = "nf4"
	FP4 Type = "fp4"
)

// DType is an element type of raw tensor bytes: dtype.DType, the one
// definition every package shares.
type DType = dtype.DType

// The element types the package quantizes from and dequantizes to.
const (
	F32  = dtype.F32
	F16  = dtype.F16
	BF16 = dtype.BF16
)

// Supported reports whether the package quantizes from and dequantizes to d.
func Supported(d DType) bool { return d == F32 || d == F16 || d == BF16 }

// NestedBlockSize is the block size of double quantization, fixed by bitsandbytes.
const NestedBlockSize = qtype.NestedBlockSize

// DefaultBlockSize is the block size bitsandbytes and transformers use by default.
const DefaultBlockSize = qtype.DefaultBlockSize

// The block sizes the quantizer supports: powers of two in this range, a
// subset of what the formats accept (qtype.CheckBlockSize).
const (
	MinBlockSize = 32
	MaxBlockSize = 4096
)

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

// Validate reports whether p names a registered type (pkg/qtype) and a block
// size the quantizer supports. Its errors are *ParamError.
func (p Params) Validate() error {
	if _, err := p.Type.Info(); err != nil {
		return &ParamError{Param: "type", Value: strconv.Quote(string(p.Type)), Want: qtype.Names()}
	}
	if p.BlockSize < MinBlockSize || p.BlockSize > MaxBlockSize || p.BlockSize&(p.BlockSize-1) != 0 {
		return &ParamError{Param: "blocksize", Value: strconv.Itoa(p.BlockSize),
			Want: fmt.Sprintf("a power of two from %d to %d", MinBlockSize, MaxBlockSize)}
	}
	if p.ReduceGPU != (ReduceGPU{}) {
		return p.ReduceGPU.Validate()
	}
	return nil
}

// ParamError reports an invalid parameter. It wraps ErrParams.
type ParamError struct {
	Param string // "type" or "blocksize"
	Value string // the value as given, quoted when a string
	Want  string // what would be accepted: "nf4 or fp4"
}

func (e *ParamError) Error() string {
	return fmt.Sprintf("%v: %s %s (want %s)", ErrParams, e.Param, e.Value, e.Want)
}

func (e *ParamError) Unwrap() error { return ErrParams }

// Info returns t's entry in the registry of quant types.
func (t Type) Info() (*qtype.Type, error) {
	info, err := qtype.Lookup(string(t))
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrParams, err)
	}
	return info, nil
}

// Sizes are the byte lengths of the sections of a quantized tensor (qtype.Sizes).
type Sizes = qtype.Sizes

// SizesFor returns the section sizes of n elements quantized with p.
func SizesFor(n int64, p Params) Sizes {
	bs := p.BlockSize
	if bs <= 0 {
		bs = DefaultBlockSize
	}
	nbs := 0
	if p.DoubleQuant {
		nbs = NestedBlockSize
	}
	return qtype.SizesFor(n, bs, nbs)
}

// NonFiniteError reports the first NaN or ±Inf of a tensor. It wraps ErrNonFinite.
type NonFiniteError struct {
	Index int64   // element index in row-major order
	Value float32 // the offending value, converted to float32
}

func (e *NonFiniteError) Error() string {
	return fmt.Sprintf("%v %v at element %d", ErrNonFinite, e.Value, e.Index)
}

func (e *NonFiniteError) Unwrap() error { return ErrNonFinite }
