package arch

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// publishedTotals are the real parameter counts of the models whose config.json
// files are in testdata/configs (copied from ../shared/testdata/configs), each
// with where the figure comes from. "index" means model.safetensors.index.json metadata.total_size / 2 for a
// bf16 checkpoint, found quoted in public repositories (search index,
// 2025-2026); "numel" means sum(p.numel() for p in model.parameters()) quoted in
// public code; "hub" means the Hugging Face API's safetensors.total.
var publishedTotals = map[string]struct {
	total  int64
	source string
}{
	"meta-llama__Llama-3.1-8B.json":                {8_030_261_248, "issue text; index total_size 16060522496 / 2"},
	"tiny-llama.json":                              {557_696, "testdata/models/llama/model.safetensors: the elements of its tensors (the same config)"},
	"meta-llama__Llama-3.1-8B-Instruct.json":       {8_030_261_248, "same weights shape as the base model; index total_size 16060522496 / 2"},
	"meta-llama__Llama-3.1-70B.json":               {70_553_706_496, "index total_size 141107412992 / 2"},
	"meta-llama__Llama-3.2-1B-Instruct.json":       {1_235_814_400, "numel, quoted as Llama-3.2-1B parameter count in several repos"},
	"unsloth__Llama-3.2-1B-Instruct-bnb-4bit.json": {1_235_814_400, "the unquantized Llama-3.2-1B-Instruct it was made from"},
	"meta-llama__Llama-2-7b-chat-hf.json":          {6_738_415_616, "numel 'all params: 6738415616' (peft print_trainable_parameters)"},
	// This config was written from Llama-2-13B's published dimensions, not
	// copied; the total is the count those dimensions give (untied 32000 x
	// 5120 embeddings, 40 layers of 317,204,480), which is the 13.0B quoted.
	"meta-llama__Llama-2-13b-hf.json":                {13_015_864_320, "count from the published dimensions (config written by hand)"},
	"meta-llama__Llama-3.2-11B-Vision-Instruct.json": {10_670_220_835, "hub safetensors total quoted for meta-llama/llama-3.2-11b-vision-instruct"},
	"TinyLlama__TinyLlama-1.1B-Chat-v1.0.json":       {1_100_048_384, "numel; safetensors metadata {F32: 1100048384}"},
	"mistralai__Mistral-7B-v0.1.json":                {7_241_732_096, "GGUF general.parameter_count 7241732096"},
	"mistralai__Mixtral-8x7B-v0.1.json":              {46_702_792_704, "index total_size 93405585408 / 2"},
	"Qwen__Qwen2.5-7B-Instruct.json":                 {7_615_616_512, "GGUF general.parameter_count 7615616512"},
	"Qwen__Qwen2.5-VL-7B-Instruct.json":              {8_292_166_656, "index total_size 16584333312 / 2"},
	"Qwen__Qwen3-8B.json":                            {8_190_735_360, "hub API safetensors {BF16: 8190735360}"},
	"Qwen__Qwen3-30B-A3B.json":                       {30_532_122_624, "index total_size 61064245248 / 2"},
	"google__gemma-2-9b-it.json":                     {9_241_705_984, "index total_size 18483411968 / 2"},
	"google__gemma-3-1b-it.json":                     {999_885_952, "hub API safetensors total 999885952"},
	"google__gemma-3-4b-it.json":                     {4_300_079_472, "numel of Gemma3ForConditionalGeneration 4300079472"},
	"llava-hf__llava-1.5-7b-hf.json":                 {7_063_427_072, "numel of LlavaForConditionalGeneration 7063427072"},
	"microsoft__Phi-3-mini-4k-instruct.json":         {3_821_079_552, "hub NumWeights 3821079552"},
	"microsoft__phi-4.json":                          {14_659_507_200, "index total_size 29319014400 / 2"},
	"deepseek-ai__DeepSeek-V2-Lite.json":             {15_706_484_224, "index total_size 31412968448 / 2"},
	// The hub checkpoint adds the multi-token-prediction layer 61 (which
	// transformers does not load) and FP8 scales; 671B is the main model.
	"deepseek-ai__DeepSeek-V3.json": {671_026_419_200, "DeepSeek-V3 main-model parameter count, 671026419200, quoted in many repos"},
}

func loadModel(t *testing.T, path string) *Model {
	t.Helper()
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	cfg, err := ParseConfig(data)
	require.NoError(t, err, path)
	m, err := Resolve(cfg)
	require.NoError(t, err, path)
	return m
}

func configTotal(m *Model) int64 {
	return Summarize(m, Annotate(m.Tensors(), Policy{})).Params.Total
}

