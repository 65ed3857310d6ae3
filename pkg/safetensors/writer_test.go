package safetensors

import (
	"bytes"
	"errors"
	"github.com/stretchr/testify/require"
	"io"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"testing/iotest"
)

// TestDTypeWriteOrder pins the write order to the Rust Dtype enum's
// declaration order (huggingface/safetensors safetensors/src/tensor.rs),
// written descending.
func TestDTypeWriteOrder(t *testing.T) {
	enum := []DType{BOOL, F4, F6E2M3, F6E3M2, U8, I8, F8E5M2, F8E4M3, F8E8M0,
		F8E4M3FNUZ, F8E5M2FNUZ, I16, U16, F16, BF16, I32, U32, F32, C64, F64, I64, U64}
	if len(enum) != len(ranks) {
		t.Fatalf("%d ranks in the table, %d in the enum", len(ranks), len(enum))
	}
	var ts []Tensor
	for _, d := range enum {
		n, _ := ByteLen(d, []int64{4})
		ts = append(ts, Tensor{"x" + string(d), d, []int64{4}, make([]byte, n)})
	}
	b, err := Serialize(ts, nil)
	require.NoError(t, err)
	h, err := ReadHeader(bytes.NewReader(b), int64(len(b)))
	require.NoError(t, err)
	var got []DType
	for _, ti := range h.Tensors {
		got = append(got, ti.DType)
	}
	want := slices.Clone(enum)
	slices.Reverse(want)
	if !slices.Equal(got, want) {
		t.Errorf("write order %v, want %v", got, want)
	}
	sizes := map[DType]int{BOOL: 1, U8: 1, I8: 1, F8E5M2: 1, F8E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
		I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8, F4: 0}
	for d, want := range sizes {
		if d.Size() != want {
			t.Errorf("%s.Size() = %d, want %d", d, d.Size(), want)
		}
	}
	if _, err := ByteLen(F4, []int64{3}); !errors.Is(err, ErrShape) {
		t.Errorf("3 F4 elements: %v, want ErrShape (not whole bytes)", err)
	}
}

func TestSerializeNamesAndMetadata(t *testing.T) {
	// Same dtype: name order, byte-wise; JSON escapes as serde_json writes them.
	ts := []Tensor{
		{"b", U8, []int64{1}, []byte{2}},
		{"a\"q\\\n\x01\u00e9", U8, []int64{1}, []byte{1}},
		{"B", U8, []int64{}, []byte{3}},
	}
	got, err := Serialize(ts, map[string]string{"z": "1", "a": "2"})
	require.NoError(t, err)
	header := `{"__metadata__":{"a":"2","z":"1"},"B":{"dtype":"U8","shape":[],"data_offsets":[0,1]},` +
		`"a\"q\\\n\u0001` + "\u00e9" + `":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"b":{"dtype":"U8","shape":[1],"data_offsets":[2,3]}}`
	for len(header)%8 != 0 {
		header += " "
	}
	want := append(raw(header, nil), 3, 1, 2)
	assertSameBytes(t, "Serialize", got, want)
	h, err := ReadHeader(bytes.NewReader(got), int64(len(got)))
	require.NoError(t, err)
	if h.Tensors[1].Name != ts[1].Name || h.Metadata["a"] != "2" {
		t.Errorf("names or metadata changed in the round trip: %+v", h)
	}
	// nil metadata writes none; an empty map writes an empty object.
	none, _ := Serialize(nil, nil)
	empty, _ := Serialize(nil, map[string]string{})
	if string(none[8:]) != "{}      " || string(empty[8:]) != `{"__metadata__":{}}     ` {
		t.Errorf("metadata nil %q, empty %q", none[8:], empty[8:])
	}
}

