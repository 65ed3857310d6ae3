package quant

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

// stFile is a safetensors file read whole: test fixtures are a few MiB.
type stFile struct {
	meta    map[string]string
	tensors map[string]stTensor
}

type stTensor struct {
	DType string
	Shape []int64
	Data  []byte
}

func readST(tb testing.TB, path string) *stFile {
	tb.Helper()
	sf, err := safetensors.OpenFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer sf.Close()
	f := &stFile{meta: sf.Metadata, tensors: map[string]stTensor{}}
	for _, ti := range sf.Tensors {
		data, err := sf.ReadTensor(ti.Name)
		if err != nil {
			tb.Fatal(err)
		}
		f.tensors[ti.Name] = stTensor{DType: string(ti.DType), Shape: ti.Shape, Data: data}
	}
	return f
}

func (f *stFile) get(tb testing.TB, name string) stTensor {
	tb.Helper()
	t, ok := f.tensors[name]
	if !ok {
		tb.Fatalf("tensor %s missing", name)
	}
	return t
}

func f32s(b []byte) []float32 {
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

type goldenCase struct {
	Key          string   `json:"key"`
	Input        string   `json:"input"`
	DType        string   `json:"dtype"`
	Shape        []int64  `json:"shape"`
	Kind         string   `json:"kind"`
	QuantType    string   `json:"quant_type"`
	BlockSize    int      `json:"blocksize"`
	DoubleQuant  bool     `json:"double_quant"`
	NestedOffset *float64 `json:"nested_offset"`
}

func (c goldenCase) params() Params {
	return Params{Type: Type(c.QuantType), BlockSize: c.BlockSize, DoubleQuant: c.DoubleQuant}
}

func (c goldenCase) dtype() DType {
	if c.DType == "float16" {
		return F16
	}
	return BF16
}

func (c goldenCase) String() string {
	return fmt.Sprintf("%s %s %v %s %s bs%d dq=%v", c.Key, c.DType, c.Shape, c.Kind, c.QuantType, c.BlockSize, c.DoubleQuant)
}

func goldenCases(tb testing.TB, f *stFile) []goldenCase {
	tb.Helper()
	var cases []goldenCase
	if err := json.Unmarshal([]byte(f.meta["cases"]), &cases); err != nil {
		tb.Fatal(err)
	}
	if len(cases) == 0 {
		tb.Fatal("no golden cases")
	}
	return cases
}

var goldenFiles = []string{"golden_bnb_bfloat16.safetensors", "golden_bnb_float16.safetensors"}

// forEachGoldenFile runs fn on the small golden subsets in the repository's
// testdata/bnb (always) and on the full golden files in ../shared/testdata/bnb
// (skipped when absent). name is the full file's name for both.
func forEachGoldenFile(t *testing.T, fn func(t *testing.T, name string, f *stFile)) {
	for _, name := range goldenFiles {
		t.Run("small/"+name, func(t *testing.T) {
			small := strings.TrimSuffix(name, ".safetensors") + "_small.safetensors"
			fn(t, name, readST(t, fixtures.Path(t, "bnb", small)))
		})
		t.Run("shared/"+name, func(t *testing.T) {
			fn(t, name, readST(t, fixtures.Shared(t, "bnb", name)))
		})
	}
}

func widen(dt DType, raw []byte) []float32 {
	x := make([]float32, len(raw)/2)
	for i := range x {
		h := binary.LittleEndian.Uint16(raw[2*i:])
		if dt == F16 {
			x[i] = f16ToF32(h)
		} else {
			x[i] = bf16ToF32(h)
		}
	}
	return x
}