// TestLlama31Total runs always, on the copy in the repository's testdata.
func TestLlama31Total(t *testing.T) {
	m := loadModel(t, fixtures.Path(t, "configs", "meta-llama__Llama-3.1-8B.json"))
	assert.EqualValues(t, 8_030_261_248, configTotal(m), "Llama-3.1-8B total")
	assert.Equal(t, "llama", m.Family.Name)
	assert.False(t, m.Family.Fallback, "fallback")
}

// derivedConfigs are the configs of testdata/configs/derived, made from
// another with fewer layers (testdata/configs/SOURCES.md): no total was
// published for them.
var derivedConfigs = map[string]string{
	"derived/deepseek-v2-lite-8l.json": "deepseek-ai__DeepSeek-V2-Lite.json",
	"derived/qwen3-30b-a3b-8l.json":    "Qwen__Qwen3-30B-A3B.json",
	"derived/mixtral-8x7b-4l.json":     "mistralai__Mixtral-8x7B-v0.1.json",
}

func TestPublishedTotals(t *testing.T) {
	dir := fixtures.Path(t, "configs")
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	derived, _ := filepath.Glob(filepath.Join(dir, "derived", "*.json"))
	require.NotEmpty(t, files, "configs")
	require.Len(t, derived, len(derivedConfigs), "testdata/configs/derived")
	for _, f := range append(files, derived...) {
		name, _ := filepath.Rel(dir, f)
		if src, ok := derivedConfigs[name]; ok {
			// The source's published total less the parameters of the
			// layers the derived config leaves out.
			full, want := loadModel(t, filepath.Join(dir, src)), publishedTotals[src].total
			layers := loadModel(t, f).Text.Layers
			for _, at := range Annotate(full.Tensors(), Policy{}) {
				if int64(at.Layer) >= layers {
					n := int64(1)
					for _, d := range at.Shape {
						n *= d
					}
					want -= n
				}
			}
			assert.Equal(t, want, configTotal(loadModel(t, f)), "%s: %s's published total less layers %d and on", name, src, layers)
			continue
		}
		want, ok := publishedTotals[name]
		if !assert.True(t, ok, "%s: no published total recorded (or, for a config in derived/, no source in derivedConfigs); add it with its source", name) {
			continue
		}
		m := loadModel(t, f)
		assert.False(t, m.Family.Fallback, "%s: fell back to the generic decoder", name)
		assert.Equal(t, want.total, configTotal(m), "%s (%s): total (%s)", name, m.Family.Name, want.source)
	}
}

// tinyModels: the shared ten and the families whose fixtures are in the
// repository (those never skip).
var tinyModels = append(append([]string(nil), fixtures.SharedModels...), fixtures.RepoModels...)

func openTiny(t *testing.T, name string) (*Model, *safetensors.Checkpoint) {
	dir := fixtures.Model(t, name)
	m := loadModel(t, filepath.Join(dir, "config.json"))
	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	t.Cleanup(func() { ck.Close() })
	return m, ck
}

func realDescs(ck *safetensors.Checkpoint) []Desc {
	var out []Desc
	for _, ti := range ck.Tensors() {
		out = append(out, Desc{Name: ti.Name, DType: string(ti.DType), Shape: ti.Shape})
	}
	return out
}

func descKey(d Desc) string {
	var b strings.Builder
	b.WriteString(d.Name + " " + d.DType)
	for _, s := range d.Shape {
		b.WriteString(" " + itoa(s))
	}
	return b.String()
}

func TestTinyConfigTensorsEqualWeights(t *testing.T) {
	for _, name := range tinyModels {
		t.Run(name, func(t *testing.T) {
			m, ck := openTiny(t, name)
			var fromCfg, fromFile []string
			for _, d := range m.Tensors() {
				fromCfg = append(fromCfg, descKey(d))
			}
			for _, d := range realDescs(ck) {
				fromFile = append(fromFile, descKey(d))
			}
			slices.Sort(fromCfg)
			slices.Sort(fromFile)
			assert.Equal(t, fromFile, fromCfg, "tensors from config.json, from the weights")
			fc := Summarize(m, Annotate(m.Tensors(), Policy{}))
			fw := Summarize(m, Annotate(realDescs(ck), Policy{}))
			assert.Equal(t, fw.Params, fc.Params, "parameters: config, weights")
			assert.Equal(t, fw.Bytes, fc.Bytes, "bytes: config, weights")
		})
	}
}

