package gpu

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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

// smallGolden names the repository's subset of a golden file (testdata/bnb).
func smallGolden(name string) string {
	return strings.TrimSuffix(name, ".safetensors") + "_small.safetensors"
}

// readGolden reads a golden file at path.
func readGolden(t *testing.T, path string) *goldenFile {
	t.Helper()
	sf, err := safetensors.OpenFile(path)
	require.NoError(t, err)
	defer sf.Close()
	f := &goldenFile{tensors: map[string][]byte{}}
	require.NoError(t, json.Unmarshal([]byte(sf.Metadata["cases"]), &f.cases))
	for _, ti := range sf.Tensors {
		f.tensors[ti.Name], err = sf.ReadTensor(ti.Name)
		require.NoError(t, err)
	}
	return f
}

func (f *goldenFile) get(t *testing.T, key string) []byte {
	t.Helper()
	b, ok := f.tensors[key]
	require.True(t, ok, "golden tensor %s missing", key)
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
// paths use, against every golden offset of the repository's subsets of the
// golden files (pkg/quant holds it to the full files too): the absmax values
// come from the same input quantized without double quant.
func TestMeanF32Golden(t *testing.T) {
	for _, name := range goldenNames {
		f := readGolden(t, fixtures.Path(t, "bnb", smallGolden(name)))
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
				got := quant.MeanF32(a)
				assert.Equal(t, math.Float32bits(c.NestedOffset), math.Float32bits(got),
					"%s %s: mean of %d absmax = %v, golden offset %v", name, c.Key, len(a), got, c.NestedOffset)
				checked++
			}
		}
		assert.NotZero(t, checked, "%s: no double-quant case checked", name)
	}
}
