package gpu

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

// goldenFile is one of bitsandbytes' golden vector files (safetensors).
type goldenFile struct {
	tensors map[string][]byte
	cases   []goldenCase
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
	sf, err := safetensors.OpenFile(fixtures.Shared(t, "bnb", name))
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Close()
	f := &goldenFile{tensors: map[string][]byte{}}
	if err := json.Unmarshal([]byte(sf.Metadata["cases"]), &f.cases); err != nil {
		t.Fatal(err)
	}
	for _, ti := range sf.Tensors {
		if f.tensors[ti.Name], err = sf.ReadTensor(ti.Name); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

func (f *goldenFile) get(t *testing.T, key string) []byte {
	t.Helper()
	b, ok := f.tensors[key]
	if !ok {
		t.Fatalf("golden tensor %s missing", key)
	}
	return b
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
