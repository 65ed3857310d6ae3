package synth

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func bf16(u uint16) float64 { return float64(math.Float32frombits(uint32(u) << 16)) }

func f16(u uint16) float64 {
	exp, man := int(u>>10&0x1f), float64(u&0x3ff)
	v := 0.0
	switch exp {
	case 0:
		v = man / 1024 * math.Pow(2, -14)
	case 31:
		v = math.Inf(1)
	default:
		v = (1 + man/1024) * math.Pow(2, float64(exp-15))
	}
	if u&0x8000 != 0 {
		v = -v
	}
	return v
}

// moments decodes little-endian 16-bit or 32-bit floats and returns their
// mean and standard deviation, failing on a non-finite value.
func moments(t *testing.T, data []byte, dtype string) (mean, std float64) {
	t.Helper()
	var sum, sq float64
	n := 0
	for i := 0; i < len(data); {
		var v float64
		switch dtype {
		case "F32":
			v = float64(math.Float32frombits(binary.LittleEndian.Uint32(data[i:])))
			i += 4
		case "F16":
			v = f16(binary.LittleEndian.Uint16(data[i:]))
			i += 2
		default:
			v = bf16(binary.LittleEndian.Uint16(data[i:]))
			i += 2
		}
		require.False(t, math.IsNaN(v) || math.IsInf(v, 0), "element %d is %v", n, v)
		sum += v
		sq += v * v
		n++
	}
	mean = sum / float64(n)
	return mean, math.Sqrt(sq/float64(n) - mean*mean)
}

func TestTableDistribution(t *testing.T) {
	for _, dtype := range []string{"BF16", "F16", "F32"} {
		for _, c := range []struct{ mean, std float64 }{{0, 0.02}, {1, 0.02}, {0, 1}} {
			tab := newTable(dtype, c.mean, c.std)
			buf := make([]byte, 256<<10)
			r := rng(42)
			tab.fill(buf, &r)
			mean, std := moments(t, buf, dtype)
			assert.InDelta(t, c.mean, mean, 0.01*c.std+1e-3*c.mean, "%s mean", dtype)
			assert.InDelta(t, c.std, std, 0.02*c.std, "%s std", dtype)
		}
	}
}

func TestF16Rounding(t *testing.T) {
	for _, c := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3c00}, {-2, 0xc000}, {0.5, 0x3800}, {65504, 0x7bff}, {1e6, 0x7bff},
		{6.103515625e-05, 0x0400},   // smallest normal
		{5.960464477539063e-08, 1},  // smallest subnormal
		{2.9802322387695312e-08, 0}, // half of it: ties to even
		{1 + 1.0/2048, 0x3c00},      // halfway between 1 and the next: to even
		{1 + 3.0/2048, 0x3c02},      // halfway, odd below: up
		{0.1, 0x2e66},
	} {
		assert.Equal(t, c.want, f32ToF16(c.in), "%v", c.in)
		assert.Equal(t, uint16(0x3f80), f32ToBF16(1))
	}
}