// bnbQuantized returns the names stored 4-bit in a transformers bnb checkpoint,
// with each one's exact byte total (its six tensors) and quant-state JSON.
func bnbQuantized(t *testing.T, name string) (map[string]int64, map[string][]byte, int64) {
	ck, err := safetensors.Open(fixtures.Model(t, name+"-bnb-nf4"))
	require.NoError(t, err)
	defer ck.Close()
	const qs = ".quant_state.bitsandbytes__nf4"
	sizes, jsons := map[string]int64{}, map[string][]byte{}
	var total int64
	for _, ti := range ck.Tensors() {
		total += ti.Size()
		if base, ok := strings.CutSuffix(ti.Name, qs); ok {
			sizes[base] = 0
			b, err := ck.Files[ti.Shard].ReadTensor(ti.Name)
			require.NoError(t, err)
			jsons[base] = b
		}
	}
	for _, ti := range ck.Tensors() {
		for base := range sizes {
			if ti.Name == base || strings.HasPrefix(ti.Name, base+".") {
				sizes[base] += ti.Size()
			}
		}
	}
	return sizes, jsons, total
}

func TestDefaultPolicyMatchesTransformers(t *testing.T) {
	for _, name := range tinyModels {
		t.Run(name, func(t *testing.T) {
			m, ck := openTiny(t, name)
			want, jsons, bnbTotal := bnbQuantized(t, name)
			ts := Annotate(realDescs(ck), Policy{})
			got := map[string]bool{}
			for _, tt := range ts {
				if tt.Quantize {
					got[tt.Name] = true
					assert.Contains(t, want, tt.Name, "detect quantizes %s (%s), transformers keeps it", tt.Name, tt.Role)
				}
			}
			for n := range want {
				assert.True(t, got[n], "transformers quantizes %s, detect keeps it", n)
			}
			// Byte sizes: exact per tensor once the offset is known, and the
			// estimate within its stated slack for the whole checkpoint.
			f := Summarize(m, ts)
			for _, tt := range ts {
				if !tt.Quantize {
					continue
				}
				var q struct{ off float32 }
				js := jsons[tt.Name]
				q.off = offsetOf(t, js)
				exact, err := quantStateJSON(tt.DType, tt.Shape, q.off)
				if assert.NoError(t, err, tt.Name) {
					assert.Equal(t, string(js), string(exact), "%s: quant state", tt.Name)
				}
				assert.Equal(t, want[tt.Name], NF4Bytes(tt.Elements(), int64(len(js))), "%s: NF4 bytes", tt.Name)
			}
			assert.InDelta(t, bnbTotal, f.Bytes.NF4, float64(f.Bytes.NF4Slack), "NF4 estimate against the checkpoint, within its slack")
		})
	}
}

func offsetOf(t *testing.T, js []byte) float32 {
	_, after, ok := strings.Cut(string(js), `"nested_offset": `)
	require.True(t, ok, "no nested_offset in %s", js)
	v, err := parseFloat(strings.TrimSuffix(after, "}"))
	require.NoError(t, err)
	return float32(v)
}

// TestPolicyOptions: the policy's switches on qwen2_moe (2 layers of 4
// experts, a shared expert and q/k/v/o each): by default 8 tensors a layer
// are 4-bit, the routed experts' 24 only when asked.
func TestPolicyOptions(t *testing.T) {
	_, ck := openTiny(t, "qwen2_moe")
	descs := realDescs(ck)
	count := func(p Policy) (n int) {
		for _, tt := range Annotate(descs, p) {
			if tt.Quantize {
				n++
			}
		}
		return n
	}
	base := count(Policy{})
	assert.Equal(t, 2*8, base, "default policy")
	assert.Equal(t, base+2*4*3, count(Policy{QuantizeExperts: true}), "QuantizeExperts")
	assert.Equal(t, base-2, count(Policy{Skip: []string{"*.self_attn.q_proj.weight"}}), "Skip q_proj")
	assert.Equal(t, base/2, count(Policy{Only: []string{"model.layers.0.*"}}), "Only layer 0")
	assert.ErrorIs(t, Policy{Skip: []string{"["}}.Validate(), ErrPattern)
}

func TestFP8Refused(t *testing.T) {
	m := loadModel(t, fixtures.Path(t, "configs", "deepseek-ai__DeepSeek-V3.json"))
	var fp8, q int
	for _, tt := range Annotate(m.Tensors(), Policy{}) {
		if tt.DType == "F8_E4M3" {
			fp8++
			require.False(t, tt.Quantize, tt.Name)
			require.Contains(t, tt.Reason, "FP8", tt.Name)
		}
		if tt.Quantize {
			q++
		}
	}
	assert.NotZero(t, fp8, "fp8 tensors")
	assert.Zero(t, q, "quantized")
}

