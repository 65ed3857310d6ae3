package safetensors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxHeaderSize is the largest JSON header accepted, as in the Rust crate
// (MAX_HEADER_SIZE = 100_000_000).
const MaxHeaderSize = 100_000_000

// metadataKey is the header key that holds free-form string metadata.
const metadataKey = "__metadata__"

// TensorInfo describes one tensor of a safetensors file.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	// Begin and End are the header's data_offsets: the tensor's bytes relative
	// to the start of the data section.
	Begin, End int64
	// Offset is the absolute position of the tensor's first byte in its file.
	Offset int64
	// File is the path of the file holding the tensor, and Shard its position
	// in Checkpoint.Files (0 for a single file).
	File  string
	Shard int
}

// Size returns the tensor's payload size in bytes.
func (t TensorInfo) Size() int64 { return t.End - t.Begin }

// Header is a parsed and validated safetensors header.
type Header struct {
	// Metadata is __metadata__, nil when the header has none.
	Metadata map[string]string
	// Tensors are in data order (ascending data_offsets), the order the bytes
	// lie in the file.
	Tensors []TensorInfo
	// Len is the header length field: the JSON and its padding, in bytes. The
	// data section starts at 8+Len.
	Len int64
}

// DataOffset returns the absolute position of the data section.
func (h *Header) DataOffset() int64 { return 8 + h.Len }

// DataSize returns the size of the data section the tensors cover.
func (h *Header) DataSize() int64 {
	if len(h.Tensors) == 0 {
		return 0
	}
	return h.Tensors[len(h.Tensors)-1].End
}

// ParseHeader parses the JSON header text (the n bytes after the 8-byte length)
// and validates it the way the Rust crate does against a data section of
// dataLen bytes: every region contiguous from 0, each one exactly
// shape × dtype bytes, the last ending at dataLen. It never panics.
func ParseHeader(text []byte, dataLen int64) (*Header, error) {
	if !utf8.Valid(text) {
		return nil, fmt.Errorf("%w: header is not valid UTF-8", ErrHeader)
	}
	h, err := decodeHeader(text)
	if err != nil {
		return nil, err
	}
	h.Len = int64(len(text))
	if err := h.validate(dataLen); err != nil {
		return nil, err
	}
	for i := range h.Tensors {
		h.Tensors[i].Offset = h.DataOffset() + h.Tensors[i].Begin
	}
	return h, nil
}

// validate checks regions in data order, as Metadata::validate does, and then
// that they cover the data section exactly.
func (h *Header) validate(dataLen int64) error {
	slices.SortStableFunc(h.Tensors, func(a, b TensorInfo) int {
		if c := cmpInt(a.Begin, b.Begin); c != 0 {
			return c
		}
		return cmpInt(a.End, b.End) // ties (empty tensors) keep header order
	})
	var end int64
	prev := ""
	for _, t := range h.Tensors {
		switch {
		case t.End < t.Begin:
			return fmt.Errorf("tensor %q: %w: data_offsets [%d,%d] end before they start", t.Name, ErrOffsets, t.Begin, t.End)
		case t.Begin > end:
			return fmt.Errorf("tensor %q: %w: data_offsets [%d,%d] leave a gap of %d bytes after byte %d", t.Name, ErrOffsets, t.Begin, t.End, t.Begin-end, end)
		case t.Begin < end:
			return fmt.Errorf("tensor %q: %w: data_offsets [%d,%d] overlap tensor %q, which ends at %d", t.Name, ErrOffsets, t.Begin, t.End, prev, end)
		}
		want, err := ByteLen(t.DType, t.Shape)
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if want != t.Size() {
			return fmt.Errorf("tensor %q: %w: shape %v of %s is %d bytes but data_offsets [%d,%d] hold %d", t.Name, ErrShape, t.Shape, t.DType, want, t.Begin, t.End, t.Size())
		}
		end, prev = t.End, t.Name
	}
	if end > dataLen {
		for _, t := range h.Tensors {
			if t.End > dataLen {
				return fmt.Errorf("tensor %q: %w: data_offsets [%d,%d] run past the end of the data section (%d bytes)", t.Name, ErrTruncated, t.Begin, t.End, dataLen)
			}
		}
	}
	if end < dataLen {
		return fmt.Errorf("%w: %d bytes after the last tensor are not covered by any tensor", ErrOffsets, dataLen-end)
	}
	return nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// decodeHeader reads the header's JSON object token by token, so that
// duplicate keys, which a map would hide, are caught.
func decodeHeader(text []byte) (*Header, error) {
	d := json.NewDecoder(bytes.NewReader(text))
	d.UseNumber()
	if err := expectDelim(d, '{'); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	h := &Header{}
	seen := map[string]bool{}
	sawMeta := false
	for d.More() {
		key, err := stringToken(d)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHeader, err)
		}
		if key == metadataKey {
			if sawMeta {
				return nil, fmt.Errorf("%w: %s appears twice", ErrDuplicate, metadataKey)
			}
			sawMeta = true
			if h.Metadata, err = decodeMetadata(d); err != nil {
				return nil, err
			}
			continue
		}
		if seen[key] {
			return nil, fmt.Errorf("tensor %q: %w: the header names it twice", key, ErrDuplicate)
		}
		seen[key] = true
		t, err := decodeTensorInfo(d, key)
		if err != nil {
			return nil, err
		}
		h.Tensors = append(h.Tensors, t)
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	if tok, err := d.Token(); err != io.EOF {
		if err == nil {
			err = fmt.Errorf("unexpected %v after the header object", tok)
		}
		return nil, fmt.Errorf("%w: %v", ErrHeader, err)
	}
	// Anything but JSON whitespace after the object is rejected by serde_json,
	// and the decoder above has consumed only whitespace.
	return h, nil
}