func TestPayloadIndependentOfReadSizes(t *testing.T) {
	g := newGenerator(7, 0.02)
	const n = 3*genChunk + 10 // not a multiple of 8 or of the chunk
	whole, err := io.ReadAll(g.tensor("w", "BF16", "", n))
	require.NoError(t, err)
	require.Len(t, whole, n)
	r := g.tensor("w", "BF16", "", n)
	var pieces []byte
	buf := make([]byte, 12345)
	for {
		k, err := r.Read(buf[:1+len(pieces)%len(buf)])
		pieces = append(pieces, buf[:k]...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	assert.Equal(t, whole, pieces)
	other, _ := io.ReadAll(g.tensor("v", "BF16", "", n))
	assert.NotEqual(t, whole, other, "names must seed differently")
}

func tinyConfig(t *testing.T, d Dims) []byte {
	t.Helper()
	b, err := d.ConfigJSON()
	require.NoError(t, err)
	return b
}

func checksums(t *testing.T, dir string) map[string][32]byte {
	t.Helper()
	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	out := map[string][32]byte{}
	for _, ti := range ck.Tensors() {
		data, err := io.ReadAll(ck.Section(ti))
		require.NoError(t, err)
		out[ti.Name] = sha256.Sum256(data)
	}
	return out
}

func TestWriteModelTinySharded(t *testing.T) {
	d, err := PresetDims("tiny")
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "m")
	res, err := WriteModel(dir, Options{Config: tinyConfig(t, d), Seed: 3, MaxShardSize: 60_000})
	require.NoError(t, err)
	require.Greater(t, len(res.Files), 1, "a 60 kB limit must shard the tiny model")

	// The files are a checkpoint pkg/safetensors opens, with the index and
	// exactly the tensors pkg/arch derives from the config written beside them.
	for _, f := range append(res.Files, safetensors.IndexFileName, "config.json", "generation_config.json") {
		assert.FileExists(t, filepath.Join(dir, f))
	}
	raw, err := os.ReadFile(filepath.Join(dir, "config.json"))
	require.NoError(t, err)
	cfg, err := arch.ParseConfig(raw)
	require.NoError(t, err)
	m, err := arch.Resolve(cfg)
	require.NoError(t, err)
	assert.Equal(t, "llama", m.Family.Name)
	assert.Equal(t, d.Hidden, m.Text.Hidden)
	assert.Equal(t, d.KVHeads, m.Text.KVHeads)

	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	want := m.Tensors()
	require.Len(t, ck.Tensors(), len(want))
	assert.Equal(t, len(want), res.Tensors)
	var params int64
	for _, w := range want {
		ti, ok := ck.Tensor(w.Name)
		require.True(t, ok, w.Name)
		assert.Equal(t, w.Shape, ti.Shape, w.Name)
		assert.Equal(t, safetensors.BF16, ti.DType, w.Name)
		data, err := io.ReadAll(ck.Section(ti))
		require.NoError(t, err)
		mean, std := moments(t, data, "BF16")
		params += w.Elements()
		if w.Elements() < 1000 {
			continue // too few elements for moments to mean much
		}
		if arch.Classify(w.Name, w.Shape).Role == arch.RoleNorm {
			assert.InDelta(t, 1, mean, 0.01, w.Name)
		} else {
			assert.InDelta(t, 0, mean, 0.005, w.Name)
			assert.InDelta(t, 0.02, std, 0.002, w.Name)
		}
	}
	assert.Equal(t, params, res.Params)
	ix, err := safetensors.ReadIndex(filepath.Join(dir, safetensors.IndexFileName))
	require.NoError(t, err)
	assert.Len(t, ix.WeightMap, len(want))
}

func TestWriteModelDeterministic(t *testing.T) {
	d, _ := PresetDims("tiny")
	d.Layers = 1
	cfg := tinyConfig(t, d)
	base := t.TempDir()
	for _, c := range []struct {
		dir  string
		seed uint64
	}{{"a", 1}, {"b", 1}, {"c", 2}} {
		_, err := WriteModel(filepath.Join(base, c.dir), Options{Config: cfg, Seed: c.seed})
		require.NoError(t, err)
	}
	a, b, c := checksums(t, filepath.Join(base, "a")), checksums(t, filepath.Join(base, "b")), checksums(t, filepath.Join(base, "c"))
	assert.Equal(t, a, b, "same seed, same bytes")
	for name := range a {
		assert.NotEqual(t, a[name], c[name], "seed 2 must change %s", name)
	}
}

func TestWriteModelFromRealConfig(t *testing.T) {
	// Shrink a real config: another family through pkg/arch's tensor list.
	path := fixtures.Path(t, "configs", "Qwen__Qwen3-8B.json")
	raw, err := os.ReadFile(path)
	require.NoError(t, err)
	raw = bytes.Replace(raw, []byte(`"num_hidden_layers": 36`), []byte(`"num_hidden_layers": 1`), 1)
	raw = bytes.Replace(raw, []byte(`"vocab_size": 151936`), []byte(`"vocab_size": 64`), 1)
	raw = bytes.Replace(raw, []byte(`"hidden_size": 4096`), []byte(`"hidden_size": 512`), 1)
	raw = bytes.Replace(raw, []byte(`"intermediate_size": 12288`), []byte(`"intermediate_size": 256`), 1)
	dir := t.TempDir()
	res, err := WriteModel(dir, Options{Config: raw, Seed: 1})
	require.NoError(t, err)
	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	_, ok := ck.Tensor("model.layers.0.self_attn.q_norm.weight")
	assert.True(t, ok, "qwen3 has q_norm")
	q, ok := ck.Tensor("model.layers.0.self_attn.q_proj.weight")
	require.True(t, ok)
	assert.Equal(t, []int64{32 * 128, 512}, q.Shape, "head_dim 128 from the config, hidden shrunk")
	assert.Equal(t, res.Tensors, len(ck.Tensors()))
}

func TestWriteModelErrors(t *testing.T) {
	_, err := PresetDims("gpt-5")
	assert.ErrorIs(t, err, ErrPreset)

	d, _ := PresetDims("tiny")
	d.KVHeads = 3
	_, err = d.ConfigJSON()
	assert.ErrorIs(t, err, ErrDims)
	d.KVHeads, d.Layers = 2, 0
	_, err = d.ConfigJSON()
	assert.ErrorIs(t, err, ErrDims)

	_, err = WriteModel(t.TempDir(), Options{Config: []byte("{not json")})
	assert.ErrorIs(t, err, arch.ErrConfig)
}

func TestWriteModelRefusesFP8(t *testing.T) {
	fp8 := fixtures.Path(t, "configs", "deepseek-ai__DeepSeek-V3.json")
	raw, err := os.ReadFile(fp8)
	require.NoError(t, err)
	dir := filepath.Join(t.TempDir(), "x")
	_, err = WriteModel(dir, Options{Config: raw})
	assert.ErrorIs(t, err, ErrDType)
	assert.NoDirExists(t, dir, "nothing is written before the tensor list is checked")
}

func TestWriteStream(t *testing.T) {
	var buf bytes.Buffer
	const total = 5<<20 + 3*8192 // five full tensors and a short one
	n, err := WriteStream(&buf, StreamOptions{Bytes: total, TensorBytes: 1 << 20, Cols: 4096, Seed: 9})
	require.NoError(t, err)
	assert.EqualValues(t, total, n)

	r := tensorstream.NewReader(&buf)
	_, err = r.Header()
	require.NoError(t, err)
	var got int64
	var names []string
	first := map[string][]byte{}
	for {
		tn, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		names = append(names, tn.Name)
		assert.Equal(t, tensorstream.BF16, tn.DType)
		assert.Equal(t, int64(4096), tn.Shape[1])
		assert.True(t, tn.AnnBool(tensorstream.AnnQuantize))
		assert.Equal(t, arch.RoleMLPUp, tn.AnnString(tensorstream.AnnRole))
		data, err := io.ReadAll(r)
		require.NoError(t, err)
		require.EqualValues(t, tn.Size, len(data))
		moments(t, data, "BF16")
		first[tn.Name] = data[:64]
		got += int64(len(data))
	}
	assert.EqualValues(t, total, got)
	assert.Len(t, names, 6)
	assert.NotEqual(t, first[names[0]], first[names[1]], "tensors start at different pool offsets")

	_, err = WriteStream(io.Discard, StreamOptions{Bytes: 1, TensorBytes: 100, Cols: 4096})
	assert.ErrorIs(t, err, ErrDims)
}

func TestMeasure(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	u, err := Measure([]string{"/bin/sh", "-c", "exit 3"})
	require.NoError(t, err)
	assert.Equal(t, 3, u.ExitCode)
	assert.Greater(t, u.PeakRSS, int64(0))

	_, err = Measure([]string{filepath.Join(t.TempDir(), "no-such-program")})
	assert.True(t, errors.Is(err, os.ErrNotExist), "%v", err)
	_, err = Measure(nil)
	assert.Error(t, err)
}

func BenchmarkFillBF16(b *testing.B) {
	tab := newTable("BF16", 0, 0.02)
	buf := make([]byte, genChunk)
	r := rng(1)
	b.SetBytes(genChunk)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		tab.fill(buf, &r)
	}
}
