package checkpoint

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Suffixes of the entries bitsandbytes stores beside a 4-bit weight W (from
// Linear4bit._save_to_state_dict and QuantState.as_dict(packed=True)).
const (
	SuffixAbsmax         = ".absmax"
	SuffixQuantMap       = ".quant_map"
	SuffixNestedAbsmax   = ".nested_absmax"
	SuffixNestedQuantMap = ".nested_quant_map"
	// SuffixQuantState is followed by the quant type: ".quant_state.bitsandbytes__nf4".
	SuffixQuantState = ".quant_state.bitsandbytes__"
)

// Part says where a state-dict entry's bytes come from.
type Part int

const (
	PartRaw            Part = iota // a raw tensor's payload
	PartPacked                     // the packed codes section of a bnb4 payload
	PartAbsmax                     // the absmax section
	PartQuantMap                   // the 16-entry code book (a constant)
	PartNestedAbsmax               // the nested absmax section (double quant)
	PartNestedQuantMap             // the 256-entry nested map (a constant)
	PartQuantState                 // the quant state JSON bytes
)

// Entry is one tensor of the state dict that a stream tensor becomes.
type Entry struct {
	Name  string
	DType safetensors.DType
	Shape []int64
	Part  Part
}

// Size returns the entry's byte length.
func (e Entry) Size() int64 {
	n, _ := safetensors.ByteLen(e.DType, e.Shape)
	return n
}

// Entries returns the state-dict entries t becomes, in the order transformers
// writes them: a raw tensor is itself; a bnb4 weight W is W (U8 [ceil(n/2), 1]),
// W.absmax (U8 codes with double quantization, else F32), W.quant_map (F32 [16]),
// W.nested_absmax and W.nested_quant_map (F32, double quantization only) and
// W.quant_state.bitsandbytes__<type> (U8 JSON bytes). The last one's length
// depends on t.Quant.NestedOffset as it stands when Entries is called.
func Entries(t *tensorstream.Tensor) ([]Entry, error) {
	if t.Encoding == tensorstream.Raw {
		if !t.DType.Valid() {
			return nil, fmt.Errorf("tensor %q: %w: %s", t.Name, ErrDType, t.DType)
		}
		return []Entry{{t.Name, t.DType, append([]int64(nil), t.Shape...), PartRaw}}, nil
	}
	if t.Encoding != tensorstream.BNB4 || t.Quant == nil {
		return nil, fmt.Errorf("tensor %q: %w: encoding %q", t.Name, ErrQuantState, t.Encoding)
	}
	js, err := QuantStateJSON(t)
	if err != nil {
		return nil, err
	}
	q := t.Quant
	n := t.NumElements()
	packed, absmax, nested := q.Sections(n)
	out := []Entry{{t.Name, safetensors.U8, []int64{packed, 1}, PartPacked}}
	if q.DoubleQuant {
		out = append(out,
			Entry{t.Name + SuffixAbsmax, safetensors.U8, []int64{absmax}, PartAbsmax},
			Entry{t.Name + SuffixQuantMap, safetensors.F32, []int64{16}, PartQuantMap},
			Entry{t.Name + SuffixNestedAbsmax, safetensors.F32, []int64{nested / 4}, PartNestedAbsmax},
			Entry{t.Name + SuffixNestedQuantMap, safetensors.F32, []int64{256}, PartNestedQuantMap})
	} else {
		out = append(out,
			Entry{t.Name + SuffixAbsmax, safetensors.F32, []int64{absmax / 4}, PartAbsmax},
			Entry{t.Name + SuffixQuantMap, safetensors.F32, []int64{16}, PartQuantMap})
	}
	out = append(out, Entry{t.Name + SuffixQuantState + q.Type, safetensors.U8, []int64{int64(len(js))}, PartQuantState})
	return out, nil
}

// guessedOffset stands for a nested offset not known yet when a quant-state
// JSON's length is guessed: a typical mean absmax, whose Python repr has the
// usual length of such values (18 characters).
const guessedOffset float32 = 0.01

// ExpectedEntries returns the entries of Entries for a descriptor announced
// ahead of its payload, as a safetensors.Writer expects them: every size
// exact but that of the quant-state JSON with double quantization, whose
// nested offset is known only at the tensor's end; its length is guessed.
func ExpectedEntries(t *tensorstream.Tensor) ([]safetensors.Expected, error) {
	g := t
	if t.Encoding == tensorstream.BNB4 && t.Quant != nil && t.Quant.DoubleQuant {
		g = t.Clone()
		g.Quant.NestedOffset = guessedOffset
	}
	entries, err := Entries(g)
	if err != nil {
		return nil, err
	}
	out := make([]safetensors.Expected, len(entries))
	for i, e := range entries {
		exact := !(e.Part == PartQuantState && g != t)
		out[i] = safetensors.Expected{TensorSpec: safetensors.TensorSpec{Name: e.Name, DType: e.DType, Shape: e.Shape}, Exact: exact}
	}
	return out, nil
}

// Sink receives state-dict entries: safetensors.Writer, safetensors.CheckpointWriter
// and DirWriter all are one. Add reads exactly the entry's byte length from r.
type Sink interface {
	Add(name string, dtype safetensors.DType, shape []int64, r io.Reader) error
}

// WriteTensor writes the state-dict entries of t to dst, reading t's payload
// (t.Size bytes in the stream's layout) from payload, in the order of Entries.
// For a bnb4 tensor the quant state JSON is made after the payload has been
// read to its end, so a tensorstream.Reader has filled in the nested offset
// from the tensor's trailer by then.
func WriteTensor(dst Sink, t *tensorstream.Tensor, payload io.Reader) error {
	if t.NoData {
		return fmt.Errorf("tensor %q: %w: a descriptor without payload (a config-only stream) cannot be written", t.Name, ErrLayout)
	}
	entries, err := Entries(t)
	if err != nil {
		return err
	}
	for _, e := range entries {
		var r io.Reader
		switch e.Part {
		case PartRaw, PartPacked, PartAbsmax, PartNestedAbsmax:
			r = io.LimitReader(payload, e.Size())
		case PartQuantMap:
			info, err := qtype.Lookup(t.Quant.Type)
			if err != nil {
				return fmt.Errorf("tensor %q: %w: %w", t.Name, ErrQuantState, err)
			}
			r = bytes.NewReader(f32Bytes(info.Map[:]))
		case PartNestedQuantMap:
			r = bytes.NewReader(f32Bytes(quant.NestedMap[:]))
		case PartQuantState:
			if err := expectEnd(payload); err != nil {
				return fmt.Errorf("tensor %q: %w", t.Name, err)
			}
			js, err := QuantStateJSON(t) // the offset is known now
			if err != nil {
				return err
			}
			r, e.Shape = bytes.NewReader(js), []int64{int64(len(js))}
		}
		if err := dst.Add(e.Name, e.DType, e.Shape, r); err != nil {
			return err
		}
	}
	if entries[0].Part == PartRaw {
		if err := expectEnd(payload); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
	}
	return nil
}

// expectEnd reads the payload to its end, which makes a tensorstream.Reader
// verify the trailer, and fails if bytes are left over.
func expectEnd(r io.Reader) error {
	var b [1]byte
	for range 1000 { // a reader stuck at (0, nil) is an error, not a hang
		n, err := r.Read(b[:])
		if n > 0 {
			return fmt.Errorf("%w: payload longer than its layout", ErrLayout)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return fmt.Errorf("%w: payload reader returns no data and no end", ErrLayout)
}

func f32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, f := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(f))
	}
	return b
}
