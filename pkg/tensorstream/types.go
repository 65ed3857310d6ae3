package tensorstream

import (
	"fmt"
	"math"
	"reflect"
	"sort"

	"github.com/nf4pipe/nf4pipe/pkg/dtype"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/vmihailenco/msgpack/v5"
)

// Format version. A reader accepts any minor version of its own major version and
// refuses a newer major version with ErrVersion.
const (
	MajorVersion = 1
	MinorVersion = 0
)

// DType names an element type the way safetensors does; it is dtype.DType,
// the one definition every package shares.
type DType = dtype.DType

// The element types a stream may carry (docs/tensorstream.md); CanCarry
// reports whether a type is one of them.
const (
	F64    = dtype.F64
	F32    = dtype.F32
	F16    = dtype.F16
	BF16   = dtype.BF16
	F8E4M3 = dtype.F8E4M3
	F8E5M2 = dtype.F8E5M2
	I64    = dtype.I64
	I32    = dtype.I32
	I16    = dtype.I16
	I8     = dtype.I8
	U64    = dtype.U64
	U32    = dtype.U32
	U16    = dtype.U16
	U8     = dtype.U8
	Bool   = dtype.Bool
)

// CanCarry reports whether a stream carries elements of type d: the fifteen
// types above, a property of format version 1.
func CanCarry(d DType) bool {
	switch d {
	case F64, F32, F16, BF16, F8E4M3, F8E5M2, I64, I32, I16, I8, U64, U32, U16, U8, Bool:
		return true
	}
	return false
}

// Encoding says how a tensor's payload represents its elements.
type Encoding string

const (
	// Raw is the elements of DType in row-major order, little-endian.
	Raw Encoding = "raw"
	// BNB4 is bitsandbytes 4-bit blockwise quantization, described by Tensor.Quant.
	BNB4 Encoding = "bnb4"
)

// QuantState describes a BNB4 payload. Its sections follow one another:
//
//	packed   ceil(n/2) bytes, two 4-bit codes a byte, the first in the high nibble
//	absmax   one byte a block (U8 codes) with DoubleQuant, else one float32 a block
//	nested   one float32 per NestedBlockSize absmax values, with DoubleQuant only
//
// where n is the tensor's element count and floats are little-endian.
type QuantState struct {
	Type            string  `msgpack:"type"`      // a name of pkg/qtype's registry: "nf4", "fp4"
	BlockSize       int     `msgpack:"blocksize"` // elements per absmax block
	DoubleQuant     bool    `msgpack:"double_quant"`
	NestedBlockSize int     `msgpack:"nested_blocksize,omitempty"` // absmax values per nested block
	NestedOffset    float32 `msgpack:"nested_offset"`              // mean absmax; known after the payload
}

// Blocks returns the number of quantization blocks for n elements.
func (q *QuantState) Blocks(n int64) int64 { return q.sizes(n).Blocks }

// Sections returns the byte lengths of the packed, absmax and nested sections of a
// payload for n elements.
func (q *QuantState) Sections(n int64) (packed, absmax, nested int64) {
	s := q.sizes(n)
	return s.Packed, s.Absmax, s.Nested
}

// PayloadSize returns the total payload length for n elements.
func (q *QuantState) PayloadSize(n int64) int64 { return q.sizes(n).Total() }

// sizes asks the registry of quant types for the section sizes.
func (q *QuantState) sizes(n int64) qtype.Sizes {
	nbs := 0
	if q.DoubleQuant {
		nbs = q.NestedBlockSize
	}
	return qtype.SizesFor(n, q.BlockSize, nbs)
}

func (q *QuantState) validate() error {
	if _, err := qtype.Lookup(q.Type); err != nil {
		return err
	}
	if err := qtype.CheckBlockSize(q.BlockSize); err != nil {
		return err
	}
	if q.DoubleQuant {
		return qtype.CheckNestedBlockSize(q.NestedBlockSize)
	}
	return nil
}

// Tensor is a tensor's descriptor: everything but its payload.
type Tensor struct {
	Name     string      `msgpack:"name"`
	DType    DType       `msgpack:"dtype"` // the logical element type, also for BNB4
	Shape    []int64     `msgpack:"shape"` // the logical shape, also for BNB4
	Encoding Encoding    `msgpack:"encoding"`
	Quant    *QuantState `msgpack:"quant,omitempty"` // set for BNB4 only
	// Size is the payload length in bytes, also when NoData is set.
	Size int64 `msgpack:"size"`
	// NoData marks a descriptor without payload, as detect writes from a config
	// alone so that plan can run before the weights are downloaded.
	NoData bool `msgpack:"nodata,omitempty"`
	// Annotations are free-form facts added by stages (role, layer, quantize,
	// reason, device, ...). Values stay encoded, so a stage passes on those it
	// does not know byte for byte.
	Annotations RawMap `msgpack:"ann,omitempty"`
	// Checksum is the CRC-32C (Castagnoli) of the payload. The reader sets it
	// once the payload has been read; the writer computes it.
	Checksum uint32 `msgpack:"-"`
}

