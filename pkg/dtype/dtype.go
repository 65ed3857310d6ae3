// Package dtype is the one definition of the element types that tensors carry,
// named as safetensors names them. The stream (pkg/tensorstream), the
// safetensors reader and writer (pkg/safetensors) and the quantizer (pkg/quant)
// all use this DType; each says which of them it accepts.
package dtype

// DType names an element type exactly as a safetensors header spells it.
type DType string

// The element types of the safetensors format. The first fifteen are those a
// tensor stream carries (docs/tensorstream.md); the others exist in the format
// (newer releases of the Rust crate) and are read and written for completeness.
const (
	F64    DType = "F64"
	F32    DType = "F32"
	F16    DType = "F16"
	BF16   DType = "BF16"
	F8E4M3 DType = "F8_E4M3"
	F8E5M2 DType = "F8_E5M2"
	I64    DType = "I64"
	I32    DType = "I32"
	I16    DType = "I16"
	I8     DType = "I8"
	U64    DType = "U64"
	U32    DType = "U32"
	U16    DType = "U16"
	U8     DType = "U8"
	Bool   DType = "BOOL"

	F4         DType = "F4"
	F6E2M3     DType = "F6_E2M3"
	F6E3M2     DType = "F6_E3M2"
	F8E8M0     DType = "F8_E8M0"
	F8E4M3FNUZ DType = "F8_E4M3FNUZ"
	F8E5M2FNUZ DType = "F8_E5M2FNUZ"
	C64        DType = "C64"
)

type info struct {
	bits  int  // width of one element
	float bool // a floating-point type
	torch string
}

var types = map[DType]info{
	F64: {64, true, "float64"}, F32: {32, true, "float32"}, F16: {16, true, "float16"},
	BF16: {16, true, "bfloat16"}, F8E4M3: {8, true, "float8_e4m3fn"}, F8E5M2: {8, true, "float8_e5m2"},
	I64: {64, false, "int64"}, I32: {32, false, "int32"}, I16: {16, false, "int16"}, I8: {8, false, "int8"},
	U64: {64, false, "uint64"}, U32: {32, false, "uint32"}, U16: {16, false, "uint16"}, U8: {8, false, "uint8"},
	Bool: {8, false, "bool"},
	F4:   {4, true, "float4_e2m1fn_x2"}, F6E2M3: {6, true, ""}, F6E3M2: {6, true, ""},
	F8E8M0: {8, true, "float8_e8m0fnu"}, F8E4M3FNUZ: {8, true, "float8_e4m3fnuz"},
	F8E5M2FNUZ: {8, true, "float8_e5m2fnuz"}, C64: {64, false, "complex64"},
}

// Valid reports whether d is an element type of the safetensors format.
func (d DType) Valid() bool { _, ok := types[d]; return ok }

// Bits returns the width of one element in bits, or 0 for an unknown type.
func (d DType) Bits() int { return types[d].bits }

// Size returns the size of one element in bytes, or 0 for an unknown type or
// one narrower than a byte (F4, F6_*).
func (d DType) Size() int {
	b := types[d].bits
	if b%8 != 0 {
		return 0
	}
	return b / 8
}

// IsFloat reports whether d is a floating-point type.
func (d DType) IsFloat() bool { return types[d].float }

// TorchName returns the name of d's torch dtype without the "torch." prefix
// ("bfloat16"), or "" when torch has none.
func (d DType) TorchName() string { return types[d].torch }

// torchAliases are the other names torch gives some dtypes (torch.half is
// torch.float16), which configs also use.
var torchAliases = map[string]DType{"half": F16, "float": F32}

// FromTorch returns the DType whose torch name is name ("bfloat16" or "half"
// gives BF16 or F16).
func FromTorch(name string) (DType, bool) {
	if d, ok := torchAliases[name]; ok {
		return d, true
	}
	if name == "" {
		return "", false
	}
	for d, i := range types {
		if i.torch == name {
			return d, true
		}
	}
	return "", false
}