func TestHostileConfigs(t *testing.T) {
	cases := map[string]string{
		"not json":         `{"model_type": "llama",`,
		"array":            `[1,2]`,
		"null":             `null`,
		"trailing":         `{} {}`,
		"missing hidden":   `{"model_type": "mistral", "hidden_size": null}`,
		"negative layers":  `{"model_type": "llama", "num_hidden_layers": -3}`,
		"fractional":       `{"model_type": "llama", "hidden_size": 4096.5}`,
		"heads not divide": `{"model_type": "llama", "hidden_size": 100, "num_attention_heads": 3}`,
		"kv not divide":    `{"model_type": "llama", "num_key_value_heads": 5}`,
		"huge":             `{"model_type": "llama", "vocab_size": 1e30}`,
		"generic empty":    `{"model_type": "mystery"}`,
	}
	for name, js := range cases {
		cfg, err := ParseConfig([]byte(js))
		if err == nil {
			_, err = Resolve(cfg)
		}
		if assert.Error(t, err, name) {
			assert.True(t, errors.Is(err, ErrConfig) || errors.Is(err, ErrShape), "%s: error %v wraps neither ErrConfig nor ErrShape", name, err)
		}
	}
}

// TestCheckedFamiliesHaveFixtures holds Family.Checked to the tests: a family
// may claim to be verified only on a fixture the byte-identity tests run
// (here, pkg/place and e2e), and every such fixture's family claims it.
func TestCheckedFamiliesHaveFixtures(t *testing.T) {
	claimed := map[string]bool{}
	for _, f := range Families {
		if f.Checked == "" {
			continue
		}
		name := filepath.Base(f.Checked)
		assert.Contains(t, tinyModels, name, "%s: Checked %q is not among the tested fixtures", f.Name, f.Checked)
		inRepo := strings.HasPrefix(f.Checked, "testdata/")
		assert.Equal(t, inRepo, slices.Contains(fixtures.RepoModels, name), "%s: Checked %q, but the fixture is %s", f.Name, f.Checked, map[bool]string{true: "in the repository", false: "in ../shared"}[!inRepo])
		claimed[name] = true
	}
	for _, name := range fixtures.RepoModels {
		dir := fixtures.Model(t, name)
		m := loadModel(t, filepath.Join(dir, "config.json"))
		assert.Equal(t, "testdata/models/"+name, m.Family.Checked, "%s: family %s", name, m.Family.Name)
	}
	for _, name := range tinyModels {
		assert.True(t, claimed[name], "fixture %s verifies no family", name)
	}
	assert.Empty(t, Generic.Checked, "the generic fallback claims a fixture")
}

// TestKeptDTypesMatchTransformers: every tensor the default policy keeps is
// stored in the dtype transformers' 4-bit checkpoint holds it in: its own,
// or F32 where the family keeps the module float32 (KeepF32Tensors).
func TestKeptDTypesMatchTransformers(t *testing.T) {
	for _, name := range tinyModels {
		t.Run(name, func(t *testing.T) {
			m, ck := openTiny(t, name)
			ref, err := safetensors.Open(fixtures.Model(t, name+"-bnb-nf4"))
			require.NoError(t, err)
			defer ref.Close()
			stored := map[string]string{}
			for _, ti := range ref.Tensors() {
				stored[ti.Name] = string(ti.DType)
			}
			ts := Annotate(realDescs(ck), Policy{})
			KeepF32Tensors(ts, m.Family)
			for _, tt := range ts {
				if tt.Quantize {
					continue
				}
				want := tt.DType
				if tt.Store != "" {
					want = tt.Store
				}
				assert.Equal(t, want, stored[tt.Name], "%s: kept as", tt.Name)
			}
		})
	}
}

func TestKeepF32TensorsMatchesWholeComponents(t *testing.T) {
	f := &Family{Name: "x", KeepF32: []string{"e_score_correction_bias"}}
	ts := []Tensor{
		{Desc: Desc{Name: "model.layers.1.mlp.gate.e_score_correction_bias", DType: "BF16"}},
		{Desc: Desc{Name: "model.layers.1.mlp.gate.e_score_correction_bias", DType: "F16"}},
		{Desc: Desc{Name: "model.layers.1.mlp.gate.e_score_correction_bias", DType: "F32"}},
		{Desc: Desc{Name: "model.layers.1.mlp.gate.my_e_score_correction_bias", DType: "BF16"}},
		{Desc: Desc{Name: "model.layers.1.mlp.gate.weight", DType: "BF16"}},
	}
	KeepF32Tensors(ts, f)
	for i, want := range []string{"F32", "F32", "", "", ""} {
		assert.Equal(t, want, ts[i].Store, "%s %s: store", ts[i].Name, ts[i].DType)
	}
	KeepF32Tensors(ts, nil)
}