func TestWriterErrors(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.safetensors")
	four := func() io.Reader { return bytes.NewReader(make([]byte, 4)) }

	w, err := NewWriter(p, nil)
	require.NoError(t, err)
	require.NoError(t, w.Add("a", F32, []int64{1}, four()))
	if err := w.Add("a", F32, []int64{1}, four()); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate: %v", err)
	}
	if err := w.Close(); !errors.Is(err, ErrDuplicate) {
		t.Errorf("Close after a failed Add: %v, want the sticky error", err)
	}
	assertOnly(t, dir)

	for _, c := range []struct {
		name  string
		dtype DType
		shape []int64
		r     io.Reader
		want  error
	}{
		{"__metadata__", F32, []int64{1}, four(), ErrHeader},
		{"bad\xffname", F32, []int64{1}, four(), ErrHeader},
		{"a", "F128", []int64{1}, four(), ErrDType},
		{"a", F32, []int64{-1}, four(), ErrShape},
		{"a", F32, []int64{2}, four(), io.ErrUnexpectedEOF},
		{"a", F32, []int64{1}, iotest.ErrReader(io.ErrClosedPipe), io.ErrClosedPipe},
	} {
		w, err := NewWriter(p, nil)
		require.NoError(t, err)
		if err := w.Add(c.name, c.dtype, c.shape, c.r); !errors.Is(err, c.want) {
			t.Errorf("Add(%q, %s, %v): %v, want %v", c.name, c.dtype, c.shape, err, c.want)
		}
		w.Abort()
		assertOnly(t, dir)
	}

	// Declared layout: wrong shape, undeclared name, missing tensor.
	specs := []TensorSpec{{"a", F32, []int64{1}}, {"b", F32, []int64{1}}}
	w, err = NewWriterFor(p, nil, specs)
	require.NoError(t, err)
	if err := w.Add("a", F32, []int64{1, 1}, four()); !errors.Is(err, ErrShape) {
		t.Errorf("shape differing from the declaration: %v", err)
	}
	w.Abort()
	w, _ = NewWriterFor(p, nil, specs)
	if err := w.Add("c", F32, []int64{1}, four()); !errors.Is(err, ErrNotFound) {
		t.Errorf("undeclared tensor: %v", err)
	}
	w.Abort()
	w, _ = NewWriterFor(p, nil, specs)
	require.NoError(t, w.Add("b", F32, []int64{1}, four()))
	if err := w.Close(); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Close with a declared tensor missing: %v", err)
	}
	if _, err := NewWriterFor(p, nil, append(specs, specs[0])); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate declaration: %v", err)
	}
	assertOnly(t, dir)

	// A successful Close, then no more use; an existing file is replaced whole.
	require.NoError(t, os.WriteFile(p, []byte("old"), 0o644))
	w, _ = NewWriterFor(p, map[string]string{"format": "pt"}, specs[:1])
	require.NoError(t, w.Add("a", F32, []int64{1}, four()))
	require.NoError(t, w.Close())
	if err := w.Add("b", F32, []int64{1}, four()); !errors.Is(err, ErrIncomplete) {
		t.Errorf("Add after Close: %v", err)
	}
	w.Abort() // must not remove the finished file
	assertOnly(t, dir, "out.safetensors")
	ck, err := Open(p)
	require.NoError(t, err)
	defer ck.Close()
	if len(ck.Tensors()) != 1 || ck.Metadata()["format"] != "pt" {
		t.Errorf("reopened: %+v", ck.Tensors())
	}
}

// TestOpenModels opens each model directory and checks the listing against
// the raw header: every tensor once, in data order, payloads where the
// header says.
func TestOpenModels(t *testing.T) {
	for _, path := range modelFiles(t) {
		ck, err := Open(filepath.Dir(path))
		require.NoError(t, err)
		if ck.Index != nil || len(ck.Files) != 1 || ck.Metadata()["format"] != "pt" {
			t.Errorf("%s: index %v, %d files, metadata %v", path, ck.Index, len(ck.Files), ck.Metadata())
		}
		var end int64
		for _, ti := range ck.Tensors() {
			if ti.Begin != end || ti.Offset != ck.Files[0].DataOffset()+ti.Begin || ti.File != path {
				t.Errorf("%s: tensor %q at [%d,%d] offset %d in %s", path, ti.Name, ti.Begin, ti.End, ti.Offset, ti.File)
			}
			end = ti.End
		}
		if ck.Files[0].DataOffset()+end != ck.Files[0].Size() {
			t.Errorf("%s: tensors end at %d, file is %d bytes", path, end, ck.Files[0].Size())
		}
		ck.Close()
	}
	if _, err := Open(filepath.Join(t.TempDir(), "nothing")); !errors.Is(err, ErrNotFound) {
		t.Errorf("missing path: %v", err)
	}
	if _, err := Open(t.TempDir()); !errors.Is(err, ErrNotFound) {
		t.Errorf("empty directory: %v", err)
	}
}
