package checkpoint

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Models are the tiny models with a transformers-written 4-bit checkpoint:
// those in testdata/models (never skipped), then those of ../shared.
var Models = append(append([]string(nil), fixtures.RepoModels...), fixtures.SharedModels...)

// readEntries returns a safetensors file's tensors by name.
func readEntries(t *testing.T, path string) (map[string]safetensors.Tensor, map[string]string) {
	t.Helper()
	f, err := safetensors.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]safetensors.Tensor{}
	for _, e := range f.Tensors {
		b, err := f.ReadTensor(e.Name)
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name] = safetensors.Tensor{Name: e.Name, DType: e.DType, Shape: e.Shape, Data: b}
	}
	return out, f.Metadata
}

func TestQuantStateJSONMatchesFixtures(t *testing.T) {
	for _, m := range Models {
		t.Run(m, func(t *testing.T) {
			dir := fixtures.Model(t, m+"-bnb-nf4")
			c, err := Open(dir)
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			entries, _ := readEntries(t, filepath.Join(dir, "model.safetensors"))
			nq := 0
			for _, ts := range c.Tensors {
				if ts.Encoding != tensorstream.BNB4 {
					continue
				}
				nq++
				got, err := QuantStateJSON(ts)
				if err != nil {
					t.Fatal(err)
				}
				want := entries[ts.Name+SuffixQuantState+"nf4"].Data
				if !bytes.Equal(got, want) {
					t.Errorf("%s %s:\n got %s\nwant %s", m, ts.Name, got, want)
				}
			}
			if nq == 0 {
				t.Errorf("%s: no quantized tensors read", m)
			}
			c.Close()
		})
	}
}