// Well-known annotation keys.
const (
	AnnRole     = "role"     // string: attn_q, mlp_down, embedding, ...
	AnnLayer    = "layer"    // int: decoder layer index, -1 for none
	AnnQuantize = "quantize" // bool: the policy quantizes this tensor
	AnnReason   = "reason"   // string: why the policy decided so
	AnnDevice   = "device"   // string: the device the plan assigned, e.g. "cuda:0"
	AnnStore    = "store"    // string: the dtype a kept tensor is to be written in, e.g. "F32"
)

// NumElements returns the product of the shape (1 for a scalar).
func (t *Tensor) NumElements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// ExpectedSize returns the payload length the encoding implies for the shape.
func (t *Tensor) ExpectedSize() int64 {
	n := t.NumElements()
	if t.Encoding == BNB4 && t.Quant != nil {
		return t.Quant.PayloadSize(n)
	}
	return n * int64(t.DType.Size())
}

// Ann decodes the annotation key into v and reports whether it was present.
func (t *Tensor) Ann(key string, v any) (bool, error) {
	ok, err := t.Annotations.Decode(key, v)
	if err != nil {
		return true, fmt.Errorf("tensorstream: annotation %q of %q: %w", key, t.Name, err)
	}
	return ok, nil
}

// SetAnn encodes v as the annotation key.
func (t *Tensor) SetAnn(key string, v any) error {
	raw, err := marshal(v)
	if err != nil {
		return fmt.Errorf("tensorstream: annotation %q of %q: %w", key, t.Name, err)
	}
	if t.Annotations == nil {
		t.Annotations = make(RawMap)
	}
	t.Annotations[key] = raw
	return nil
}

// AnnString returns a string annotation, or "" when absent or not a string.
func (t *Tensor) AnnString(key string) string {
	var s string
	if ok, err := t.Ann(key, &s); !ok || err != nil {
		return ""
	}
	return s
}

// AnnBool returns a bool annotation, or false when absent or not a bool.
func (t *Tensor) AnnBool(key string) bool {
	var b bool
	if ok, err := t.Ann(key, &b); !ok || err != nil {
		return false
	}
	return b
}

// AnnInt returns an integer annotation and whether it was present and an integer.
func (t *Tensor) AnnInt(key string) (int64, bool) {
	var n int64
	if ok, err := t.Ann(key, &n); !ok || err != nil {
		return 0, false
	}
	return n, true
}

// Clone returns a deep copy of the descriptor.
func (t *Tensor) Clone() *Tensor {
	c := *t
	c.Shape = append([]int64(nil), t.Shape...)
	if t.Quant != nil {
		q := *t.Quant
		c.Quant = &q
	}
	if t.Annotations != nil {
		c.Annotations = make(RawMap, len(t.Annotations))
		for k, v := range t.Annotations {
			c.Annotations[k] = append([]byte(nil), v...)
		}
	}
	return &c
}

func (t *Tensor) validate(lim Limits) error {
	if t.Name == "" || len(t.Name) > lim.MaxName {
		return fmt.Errorf("name length %d is not in [1, %d]", len(t.Name), lim.MaxName)
	}
	if !CanCarry(t.DType) {
		return fmt.Errorf("unknown dtype %q", t.DType)
	}
	if len(t.Shape) > lim.MaxDims {
		return fmt.Errorf("%d dimensions exceed the limit of %d", len(t.Shape), lim.MaxDims)
	}
	n := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("negative dimension in shape %v", t.Shape)
		}
		if d != 0 && n > math.MaxInt64/8/d {
			return fmt.Errorf("shape %v overflows", t.Shape)
		}
		n *= d
	}
	switch t.Encoding {
	case Raw:
		if t.Quant != nil {
			return fmt.Errorf("raw encoding with a quant state")
		}
	case BNB4:
		if t.Quant == nil {
			return fmt.Errorf("bnb4 encoding without a quant state")
		}
		if err := t.Quant.validate(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unknown encoding %q", t.Encoding)
	}
	if want := t.ExpectedSize(); t.Size != want {
		return fmt.Errorf("payload size %d, but %s %v %s needs %d", t.Size, t.DType, t.Shape, t.Encoding, want)
	}
	if t.Size > lim.MaxTensor {
		return fmt.Errorf("payload size %d exceeds the limit of %d", t.Size, lim.MaxTensor)
	}
	return nil
}

