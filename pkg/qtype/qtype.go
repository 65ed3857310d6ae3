// Package qtype is the registry of bitsandbytes 4-bit quantization types and
// the facts every stage shares about them: the name each format spells, the
// code book, the dequantization table, the storage dtype, the block sizes the
// formats accept and the byte length of each section of a quantized tensor.
//
// The stream (pkg/tensorstream), the checkpoint reader and writer
// (pkg/checkpoint), the quantizer (pkg/quant) and verify ask this package
// instead of spelling "nf4" themselves. What a type needs beyond these facts
// is its encoder: the decision tree and the fast kernels in pkg/quant and the
// CUDA kernels in kernels/ (docs/ARCHITECTURE.md lists each place).
package qtype

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// ErrType marks a quant type the registry does not know; ErrBlockSize a block
// size outside what the formats accept.
var (
	ErrType      = errors.New("qtype: unknown quant type")
	ErrBlockSize = errors.New("qtype: bad block size")
)

// Type is one 4-bit quantization type.
type Type struct {
	// Name is how every format spells the type: the stream's quant "type",
	// the checkpoint's "quant_state.bitsandbytes__<Name>" entry and its
	// quant_state "quant_type", and config.json's bnb_4bit_quant_type.
	Name string
	// Map is the code book, the float32 value of each 4-bit code, as a
	// checkpoint's quant_map tensor stores it.
	Map [16]float32
	// Dequant is what dequantization multiplies a block's absmax by for each
	// code; it differs from Map where the kernels do (FP4's code 8 is -0).
	Dequant [16]float32
}

// The registered types, in the order Names lists them.
var (
	NF4 = &Type{Name: "nf4", Map: nf4Map, Dequant: nf4Map}
	FP4 = &Type{Name: "fp4", Map: fp4Map, Dequant: fp4Dequant()}
)

var types = []*Type{NF4, FP4}

var nf4Map = [16]float32{
	-1, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
	-0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0,
	0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
	0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1,
}

// fp4Map has the sign in bit 3.
var fp4Map = [16]float32{
	0, 0.005208333333, 0.66666667, 1, 0.33333333, 0.5, 0.16666667, 0.25,
	0, -0.005208333333, -0.66666667, -1, -0.33333333, -0.5, -0.16666667, -0.25,
}

// fp4Dequant is fp4Map with -0 for code 8: bitsandbytes' kernel sets the sign
// bit of a zero, while its quant_map stores +0.
func fp4Dequant() [16]float32 {
	m := fp4Map
	m[8] = float32(math.Copysign(0, -1))
	return m
}

// Types returns the registered types.
func Types() []*Type { return append([]*Type(nil), types...) }

// Lookup returns the type called name, or an error wrapping ErrType that
// names the known ones.
func Lookup(name string) (*Type, error) {
	for _, t := range types {
		if t.Name == name {
			return t, nil
		}
	}
	return nil, fmt.Errorf("%w %q (want %s)", ErrType, name, Names())
}

// Names lists the registered names for messages: "nf4 or fp4".
func Names() string {
	names := make([]string, len(types))
	for i, t := range types {
		names[i] = t.Name
	}
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// Storage is the dtype of the packed codes in a checkpoint: safetensors U8,
// config.json's bnb_4bit_quant_storage default "uint8".
const Storage = "uint8"

// Block sizes. DefaultBlockSize is what bitsandbytes and transformers use;
// NestedBlockSize is fixed by bitsandbytes' double quantization. The formats
// (the stream, the quant_state JSON) accept any power of two from
// MinBlockSize to MaxBlockSize and a nested block size up to
// MaxNestedBlockSize; the quantizer supports a narrower range (pkg/quant).
const (
	DefaultBlockSize   = 64
	NestedBlockSize    = 256
	MinBlockSize       = 2
	MaxBlockSize       = 1 << 20
	MaxNestedBlockSize = 1 << 20
)

// CheckBlockSize reports whether the formats accept bs, with an error
// wrapping ErrBlockSize.
func CheckBlockSize(bs int) error {
	if bs < MinBlockSize || bs > MaxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("%w: %d is not a power of two in [2, 2^20]", ErrBlockSize, bs)
	}
	return nil
}

// CheckNestedBlockSize reports whether the formats accept a nested block
// size of nbs, with an error wrapping ErrBlockSize.
func CheckNestedBlockSize(nbs int) error {
	if nbs < 1 || nbs > MaxNestedBlockSize {
		return fmt.Errorf("%w: nested block size %d is out of range", ErrBlockSize, nbs)
	}
	return nil
}

// Sizes are the byte lengths of the sections of a quantized tensor, in the
// order a stream payload carries them: packed codes, absmax, nested absmax.
type Sizes struct {
	Elements int64
	Blocks   int64 // absmax values
	Packed   int64 // ceil(n/2): two codes a byte, the first in the high nibble
	Absmax   int64 // Blocks bytes of U8 codes with double quantization, else Blocks*4 of F32
	Nested   int64 // ceil(Blocks/nested block size)*4 of F32 with double quantization, else 0
}

// SizesFor returns the section sizes of n elements quantized in blocks of bs
// values, with double quantization in nested blocks of nbs absmax values, or
// without it when nbs is 0. bs must be positive.
func SizesFor(n int64, bs, nbs int) Sizes {
	b := int64(bs)
	s := Sizes{Elements: n, Blocks: (n + b - 1) / b, Packed: (n + 1) / 2}
	if nbs <= 0 {
		s.Absmax = s.Blocks * 4
		return s
	}
	s.Absmax = s.Blocks
	s.Nested = (s.Blocks + int64(nbs) - 1) / int64(nbs) * 4
	return s
}

// Total returns the payload length: Packed + Absmax + Nested.
func (s Sizes) Total() int64 { return s.Packed + s.Absmax + s.Nested }

// NestedBlocks returns the number of nested absmax values.
func (s Sizes) NestedBlocks() int64 { return s.Nested / 4 }
