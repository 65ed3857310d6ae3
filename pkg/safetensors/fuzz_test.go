package safetensors

import (
	"bytes"
	"github.com/stretchr/testify/require"
	"maps"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// fuzzSeeds returns whole-file images: for each of the repository's model
// checkpoints, a small file with the first tensors of its header (names,
// dtypes, metadata) and one element each, since the fuzzer minimizes large
// inputs slowly; and every hostile single-file case. What the fuzzer found
// is in testdata/fuzz/FuzzParseHeader.
func fuzzSeeds(f *testing.F) [][]byte {
	var seeds [][]byte
	models, _ := filepath.Glob(filepath.Join(fixtures.Path(f, "models"), "*", SingleFileName))
	for _, p := range models {
		sf, err := OpenFile(p)
		require.NoError(f, err)
		var ts []Tensor
		for _, ti := range sf.Tensors[:min(len(sf.Tensors), 6)] {
			ts = append(ts, Tensor{ti.Name, ti.DType, []int64{1}, make([]byte, ti.DType.Size())})
		}
		sf.Close()
		b, err := Serialize(ts, sf.Metadata)
		require.NoError(f, err)
		seeds = append(seeds, b)
	}
	for _, c := range badCases() {
		for _, b := range c.files {
			seeds = append(seeds, b)
		}
	}
	return append(seeds, goodFile())
}

// FuzzParseHeader: no input panics; whatever parses re-serializes to a file
// that parses to the same tensors, metadata and payloads, and serializing
// that again gives the same bytes.
func FuzzParseHeader(f *testing.F) {
	for _, s := range fuzzSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, img []byte) {
		h, err := ReadHeader(bytes.NewReader(img), int64(len(img)))
		if err != nil {
			return
		}
		ts := make([]Tensor, len(h.Tensors))
		for i, ti := range h.Tensors {
			ts[i] = Tensor{ti.Name, ti.DType, ti.Shape, img[ti.Offset : ti.Offset+ti.Size()]}
		}
		out, err := Serialize(ts, h.Metadata)
		if err != nil {
			t.Fatalf("parsed header does not serialize: %v", err)
		}
		h2, err := ReadHeader(bytes.NewReader(out), int64(len(out)))
		if err != nil {
			t.Fatalf("serialized file does not parse: %v", err)
		}
		if (h.Metadata == nil) != (h2.Metadata == nil) || !maps.Equal(h.Metadata, h2.Metadata) {
			t.Fatalf("metadata %v became %v", h.Metadata, h2.Metadata)
		}
		if len(h2.Tensors) != len(ts) {
			t.Fatalf("%d tensors became %d", len(ts), len(h2.Tensors))
		}
		byName := map[string]Tensor{}
		for _, x := range ts {
			byName[x.Name] = x
		}
		ts2 := make([]Tensor, len(h2.Tensors))
		for i, ti := range h2.Tensors {
			x, ok := byName[ti.Name]
			data := out[ti.Offset : ti.Offset+ti.Size()]
			if !ok || x.DType != ti.DType || !equalShape(x.Shape, ti.Shape) || !bytes.Equal(x.Data, data) {
				t.Fatalf("tensor %q changed in the round trip", ti.Name)
			}
			ts2[i] = Tensor{ti.Name, ti.DType, ti.Shape, data}
		}
		again, err := Serialize(ts2, h2.Metadata)
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("serialization is not canonical (%v)", err)
		}
	})
}

// FuzzParseIndex: no input panics; an index that parses and marshals parses
// back to the same weight map and marshals to the same bytes.
func FuzzParseIndex(f *testing.F) {
	f.Add([]byte(`{"metadata": {"total_size": 16}, "weight_map": {"a": "model-00001-of-00002.safetensors"}}`))
	f.Add([]byte(`{"weight_map": {}}`))
	f.Add([]byte(`{"metadata": {"x": 1.5}, "weight_map": {"a\u00e9": "b"}}`))
	for _, c := range badCases() {
		if b, ok := c.files[IndexFileName]; ok {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ParseIndex(data)
		if err != nil {
			return
		}
		out, err := ix.Marshal()
		if err != nil {
			return // a number Python cannot write back as JSON (1e999)
		}
		ix2, err := ParseIndex(out)
		if err != nil {
			t.Fatalf("marshalled index does not parse: %v\n%s", err, out)
		}
		if !maps.Equal(ix.WeightMap, ix2.WeightMap) {
			t.Fatalf("weight map changed")
		}
		again, err := ix2.Marshal()
		if err != nil || !bytes.Equal(again, out) {
			t.Fatalf("index marshal is not canonical (%v)", err)
		}
	})
}