// RawMap holds values that stay encoded (msgpack, docs/tensorstream.md), so
// that stages pass on those they do not understand byte for byte; Header.Get
// and Tensor.Ann decode them. It encodes with its keys sorted, so equal maps
// give equal bytes.
type RawMap map[string][]byte

// Decode decodes the value of key into v (a pointer; an *any takes any value)
// and reports whether key was present.
func (m RawMap) Decode(key string, v any) (bool, error) {
	raw, ok := m[key]
	if !ok {
		return false, nil
	}
	return true, msgpack.Unmarshal(raw, v)
}

// The msgpack codec of RawMap is registered rather than written as methods,
// so that no msgpack type appears in the package's API.
func init() {
	msgpack.Register(RawMap(nil), encodeRawMap, decodeRawMap)
}

func encodeRawMap(enc *msgpack.Encoder, v reflect.Value) error {
	m := v.Interface().(RawMap)
	if m == nil {
		return enc.EncodeNil()
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if err := enc.EncodeMapLen(len(keys)); err != nil {
		return err
	}
	for _, k := range keys {
		if err := enc.EncodeString(k); err != nil {
			return err
		}
		if err := enc.Encode(msgpack.RawMessage(m[k])); err != nil {
			return err
		}
	}
	return nil
}

func decodeRawMap(dec *msgpack.Decoder, v reflect.Value) error {
	n, err := dec.DecodeMapLen()
	if err != nil {
		return err
	}
	if n == -1 {
		v.Set(reflect.Zero(v.Type()))
		return nil
	}
	m := make(RawMap, n)
	for range n {
		k, err := dec.DecodeString()
		if err != nil {
			return err
		}
		raw, err := dec.DecodeRaw()
		if err != nil {
			return err
		}
		m[k] = raw
	}
	v.Set(reflect.ValueOf(m))
	return nil
}

// Stage records one program that produced or transformed the stream.
type Stage struct {
	Name    string   `msgpack:"name"`
	Version string   `msgpack:"version"`
	Args    []string `msgpack:"args,omitempty"`
}

// Header is the stream's first record. Stages append themselves; sections are
// added by stages and passed on untouched by those that do not know them.
type Header struct {
	// Major and Minor are the format version the stream was written with; the
	// writer always writes its own.
	Major    int     `msgpack:"-"`
	Minor    int     `msgpack:"-"`
	Stages   []Stage `msgpack:"stages"`
	Sections RawMap  `msgpack:"sections,omitempty"`
}

// Well-known header sections.
const (
	SectionSource   = "source"   // detect: where the model came from
	SectionModel    = "model"    // detect: the model facts
	SectionPlan     = "plan"     // plan: devices, settings, predicted memory
	SectionQuantize = "quantize" // quantize: the settings used
	SectionTensors  = "tensors"  // detect, quantize: the descriptors to come
)

// AddStage appends a stage record.
func (h *Header) AddStage(name, version string, args []string) {
	h.Stages = append(h.Stages, Stage{Name: name, Version: version, Args: args})
}

// Get decodes section into v and reports whether it was present.
func (h *Header) Get(section string, v any) (bool, error) {
	ok, err := h.Sections.Decode(section, v)
	if err != nil {
		return true, fmt.Errorf("tensorstream: header section %q: %w", section, err)
	}
	return ok, nil
}

// Set encodes v as section, replacing an earlier value of the same section.
func (h *Header) Set(section string, v any) error {
	raw, err := marshal(v)
	if err != nil {
		return fmt.Errorf("tensorstream: header section %q: %w", section, err)
	}
	if h.Sections == nil {
		h.Sections = make(RawMap)
	}
	h.Sections[section] = raw
	return nil
}

// End is the stream's last record.
type End struct {
	Tensors int64 `msgpack:"tensors"` // tensor records in the stream
	Bytes   int64 `msgpack:"bytes"`   // payload bytes in the stream
}

// trailer follows each tensor's payload.
type trailer struct {
	Size     int64       `msgpack:"size"`
	Checksum uint32      `msgpack:"crc32c"`
	Quant    *QuantState `msgpack:"quant,omitempty"`
}