func decodeMetadata(d *json.Decoder) (map[string]string, error) {
	tok, err := d.Token()
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrHeader, metadataKey, err)
	}
	if tok == nil {
		return nil, nil // serde reads null as None
	}
	if tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: %s must be an object of strings, got %v", ErrHeader, metadataKey, tok)
	}
	m := map[string]string{}
	for d.More() {
		k, err := stringToken(d)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrHeader, metadataKey, err)
		}
		v, err := stringToken(d)
		if err != nil {
			return nil, fmt.Errorf("%w: %s[%q]: values must be strings: %v", ErrHeader, metadataKey, k, err)
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: %s key %q appears twice", ErrDuplicate, metadataKey, k)
		}
		m[k] = v
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrHeader, metadataKey, err)
	}
	return m, nil
}

func decodeTensorInfo(d *json.Decoder, name string) (TensorInfo, error) {
	t := TensorInfo{Name: name}
	bad := func(format string, a ...any) (TensorInfo, error) {
		return TensorInfo{}, fmt.Errorf("tensor %q: %w: %s", name, ErrHeader, fmt.Sprintf(format, a...))
	}
	if err := expectDelim(d, '{'); err != nil {
		return bad("%v", err)
	}
	var haveDType, haveShape, haveOffsets bool
	for d.More() {
		field, err := stringToken(d)
		if err != nil {
			return bad("%v", err)
		}
		switch field {
		case "dtype":
			if haveDType {
				return bad("duplicate field dtype")
			}
			haveDType = true
			s, err := stringToken(d)
			if err != nil {
				return bad("dtype: %v", err)
			}
			t.DType = DType(s)
			if !t.DType.Valid() {
				return TensorInfo{}, fmt.Errorf("tensor %q: %w: %q", name, ErrDType, s)
			}
		case "shape":
			if haveShape {
				return bad("duplicate field shape")
			}
			haveShape = true
			if t.Shape, err = uintArray(d, -1); err != nil {
				if errors.Is(err, ErrShape) {
					return TensorInfo{}, fmt.Errorf("tensor %q: %w in shape", name, err)
				}
				return bad("shape: %v", err)
			}
		case "data_offsets":
			if haveOffsets {
				return bad("duplicate field data_offsets")
			}
			haveOffsets = true
			off, err := uintArray(d, 2)
			if err != nil {
				if errors.Is(err, ErrShape) {
					return TensorInfo{}, fmt.Errorf("tensor %q: %w: data_offsets: %v", name, ErrOffsets, strings.TrimPrefix(err.Error(), ErrShape.Error()+": "))
				}
				return bad("data_offsets: %v", err)
			}
			t.Begin, t.End = off[0], off[1]
		default:
			// serde ignores unknown fields of TensorInfo; so do we.
			if err := skipValue(d); err != nil {
				return bad("%s: %v", field, err)
			}
		}
	}
	if err := expectDelim(d, '}'); err != nil {
		return bad("%v", err)
	}
	switch {
	case !haveDType:
		return bad("missing field dtype")
	case !haveShape:
		return bad("missing field shape")
	case !haveOffsets:
		return bad("missing field data_offsets")
	}
	if t.Shape == nil {
		t.Shape = []int64{}
	}
	return t, nil
}

