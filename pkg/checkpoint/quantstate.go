package checkpoint

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/nf4pipe/nf4pipe/pkg/dtype"
	"github.com/nf4pipe/nf4pipe/pkg/pyjson"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// bnbDType reports whether bitsandbytes quantizes elements of type d.
func bnbDType(d tensorstream.DType) bool {
	return d == tensorstream.BF16 || d == tensorstream.F16 || d == tensorstream.F32
}

// TorchDTypeName returns the torch name of a dtype bitsandbytes quantizes
// ("bfloat16", "float16", "float32"), as its quant state JSON writes it:
// str(torch.bfloat16).strip("torch.") and so on.
func TorchDTypeName(d tensorstream.DType) (string, error) {
	if !bnbDType(d) {
		return "", fmt.Errorf("%w: %s (bitsandbytes quantizes BF16, F16 and F32)", ErrDType, d)
	}
	return d.TorchName(), nil
}

func dtypeFromTorch(name string) (tensorstream.DType, bool) {
	d, ok := dtype.FromTorch(name)
	return d, ok && bnbDType(d)
}

// QuantStateJSON returns the bytes bitsandbytes stores in a 4-bit weight's
// "quant_state.bitsandbytes__<type>" entry for t: json.dumps of the non-tensor
// part of QuantState.as_dict, in its key order —
//
//	{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [128, 256],
//	 "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.0505...}
//
// (one line; the nested keys only with double quantization). The offset is
// written as Python writes the float32 value widened to float64, so t's payload
// must have been read (or written) for t.Quant.NestedOffset to be known.
func QuantStateJSON(t *tensorstream.Tensor) ([]byte, error) {
	q := t.Quant
	if t.Encoding != tensorstream.BNB4 || q == nil {
		return nil, fmt.Errorf("tensor %q: %w: encoding %q has no quant state", t.Name, ErrQuantState, t.Encoding)
	}
	if _, err := qtype.Lookup(q.Type); err != nil {
		return nil, fmt.Errorf("tensor %q: %w: %w", t.Name, ErrQuantState, err)
	}
	dt, err := TorchDTypeName(t.DType)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	b := []byte(`{"quant_type": `)
	b = pyjson.AppendString(b, q.Type)
	b = append(b, `, "blocksize": `...)
	b = strconv.AppendInt(b, int64(q.BlockSize), 10)
	b = append(b, `, "dtype": `...)
	b = pyjson.AppendString(b, dt)
	b = append(b, `, "shape": [`...)
	for i, d := range t.Shape {
		if i > 0 {
			b = append(b, ", "...)
		}
		b = strconv.AppendInt(b, d, 10)
	}
	b = append(b, ']')
	if q.DoubleQuant {
		b = append(b, `, "nested_blocksize": `...)
		b = strconv.AppendInt(b, int64(q.NestedBlockSize), 10)
		b = append(b, `, "nested_dtype": "float32", "nested_offset": `...)
		b = append(b, pyjson.Float(float64(q.NestedOffset))...)
	}
	return append(b, '}'), nil
}

// QuantState is a parsed quant_state JSON object.
type QuantState struct {
	QuantType       string             // a name of pkg/qtype's registry
	BlockSize       int                // elements per absmax block
	DType           tensorstream.DType // the original tensor's dtype
	Shape           []int64            // the original tensor's shape
	Nested          bool               // double quantization: the nested_* keys are present
	NestedBlockSize int
	NestedOffset    float32
}

// maxQuantStateJSON bounds the quant_state entry read into memory.
const maxQuantStateJSON = 1 << 16

// ParseQuantStateJSON parses the bytes of a quant_state entry. It requires
// quant_type, blocksize, dtype and shape, and either all or none of
// nested_blocksize, nested_dtype ("float32") and nested_offset; other keys are
// ignored, as bitsandbytes ignores them.
func ParseQuantStateJSON(data []byte) (*QuantState, error) {
	if len(data) > maxQuantStateJSON {
		return nil, fmt.Errorf("%w: %d bytes of JSON, over the %d-byte limit", ErrQuantState, len(data), maxQuantStateJSON)
	}
	var raw struct {
		QuantType       *string          `json:"quant_type"`
		BlockSize       *int             `json:"blocksize"`
		DType           *string          `json:"dtype"`
		Shape           *[]int64         `json:"shape"`
		NestedBlockSize *int             `json:"nested_blocksize"`
		NestedDType     *string          `json:"nested_dtype"`
		NestedOffset    *json.RawMessage `json:"nested_offset"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrQuantState, err)
	}
	if raw.QuantType == nil || raw.BlockSize == nil || raw.DType == nil || raw.Shape == nil {
		return nil, fmt.Errorf("%w: quant_type, blocksize, dtype and shape are all required", ErrQuantState)
	}
	q := &QuantState{QuantType: *raw.QuantType, BlockSize: *raw.BlockSize, Shape: *raw.Shape}
	if _, err := qtype.Lookup(q.QuantType); err != nil {
		return nil, fmt.Errorf("%w: quant_type: %w", ErrQuantState, err)
	}
	if err := qtype.CheckBlockSize(q.BlockSize); err != nil {
		return nil, fmt.Errorf("%w: blocksize: %w", ErrQuantState, err)
	}
	d, ok := dtypeFromTorch(*raw.DType)
	if !ok {
		return nil, fmt.Errorf("%w: dtype %q is not bfloat16, float16 or float32", ErrQuantState, *raw.DType)
	}
	q.DType = d
	n := int64(1)
	for _, s := range q.Shape {
		if s < 0 || (s > 0 && n > math.MaxInt64/8/s) {
			return nil, fmt.Errorf("%w: shape %v", ErrQuantState, q.Shape)
		}
		n *= s
	}
	nested := 0
	for _, p := range []bool{raw.NestedBlockSize != nil, raw.NestedDType != nil, raw.NestedOffset != nil} {
		if p {
			nested++
		}
	}
	switch nested {
	case 0:
		return q, nil
	case 3:
	default:
		return nil, fmt.Errorf("%w: nested_blocksize, nested_dtype and nested_offset go together", ErrQuantState)
	}
	q.Nested, q.NestedBlockSize = true, *raw.NestedBlockSize
	if err := qtype.CheckNestedBlockSize(q.NestedBlockSize); err != nil {
		return nil, fmt.Errorf("%w: nested_blocksize: %w", ErrQuantState, err)
	}
	if *raw.NestedDType != "float32" {
		return nil, fmt.Errorf("%w: nested_dtype %q is not float32", ErrQuantState, *raw.NestedDType)
	}
	var off float64
	if err := json.Unmarshal(*raw.NestedOffset, &off); err != nil {
		return nil, fmt.Errorf("%w: nested_offset %s is not a number", ErrQuantState, *raw.NestedOffset)
	}
	q.NestedOffset = float32(off)
	if float64(q.NestedOffset) != off {
		return nil, fmt.Errorf("%w: nested_offset %s is not a float32 value", ErrQuantState, *raw.NestedOffset)
	}
	return q, nil
}

// StreamQuant returns the stream's description of q.
func (q *QuantState) StreamQuant() *tensorstream.QuantState {
	s := &tensorstream.QuantState{Type: q.QuantType, BlockSize: q.BlockSize, DoubleQuant: q.Nested}
	if q.Nested {
		s.NestedBlockSize, s.NestedOffset = q.NestedBlockSize, q.NestedOffset
	}
	return s
}