// TestRoundTripFixtures reads each reference checkpoint into stream tensors and
// writes them back: the file must come out byte for byte.
func TestRoundTripFixtures(t *testing.T) {
	for _, m := range Models {
		t.Run(m, func(t *testing.T) {
			dir := fixtures.Model(t, m+"-bnb-nf4")
			c, err := Open(dir)
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			out := filepath.Join(t.TempDir(), "model.safetensors")
			w, err := safetensors.NewWriter(out, map[string]string{"format": "pt"})
			if err != nil {
				t.Fatal(err)
			}
			for _, ts := range c.Tensors {
				p, err := c.Payload(ts)
				if err != nil {
					t.Fatal(err)
				}
				if err := WriteTensor(w, ts.Clone(), p); err != nil {
					t.Fatalf("%s: %v", m, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			c.Close()
			sameFile(t, filepath.Join(dir, "model.safetensors"), out)
		})
	}
}

func sameFile(t *testing.T, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s differs from %s (%d vs %d bytes)", got, want, len(b), len(a))
	}
}

func TestConfigMatchesFixtures(t *testing.T) {
	qc := QuantizationConfig{QuantType: "nf4", DoubleQuant: true, ComputeDType: "bfloat16"}
	for _, m := range Models {
		t.Run(m, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(fixtures.Model(t, m), "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(fixtures.Model(t, m+"-bnb-nf4"), "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			got, err := WithQuantizationConfig(src, qc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: config.json differs:\n%s", m, got)
			}
			back, err := ParseQuantizationConfig(got)
			if err != nil || back == nil || back.QuantType != "nf4" || !back.DoubleQuant || back.ComputeDType != "bfloat16" || back.SkipModules != nil {
				t.Errorf("%s: parsed back %+v, %v", m, back, err)
			}
		})
	}
}

// TestReformatConfigs: configs saved by transformers come back byte for byte,
// including the pre-quantized Unsloth one with a skip list.
func TestReformatConfigs(t *testing.T) {
	unsloth := fixtures.Path(t, "configs", "unsloth__Llama-3.2-1B-Instruct-bnb-4bit.json")
	reformatsBack(t, unsloth)
	qc, err := ParseQuantizationConfig(mustRead(t, unsloth))
	if err != nil || qc == nil || len(qc.SkipModules) != 4 || qc.QuantStorage != "uint8" {
		t.Errorf("unsloth quantization_config: %+v, %v", qc, err)
	}
	for _, m := range Models {
		t.Run(m, func(t *testing.T) {
			reformatsBack(t, filepath.Join(fixtures.Model(t, m), "config.json"))
			reformatsBack(t, filepath.Join(fixtures.Model(t, m+"-bnb-nf4"), "config.json"))
		})
	}
}

// reformatsBack checks that ReformatConfig gives back the config at p byte
// for byte.
func reformatsBack(t *testing.T, p string) {
	t.Helper()
	src := mustRead(t, p)
	got, err := ReformatConfig(src)
	if err != nil {
		t.Fatalf("%s: %v", p, err)
	}
	if !bytes.Equal(got, src) {
		t.Errorf("%s: reformatted differs:\n%s", p, got)
	}
}

func mustRead(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestConfigTorchDTypeAndFormatting(t *testing.T) {
	src := []byte(`{"torch_dtype": "float16", "b": [1, 2.50, 1e-6, {}], "a": "caf\u00e9 \ud83d\ude00", "e": [], "x": -0, "big": 123456789012345678901234567890}`)
	got, err := WithQuantizationConfig(src, QuantizationConfig{QuantType: "fp4", ComputeDType: "float16", SkipModules: []string{"lm_head"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "a": "caf\u00e9 \ud83d\ude00",
  "b": [
    1,
    2.5,
    1e-06,
    {}
  ],
  "big": 123456789012345678901234567890,
  "dtype": "float16",
  "e": [],
  "quantization_config": {
    "_load_in_4bit": true,
    "_load_in_8bit": false,
    "bnb_4bit_compute_dtype": "float16",
    "bnb_4bit_quant_storage": "uint8",
    "bnb_4bit_quant_type": "fp4",
    "bnb_4bit_use_double_quant": false,
    "llm_int8_enable_fp32_cpu_offload": false,
    "llm_int8_has_fp16_weight": false,
    "llm_int8_skip_modules": [
      "lm_head"
    ],
    "llm_int8_threshold": 6.0,
    "load_in_4bit": true,
    "load_in_8bit": false,
    "quant_method": "bitsandbytes"
  },
  "x": 0
}
`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []string{`[1]`, `{"a":`, `{} {}`, `nope`} {
		if _, err := WithQuantizationConfig([]byte(bad), QuantizationConfig{QuantType: "nf4"}); !errors.Is(err, ErrConfig) {
			t.Errorf("%q: err %v, want ErrConfig", bad, err)
		}
	}
	if _, err := ParseQuantizationConfig([]byte(`{"quantization_config": {"quant_method": "gptq"}}`)); !errors.Is(err, ErrConfig) {
		t.Errorf("gptq config: %v, want ErrConfig", err)
	}
}

func TestQuantStateJSONWithoutDoubleQuant(t *testing.T) {
	ts := &tensorstream.Tensor{Name: "w", DType: tensorstream.F16, Shape: []int64{3, 5}, Encoding: tensorstream.BNB4,
		Quant: &tensorstream.QuantState{Type: "fp4", BlockSize: 128}}
	got, err := QuantStateJSON(ts)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"quant_type": "fp4", "blocksize": 128, "dtype": "float16", "shape": [3, 5]}`
	if string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
	q, err := ParseQuantStateJSON(got)
	if err != nil || q.Nested || q.DType != tensorstream.F16 || q.BlockSize != 128 || q.QuantType != "fp4" {
		t.Errorf("parsed %+v, %v", q, err)
	}
	ts.DType = tensorstream.I32
	if _, err := QuantStateJSON(ts); !errors.Is(err, ErrDType) {
		t.Errorf("I32: %v, want ErrDType", err)
	}
}

func TestParseQuantStateJSONErrors(t *testing.T) {
	for _, bad := range []string{
		`{"blocksize": 64, "dtype": "bfloat16", "shape": [2]}`,
		`{"quant_type": "nf3", "blocksize": 64, "dtype": "bfloat16", "shape": [2]}`,
		`{"quant_type": "nf4", "blocksize": 63, "dtype": "bfloat16", "shape": [2]}`,
		`{"quant_type": "nf4", "blocksize": 64, "dtype": "int8", "shape": [2]}`,
		`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [-2]}`,
		`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2], "nested_blocksize": 256}`,
		`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2], "nested_blocksize": 256, "nested_dtype": "float16", "nested_offset": 0.5}`,
		`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [2], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.1}`,
		`not json`,
	} {
		if _, err := ParseQuantStateJSON([]byte(bad)); !errors.Is(err, ErrQuantState) {
			t.Errorf("%s: err %v, want ErrQuantState", bad, err)
		}
	}
}

// synthetic builds the state dict of one 4-bit weight with random payload
// bytes, so tests can break it piece by piece.
func synthetic(t *testing.T, q tensorstream.QuantState, shape []int64) (*tensorstream.Tensor, []byte, []safetensors.Tensor) {
	t.Helper()
	ts := &tensorstream.Tensor{Name: "layer.weight", DType: tensorstream.BF16, Shape: shape, Encoding: tensorstream.BNB4, Quant: &q}
	ts.Size = ts.ExpectedSize()
	payload := make([]byte, ts.Size)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range payload {
		payload[i] = byte(rng.Uint32())
	}
	if q.DoubleQuant {
		ts.Quant.NestedOffset = 0.0625
		packed, absmax, _ := q.Sections(ts.NumElements())
		for i := packed + absmax; i < ts.Size; i += 4 { // finite nested absmax
			binary.LittleEndian.PutUint32(payload[i:], math.Float32bits(0.5))
		}
	} else {
		packed, _, _ := q.Sections(ts.NumElements())
		for i := packed; i < ts.Size; i += 4 {
			binary.LittleEndian.PutUint32(payload[i:], math.Float32bits(1.5))
		}
	}
	var sd memSink
	if err := WriteTensor(&sd, ts, bytes.NewReader(payload)); err != nil {
		t.Fatal(err)
	}
	bias := safetensors.Tensor{Name: "layer.bias", DType: safetensors.BF16, Shape: []int64{2}, Data: []byte{1, 2, 3, 4}}
	return ts, payload, append(sd, bias)
}

type memSink []safetensors.Tensor

func (m *memSink) Add(name string, dtype safetensors.DType, shape []int64, r io.Reader) error {
	n, err := safetensors.ByteLen(dtype, shape)
	if err != nil {
		return err
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(r, b); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	*m = append(*m, safetensors.Tensor{Name: name, DType: dtype, Shape: shape, Data: b})
	return nil
}

func writeDir(t *testing.T, sd []safetensors.Tensor) string {
	t.Helper()
	dir := t.TempDir()
	if err := safetensors.WriteFile(filepath.Join(dir, "model.safetensors"), sd, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReadSynthetic(t *testing.T) {
	for _, q := range []tensorstream.QuantState{
		{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256},
		{Type: "fp4", BlockSize: 32},
		{Type: "nf4", BlockSize: 128, DoubleQuant: true, NestedBlockSize: 256},
	} {
		ts, payload, sd := synthetic(t, q, []int64{129, 67}) // odd count, short last blocks
		c, err := Open(writeDir(t, sd))
		if err != nil {
			t.Fatalf("%+v: %v", q, err)
		}
		if len(c.Tensors) != 2 || c.Tensors[0].Name != "layer.bias" || c.Tensors[1].Name != "layer.weight" {
			t.Fatalf("tensors %v", c.Tensors)
		}
		got := c.Tensors[1]
		if *got.Quant != *ts.Quant || got.DType != ts.DType || got.Size != ts.Size || fmt.Sprint(got.Shape) != fmt.Sprint(ts.Shape) {
			t.Errorf("read %+v %+v, wrote %+v %+v", got, got.Quant, ts, ts.Quant)
		}
		p, _ := c.Payload(got)
		b, _ := io.ReadAll(p)
		if !bytes.Equal(b, payload) {
			t.Errorf("%+v: payload differs", q)
		}
		c.Close()
	}
}

func TestReadBadLayouts(t *testing.T) {
	q := tensorstream.QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256}
	edit := func(f func(sd []safetensors.Tensor) []safetensors.Tensor) string {
		_, _, sd := synthetic(t, q, []int64{64, 64})
		return writeDir(t, f(sd))
	}
	drop := func(suffix string) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(sd []safetensors.Tensor) []safetensors.Tensor {
			var out []safetensors.Tensor
			for _, e := range sd {
				if e.Name != "layer.weight"+suffix {
					out = append(out, e)
				}
			}
			return out
		}
	}
	change := func(suffix string, f func(*safetensors.Tensor)) func([]safetensors.Tensor) []safetensors.Tensor {
		return func(sd []safetensors.Tensor) []safetensors.Tensor {
			for i := range sd {
				if sd[i].Name == "layer.weight"+suffix {
					f(&sd[i])
				}
			}
			return sd
		}
	}
	cases := []struct {
		name string
		dir  string
		want error
	}{
		{"no absmax", edit(drop(SuffixAbsmax)), ErrLayout},
		{"no weight", edit(drop("")), ErrLayout},
		{"no nested absmax", edit(drop(SuffixNestedAbsmax)), ErrLayout},
		{"no quant state", edit(drop(SuffixQuantState + "nf4")), ErrLayout},
		{"altered quant map", edit(change(SuffixQuantMap, func(e *safetensors.Tensor) { e.Data[5] ^= 1 })), ErrLayout},
		{"altered nested map", edit(change(SuffixNestedQuantMap, func(e *safetensors.Tensor) { e.Data[100] ^= 1 })), ErrLayout},
		{"absmax as F32", edit(change(SuffixAbsmax, func(e *safetensors.Tensor) { e.DType = safetensors.F32; e.Shape = []int64{16} })), ErrLayout},
		{"short weight", edit(change("", func(e *safetensors.Tensor) { e.Shape = []int64{2047, 1}; e.Data = e.Data[:2047] })), ErrLayout},
		{"bad JSON", edit(change(SuffixQuantState+"nf4", func(e *safetensors.Tensor) { e.Data = []byte("{oops}"); e.Shape = []int64{6} })), ErrQuantState},
		{"wrong shape in JSON", edit(change(SuffixQuantState+"nf4", func(e *safetensors.Tensor) {
			e.Data = bytes.Replace(e.Data, []byte("[64, 64]"), []byte("[64, 65]"), 1)
			e.Shape = []int64{int64(len(e.Data))}
		})), ErrLayout},
	}
	for _, c := range cases {
		ck, err := Open(c.dir)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err %v, want %v", c.name, err, c.want)
		}
		if err == nil {
			ck.Close()
		}
	}
}

// TestDirWriterShardsLikePlanShards checks the streaming sharder against
// safetensors.PlanShards, including tensors larger than the limit.
func TestDirWriterShardsLikePlanShards(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for trial := range 10 {
		var specs []safetensors.TensorSpec
		for i := range 1 + rng.IntN(30) {
			specs = append(specs, safetensors.TensorSpec{Name: fmt.Sprintf("t%02d", i), DType: safetensors.F32, Shape: []int64{int64(rng.IntN(60))}})
		}
		limit := int64(40 + rng.IntN(120))
		plan, err := safetensors.PlanShards(specs, limit)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		dw := NewDirWriter(dir, limit, map[string]string{"format": "pt"})
		for _, s := range specs {
			n, _ := safetensors.ByteLen(s.DType, s.Shape)
			if err := dw.Add(s.Name, s.DType, s.Shape, bytes.NewReader(make([]byte, n))); err != nil {
				t.Fatal(err)
			}
		}
		files, err := dw.Close(-1)
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, s := range plan.Shards {
			want = append(want, s.File)
		}
		if plan.Sharded() {
			want = append(want, safetensors.IndexFileName)
			ix, _ := plan.Index(-1).Marshal()
			if got := mustRead(t, filepath.Join(dir, safetensors.IndexFileName)); !bytes.Equal(got, ix) {
				t.Errorf("trial %d: index\n%s\nwant\n%s", trial, got, ix)
			}
		}
		if fmt.Sprint(files) != fmt.Sprint(want) {
			t.Fatalf("trial %d: files %v, plan %v", trial, files, want)
		}
		ents, _ := os.ReadDir(dir)
		if len(ents) != len(want) {
			t.Errorf("trial %d: %d entries in dir, want %d (temporary files left?)", trial, len(ents), len(want))
		}
		ck, err := safetensors.Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range specs {
			ti, ok := ck.Tensor(s.Name)
			i, _ := plan.ShardOf(s.Name)
			if !ok || filepath.Base(ti.File) != plan.Shards[i].File {
				t.Errorf("trial %d: %s in %v, plan says %s", trial, s.Name, ti.File, plan.Shards[i].File)
			}
		}
		ck.Close()
	}
}

func TestDirWriterAbortLeavesNothing(t *testing.T) {
	dir := t.TempDir()
	dw := NewDirWriter(dir, 16, nil)
	if err := dw.Add("a", safetensors.F32, []int64{3}, bytes.NewReader(make([]byte, 12))); err != nil {
		t.Fatal(err)
	}
	if err := dw.Add("b", safetensors.F32, []int64{3}, bytes.NewReader(make([]byte, 12))); err != nil {
		t.Fatal(err)
	}
	if err := dw.Add("c", safetensors.F32, []int64{3}, bytes.NewReader(make([]byte, 5))); err == nil {
		t.Fatal("short payload accepted")
	}
	if _, err := dw.Close(-1); err == nil {
		t.Fatal("Close after a failure succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("left %v", ents)
	}
}

// Shards finished in the background hold exactly what safetensors.Serialize
// makes of their tensors.
func TestDirWriterShardBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	var specs []safetensors.TensorSpec
	data := map[string][]byte{}
	for i := range 40 {
		s := safetensors.TensorSpec{Name: fmt.Sprintf("t%02d", rng.IntN(1000)*100+i), DType: safetensors.BF16, Shape: []int64{int64(1 + rng.IntN(300_000))}}
		if i%3 == 0 {
			s.DType = safetensors.U8
		}
		n, _ := safetensors.ByteLen(s.DType, s.Shape)
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		specs, data[s.Name] = append(specs, s), p
	}
	const limit = 1 << 20
	plan, err := safetensors.PlanShards(specs, limit)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Shards) < 5 {
		t.Fatalf("only %d shards: the test wants several", len(plan.Shards))
	}
	var total int64
	for _, s := range specs {
		total += int64(len(data[s.Name]))
	}
	// Announced exactly, announced with the U8 sizes guessed 2 bytes long
	// (as quant-state JSON lengths are), announced in another order: the
	// same files; exactly and in order, every byte straight to its place.
	exact := func() []safetensors.Expected {
		var out []safetensors.Expected
		for _, s := range specs {
			out = append(out, safetensors.Expected{TensorSpec: s, Exact: true})
		}
		return out
	}
	guessed := exact()
	for i := range guessed {
		if guessed[i].DType == safetensors.U8 {
			guessed[i].Shape, guessed[i].Exact = []int64{guessed[i].Shape[0] + 2}, false
		}
	}
	reordered := exact()
	rng.Shuffle(len(reordered), func(i, j int) { reordered[i], reordered[j] = reordered[j], reordered[i] })
	for _, c := range []struct {
		name     string
		expected []safetensors.Expected
		inPlace  bool
	}{{"none", nil, false}, {"exact", exact(), true}, {"guessed", guessed, false}, {"reordered", reordered, false}} {
		t.Run(c.name, func(t *testing.T) {
			inPlace := writeShards(t, t.TempDir(), limit, specs, data, plan, c.expected)
			if c.inPlace && inPlace != total {
				t.Errorf("%d of %d bytes straight to their places", inPlace, total)
			}
		})
	}
}

// writeShards writes specs through a DirWriter told to expect expected
// (nothing when nil), checks each shard against Serialize's bytes and
// returns how many bytes went straight to their places.
func writeShards(t *testing.T, dir string, limit int64, specs []safetensors.TensorSpec, data map[string][]byte, plan *safetensors.ShardPlan, expected []safetensors.Expected) int64 {
	t.Helper()
	meta := map[string]string{"format": "pt"}
	dw := NewDirWriter(dir, limit, meta)
	if expected != nil {
		if err := dw.Expect(expected); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range specs {
		if err := dw.Add(s.Name, s.DType, s.Shape, bytes.NewReader(data[s.Name])); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := dw.Close(-1); err != nil {
		t.Fatal(err)
	}
	for _, sh := range plan.Shards {
		var ts []safetensors.Tensor
		for _, s := range sh.Tensors {
			ts = append(ts, safetensors.Tensor{Name: s.Name, DType: s.DType, Shape: s.Shape, Data: data[s.Name]})
		}
		want, err := safetensors.Serialize(ts, meta)
		if err != nil {
			t.Fatal(err)
		}
		if got := mustRead(t, filepath.Join(dir, sh.File)); !bytes.Equal(got, want) {
			t.Errorf("%s: %d bytes differ from Serialize's %d", sh.File, len(got), len(want))
		}
	}
	return dw.InPlaceBytes()
}

// A shard whose background finish fails fails the next Add or Close, and
// nothing is left.
func TestDirWriterBackgroundFailure(t *testing.T) {
	boom := errors.New("disk on fire")
	defer func(f func(*safetensors.Writer) error) { closeShard = f }(closeShard)
	calls := 0
	closeShard = func(w *safetensors.Writer) error {
		if calls++; calls == 1 {
			w.Abort()
			return boom
		}
		return w.Close()
	}
	many := make([]int64, 40)
	for i := range many {
		many[i] = 3
	}
	// Elements of each F32 tensor, 16-byte shards: fails at Close; a tensor
	// over the limit fails, then Close; fails at a later Add.
	for _, tensors := range [][]int64{{3, 3}, {3, 5}, many} {
		calls = 0
		dir := t.TempDir()
		dw := NewDirWriter(dir, 16, nil)
		var err error
		for i := 0; i < len(tensors) && err == nil; i++ {
			err = dw.Add(fmt.Sprint("t", i), safetensors.F32, []int64{tensors[i]}, bytes.NewReader(make([]byte, 4*tensors[i])))
		}
		if err == nil {
			_, err = dw.Close(-1)
		}
		if !errors.Is(err, boom) {
			t.Errorf("%v: got %v, want the background failure", tensors, err)
		}
		if _, err := dw.Close(-1); !errors.Is(err, boom) {
			t.Errorf("%v: Close after the failure: %v", tensors, err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("%v: left %v", tensors, ents)
		}
	}
}
