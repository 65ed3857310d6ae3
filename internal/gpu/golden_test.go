package gpu

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// goldenFile is one of bitsandbytes' golden vector files (safetensors).
type goldenFile struct {
	header map[string]json.RawMessage
	data   []byte
	cases  []goldenCase
}

type goldenCase struct {
	Key          string  `json:"key"`
	Input        string  `json:"input"`
	DType        string  `json:"dtype"`
	Shape        []int64 `json:"shape"`
	Kind         string  `json:"kind"`
	QuantType    string  `json:"quant_type"`
	BlockSize    int     `json:"blocksize"`
	DoubleQuant  bool    `json:"double_quant"`
	NestedOffset float32 `json:"nested_offset"`
}

func (c goldenCase) elements() int64 {
	n := int64(1)
	for _, d := range c.Shape {
		n *= d
	}
	return n
}

var goldenNames = []string{"golden_bnb_bfloat16.safetensors", "golden_bnb_float16.safetensors"}

func readGolden(t *testing.T, name string) *goldenFile {
	t.Helper()
	b, err := os.ReadFile(fixtures.Shared(t, "bnb", name))
	if err != nil {
		t.Fatal(err)
	}
	n := binary.LittleEndian.Uint64(b)
	f := &goldenFile{data: b[8+n:]}
	if err := json.Unmarshal(b[8:8+n], &f.header); err != nil {
		t.Fatal(err)
	}
	var meta map[string]string
	if err := json.Unmarshal(f.header["__metadata__"], &meta); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(meta["cases"]), &f.cases); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *goldenFile) get(t *testing.T, key string) []byte {
	t.Helper()
	var e struct {
		Offsets [2]int64 `json:"data_offsets"`
	}
	raw, ok := f.header[key]
	if !ok {
		t.Fatalf("golden tensor %s missing", key)
	}
	if err := json.Unmarshal(raw, &e); err != nil {
		t.Fatal(err)
	}
	return f.data[e.Offsets[0]:e.Offsets[1]]
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// TestMeanF32Golden checks quant.MeanF32, the offset both the CPU and the GPU
// paths use, against every golden offset against every golden offset:
// the absmax values come from the same input quantized without double quant.
func TestMeanF32Golden(t *testing.T) {
	for _, name := range goldenNames {
		f := readGolden(t, name)
		checked := 0
		for _, c := range f.cases {
			if !c.DoubleQuant {
				continue
			}
			for _, d := range f.cases {
				if d.DoubleQuant || d.Input != c.Input || d.QuantType != c.QuantType || d.BlockSize != c.BlockSize {
					continue
				}
				a := f32s(f.get(t, d.Key+".absmax"))
				if got := quant.MeanF32(a); got != c.NestedOffset {
					t.Errorf("%s %s: mean of %d absmax = %v (%#x), golden offset %v (%#x)", name, c.Key, len(a),
						got, math.Float32bits(got), c.NestedOffset, math.Float32bits(c.NestedOffset))
				}
				checked++
			}
		}
		if checked == 0 {
			t.Fatalf("%s: no double-quant case checked", name)
		}
	}
}