// uintArray reads an array of non-negative integers (u64 in the Rust crate);
// want < 0 accepts any length. A value beyond int64 fails with ErrShape.
func uintArray(d *json.Decoder, want int) ([]int64, error) {
	if err := expectDelim(d, '['); err != nil {
		return nil, err
	}
	var out []int64
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("want a non-negative integer, got %v", tok)
		}
		if strings.HasPrefix(string(num), "-") {
			return nil, fmt.Errorf("%w: negative value %s", ErrShape, num)
		}
		u, err := strconv.ParseUint(string(num), 10, 64)
		if err != nil {
			if e, ok := err.(*strconv.NumError); ok && e.Err == strconv.ErrRange {
				return nil, fmt.Errorf("%w: %s does not fit in 64 bits", ErrShape, num)
			}
			return nil, fmt.Errorf("want a non-negative integer, got %s", num)
		}
		if u > 1<<63-1 {
			return nil, fmt.Errorf("%w: %s is too large", ErrShape, num)
		}
		out = append(out, int64(u))
		if len(out) > 1<<20 {
			return nil, fmt.Errorf("array too long")
		}
	}
	if err := expectDelim(d, ']'); err != nil {
		return nil, err
	}
	if want >= 0 && len(out) != want {
		return nil, fmt.Errorf("want %d values, got %d", want, len(out))
	}
	return out, nil
}

func skipValue(d *json.Decoder) error {
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

func expectDelim(d *json.Decoder, want json.Delim) error {
	tok, err := d.Token()
	if err != nil {
		if err == io.EOF {
			return fmt.Errorf("unexpected end of JSON, want %q", string(want))
		}
		return err
	}
	if tok != want {
		return fmt.Errorf("want %q, got %v", string(want), tok)
	}
	return nil
}

func stringToken(d *json.Decoder) (string, error) {
	tok, err := d.Token()
	if err != nil {
		if err == io.EOF {
			return "", fmt.Errorf("unexpected end of JSON")
		}
		return "", err
	}
	s, ok := tok.(string)
	if !ok {
		return "", fmt.Errorf("want a string, got %v", tok)
	}
	return s, nil
}

// sortForWrite puts tensors in the order the Rust crate's prepare() writes
// them: dtype descending in Dtype enum order, then name ascending (byte-wise).
func sortForWrite[T any](ts []T, key func(*T) (DType, string)) {
	slices.SortStableFunc(ts, func(a, b T) int {
		da, na := key(&a)
		db, nb := key(&b)
		if c := rank(db) - rank(da); c != 0 {
			return c
		}
		return strings.Compare(na, nb)
	})
}

// EncodeHeader returns the header bytes serde_json writes for tensors already
// in data order with their offsets set: compact JSON, __metadata__ first (keys
// sorted; the Rust crate's HashMap order is random when there are several),
// then each tensor's {"dtype","shape","data_offsets"}, padded with spaces to a
// multiple of 8. The result excludes the 8-byte length.
func EncodeHeader(metadata map[string]string, tensors []TensorInfo) []byte {
	var b bytes.Buffer
	b.WriteByte('{')
	first := true
	if metadata != nil {
		b.WriteString(`"__metadata__":{`)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeSerdeString(&b, k)
			b.WriteByte(':')
			writeSerdeString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	var num []byte
	for _, t := range tensors {
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeSerdeString(&b, t.Name)
		b.WriteString(`:{"dtype":`)
		writeSerdeString(&b, string(t.DType))
		b.WriteString(`,"shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			num = strconv.AppendInt(num[:0], d, 10)
			b.Write(num)
		}
		b.WriteString(`],"data_offsets":[`)
		num = strconv.AppendInt(num[:0], t.Begin, 10)
		b.Write(num)
		b.WriteByte(',')
		num = strconv.AppendInt(num[:0], t.End, 10)
		b.Write(num)
		b.WriteString("]}")
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	return b.Bytes()
}

// writeSerdeString writes s as serde_json does: only '"', '\\' and control
// characters are escaped (\b \t \n \f \r, else \u00xx in lower-case hex);
// everything else, non-ASCII and DEL included, is written as is.
func writeSerdeString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		b.WriteString(s[start:i])
		switch c {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\b':
			b.WriteString(`\b`)
		case '\t':
			b.WriteString(`\t`)
		case '\n':
			b.WriteString(`\n`)
		case '\f':
			b.WriteString(`\f`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		}
		start = i + 1
	}
	b.WriteString(s[start:])
	b.WriteByte('"')
}
