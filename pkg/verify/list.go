package verify

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Listing is what --list shows: a stream's header and tensor table, or a
// checkpoint's tensors as a stream would carry them.
type Listing struct {
	Format   string               `json:"format,omitempty"` // stream format version, "" for a checkpoint
	Stages   []tensorstream.Stage `json:"stages,omitempty"`
	Sections map[string]any       `json:"sections,omitempty"`
	Tensors  []ListedTensor       `json:"tensors"`
	Bytes    int64                `json:"bytes"` // payload bytes in all
}

// ListedTensor is one row of a listing.
type ListedTensor struct {
	Name        string                   `json:"name"`
	DType       string                   `json:"dtype"`
	Shape       []int64                  `json:"shape"`
	Encoding    string                   `json:"encoding"`
	Quant       *tensorstream.QuantState `json:"quant,omitempty"`
	Bytes       int64                    `json:"bytes"`
	NoData      bool                     `json:"nodata,omitempty"`
	Annotations map[string]any           `json:"annotations,omitempty"`
}

// ListStream reads a stream to its end record and lists it; payloads are
// skipped (the reader still verifies their checksums).
func ListStream(in io.Reader) (*Listing, error) {
	r := tensorstream.NewReader(in)
	h, err := r.Header()
	if err != nil {
		return nil, fmt.Errorf("%w: stream: %w", ErrInput, err)
	}
	l := &Listing{Format: fmt.Sprintf("%d.%d", h.Major, h.Minor), Stages: h.Stages, Sections: decodeRaw(h.Sections), Tensors: []ListedTensor{}}
	for {
		t, err := r.Next()
		if err == io.EOF {
			return l, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: stream: %w", ErrInput, err)
		}
		l.add(t)
	}
}

// ListCheckpoint lists a checkpoint's tensors as a stream would carry them.
func ListCheckpoint(path string) (*Listing, error) {
	path, err := locate("checkpoint", path, "")
	if err != nil {
		return nil, err
	}
	ck, err := checkpoint.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: checkpoint: %w", ErrInput, err)
	}
	defer ck.Close()
	l := &Listing{Tensors: []ListedTensor{}}
	if ck.QuantConfig != nil {
		l.Sections = map[string]any{"quantization_config": ck.QuantConfig}
	}
	for _, t := range ck.Tensors {
		l.add(t)
	}
	return l, nil
}

func (l *Listing) add(t *tensorstream.Tensor) {
	l.Tensors = append(l.Tensors, ListedTensor{Name: t.Name, DType: string(t.DType), Shape: t.Shape, Encoding: string(t.Encoding),
		Quant: t.Quant, Bytes: t.Size, NoData: t.NoData, Annotations: decodeRaw(t.Annotations)})
	if !t.NoData {
		l.Bytes += t.Size
	}
}

// decodeRaw decodes msgpack values for display; a value that does not decode
// is shown as its size.
func decodeRaw(m tensorstream.RawMap) map[string]any {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]any, len(m))
	for k, raw := range m {
		var v any
		if _, err := m.Decode(k, &v); err != nil {
			out[k] = fmt.Sprintf("<%d bytes of msgpack>", len(raw))
			continue
		}
		out[k] = tensorstream.JSONValue(v)
	}
	return out
}

// WriteJSON writes the listing as one indented JSON object.
func (l *Listing) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(l)
}

// WriteTable writes the listing for a person.
func (l *Listing) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	if l.Format != "" {
		ew.printf("stream format %s\n", l.Format)
	}
	for _, s := range l.Stages {
		ew.printf("stage %s %s %s\n", s.Name, s.Version, strings.Join(s.Args, " "))
	}
	keys := make([]string, 0, len(l.Sections))
	for k := range l.Sections {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		b, _ := json.Marshal(l.Sections[k])
		s := string(b)
		if len(s) > 120 {
			s = fmt.Sprintf("%s... (%d bytes as JSON)", s[:100], len(b))
		}
		ew.printf("section %s: %s\n", k, s)
	}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "name\tdtype\tshape\tencoding\tbytes\tannotations\n")
	for _, t := range l.Tensors {
		enc := t.Encoding
		if q := t.Quant; q != nil {
			enc = fmt.Sprintf("%s/%d", q.Type, q.BlockSize)
			if q.DoubleQuant {
				enc += "+dq"
			}
		}
		bytes := fmt.Sprint(t.Bytes)
		if t.NoData {
			bytes += " (no data)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.DType, shapeString(t.Shape), enc, bytes, annString(t.Annotations))
	}
	tw.Flush()
	ew.printf("%d tensors, %d payload bytes\n", len(l.Tensors), l.Bytes)
	return ew.err
}

func annString(m map[string]any) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%v", k, m[k])
	}
	return strings.Join(parts, " ")
}
