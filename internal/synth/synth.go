// Package synth makes synthetic inputs for nf4pipe's benchmarks: Hugging Face
// checkpoints of real architectures' dimensions filled with normally
// distributed weights, and tensor streams of any length that never touch disk.
//
// Weights are drawn from a 65536-entry table of normal quantiles indexed by a
// fast PRNG (see table): not a faithful sampler, but finite, deterministic for
// a seed, centred, with the requested spread, and generated at gigabytes per
// second. Norm weights are drawn around 1, as trained models' are.
package synth

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

// Errors of this package; test with errors.Is.
var (
	ErrPreset = errors.New("synth: unknown preset")
	ErrDims   = errors.New("synth: bad dimensions")
	ErrDType  = errors.New("synth: unsupported dtype")
)

// Dims are the dimensions of a llama-layout decoder.
type Dims struct {
	Hidden       int64
	Intermediate int64
	Layers       int64
	Heads        int64
	KVHeads      int64
	Vocab        int64
	Tied         bool  // tie_word_embeddings: no lm_head tensor
	MaxPosition  int64 // max_position_embeddings
	RopeTheta    float64
	BOS, EOS     int64
	// Llama3Rope adds the rope_scaling block Llama 3.1 uses.
	Llama3Rope bool
}

// Preset is a named set of dimensions, taken from the published config.json.
type Preset struct {
	Name string
	Dims Dims
}

// Presets are the models the benchmarks use. "tiny" is for tests.
var Presets = []Preset{
	{"tinyllama-1.1b", Dims{Hidden: 2048, Intermediate: 5632, Layers: 22, Heads: 32, KVHeads: 4,
		Vocab: 32000, MaxPosition: 2048, RopeTheta: 10000, BOS: 1, EOS: 2}},
	{"llama-3.1-8b", Dims{Hidden: 4096, Intermediate: 14336, Layers: 32, Heads: 32, KVHeads: 8,
		Vocab: 128256, MaxPosition: 131072, RopeTheta: 500000, BOS: 128000, EOS: 128001, Llama3Rope: true}},
	{"llama-3.2-1b", Dims{Hidden: 2048, Intermediate: 8192, Layers: 16, Heads: 32, KVHeads: 8,
		Vocab: 128256, Tied: true, MaxPosition: 131072, RopeTheta: 500000, BOS: 128000, EOS: 128001, Llama3Rope: true}},
	{"tiny", Dims{Hidden: 64, Intermediate: 176, Layers: 2, Heads: 4, KVHeads: 2,
		Vocab: 320, MaxPosition: 256, RopeTheta: 10000, BOS: 1, EOS: 2}},
}

// PresetDims returns the dimensions of the named preset.
func PresetDims(name string) (Dims, error) {
	for _, p := range Presets {
		if p.Name == name {
			return p.Dims, nil
		}
	}
	return Dims{}, fmt.Errorf("%w %q (known: %s)", ErrPreset, name, strings.Join(PresetNames(), ", "))
}

func (d Dims) validate() error {
	for _, f := range []struct {
		name string
		v    int64
	}{{"hidden", d.Hidden}, {"intermediate", d.Intermediate}, {"layers", d.Layers},
		{"heads", d.Heads}, {"kv-heads", d.KVHeads}, {"vocab", d.Vocab}} {
		if f.v <= 0 {
			return fmt.Errorf("%w: %s must be positive, got %d", ErrDims, f.name, f.v)
		}
	}
	if d.Hidden%d.Heads != 0 {
		return fmt.Errorf("%w: hidden %d is not a multiple of heads %d", ErrDims, d.Hidden, d.Heads)
	}
	if d.Heads%d.KVHeads != 0 {
		return fmt.Errorf("%w: heads %d is not a multiple of kv-heads %d", ErrDims, d.Heads, d.KVHeads)
	}
	return nil
}

// ConfigJSON returns a llama config.json for d, with the keys transformers
// writes (sorted, two-space indent, as save_pretrained does).
func (d Dims) ConfigJSON() ([]byte, error) {
	if err := d.validate(); err != nil {
		return nil, err
	}
	maxPos := d.MaxPosition
	if maxPos <= 0 {
		maxPos = 2048
	}
	theta := d.RopeTheta
	if theta <= 0 {
		theta = 10000
	}
	var rope any
	if d.Llama3Rope {
		rope = map[string]any{"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
			"original_max_position_embeddings": 8192, "rope_type": "llama3"}
	}
	cfg := map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"attention_bias":          false,
		"attention_dropout":       0.0,
		"bos_token_id":            d.BOS,
		"eos_token_id":            d.EOS,
		"head_dim":                d.Hidden / d.Heads,
		"hidden_act":              "silu",
		"hidden_size":             d.Hidden,
		"initializer_range":       0.02,
		"intermediate_size":       d.Intermediate,
		"max_position_embeddings": maxPos,
		"mlp_bias":                false,
		"model_type":              "llama",
		"num_attention_heads":     d.Heads,
		"num_hidden_layers":       d.Layers,
		"num_key_value_heads":     d.KVHeads,
		"pretraining_tp":          1,
		"rms_norm_eps":            1e-05,
		"rope_scaling":            rope,
		"rope_theta":              theta,
		"tie_word_embeddings":     d.Tied,
		"torch_dtype":             "bfloat16",
		"transformers_version":    "4.46.0",
		"use_cache":               true,
		"vocab_size":              d.Vocab,
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Options say what WriteModel writes.
type Options struct {
	// Config is the config.json to write and to derive the tensors from
	// (pkg/arch decides the names and shapes, for any family it knows).
	Config []byte
	// Seed makes the weights reproducible: the same seed, config and tensor
	// name give the same bytes.
	Seed uint64
	// Std is the standard deviation of the weights (0 means 0.02, the
	// initializer_range of most configs); norm weights get mean 1.
	Std float64
	// MaxShardSize splits the checkpoint into model-0000i-of-0000n.safetensors
	// shards the way save_pretrained does; 0 means 2 GB.
	MaxShardSize int64
	// Progress, when set, is called after each tensor with the bytes written
	// so far and in all.
	Progress func(done, total int64)
}

// Result summarizes a written checkpoint.
type Result struct {
	Dir     string
	Files   []string // shard base names
	Tensors int
	Params  int64
	Bytes   int64 // payload bytes
}

// DefaultMaxShardSize shards both benchmark presets (TinyLlama is 2.2 GB).
const DefaultMaxShardSize = 2_000_000_000

// WriteModel writes a checkpoint into dir (created if needed): the safetensors
// shards, model.safetensors.index.json when sharded, config.json and
// generation_config.json. Memory stays bounded whatever the model's size:
// payloads are generated chunk by chunk straight into their shard.
func WriteModel(dir string, opt Options) (*Result, error) {
	cfg, err := arch.ParseConfig(opt.Config)
	if err != nil {
		return nil, err
	}
	m, err := arch.Resolve(cfg)
	if err != nil {
		return nil, err
	}
	descs := m.Tensors()
	specs := make([]safetensors.TensorSpec, len(descs))
	var params int64
	for i, d := range descs {
		switch d.DType {
		case "BF16", "F16", "F32":
		default:
			return nil, fmt.Errorf("%w: tensor %s is %s (only BF16, F16, F32 are generated)", ErrDType, d.Name, d.DType)
		}
		specs[i] = safetensors.TensorSpec{Name: d.Name, DType: safetensors.DType(d.DType), Shape: d.Shape}
		params += d.Elements()
	}
	maxShard := opt.MaxShardSize
	if maxShard <= 0 {
		maxShard = DefaultMaxShardSize
	}
	plan, err := safetensors.PlanShards(specs, maxShard)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	std := opt.Std
	if std <= 0 {
		std = 0.02
	}
	gen := newGenerator(opt.Seed, std)
	cw := safetensors.NewCheckpointWriter(dir, plan, map[string]string{"format": "pt"}, plan.Index(params))
	res := &Result{Dir: dir, Tensors: len(descs), Params: params, Bytes: plan.TotalSize}
	var done int64
	for _, s := range plan.Shards {
		res.Files = append(res.Files, s.File)
		for _, t := range s.Tensors {
			n, _ := safetensors.ByteLen(t.DType, t.Shape)
			r := gen.tensor(t.Name, string(t.DType), arch.Classify(t.Name, t.Shape).Role, n)
			if err := cw.Add(t.Name, t.DType, t.Shape, r); err != nil {
				cw.Abort()
				return nil, fmt.Errorf("synth: tensor %s: %w", t.Name, err)
			}
			done += n
			if opt.Progress != nil {
				opt.Progress(done, plan.TotalSize)
			}
		}
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("synth: %w", err)
	}
	if err := writeFile(filepath.Join(dir, "config.json"), opt.Config); err != nil {
		return nil, err
	}
	if err := writeFile(filepath.Join(dir, "generation_config.json"), generationConfig(cfg)); err != nil {
		return nil, err
	}
	return res, nil
}

// generationConfig carries the token ids of the config, as save_pretrained
// writes them for a model whose config has no generation settings.
func generationConfig(cfg *arch.Config) []byte {
	var top map[string]any
	_ = json.Unmarshal(cfg.Raw, &top) // ParseConfig accepted it
	g := map[string]any{"_from_model_config": true, "transformers_version": "4.46.0"}
	for _, k := range []string{"bos_token_id", "eos_token_id", "pad_token_id"} {
		if v, ok := top[k]; ok && v != nil {
			g[k] = v
		}
	}
	b, _ := json.MarshalIndent(g, "", "  ")
	return append(b, '\n')
}

func writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// generator hands out deterministic payload readers.
type generator struct {
	seed    uint64
	std     float64
	weights map[string]*table // by dtype
	norms   map[string]*table
}

func newGenerator(seed uint64, std float64) *generator {
	return &generator{seed: seed, std: std, weights: map[string]*table{}, norms: map[string]*table{}}
}

func (g *generator) table(dtype, role string) *table {
	set, mean := g.weights, 0.0
	if role == arch.RoleNorm {
		set, mean = g.norms, 1.0
	}
	t, ok := set[dtype]
	if !ok {
		t = newTable(dtype, mean, g.std)
		set[dtype] = t
	}
	return t
}

// tensor returns a reader of n payload bytes for the named tensor.
func (g *generator) tensor(name, dtype, role string, n int64) io.Reader {
	h := fnv.New64a()
	h.Write([]byte(name))
	r := rng(h.Sum64() ^ g.seed*0x9e3779b97f4a7c15)
	return &payload{t: g.table(dtype, role), r: r, left: n}
}

// payload generates a tensor's bytes chunk by chunk. The PRNG advances one
// draw per 8 bytes generated, whatever the read sizes, so the bytes depend on
// the seed and the name only.
type payload struct {
	t    *table
	r    rng
	left int64
	buf  []byte
	pos  int
}

const genChunk = 1 << 20

func (p *payload) Read(b []byte) (int, error) {
	if p.left <= 0 {
		return 0, io.EOF
	}
	if p.pos == len(p.buf) {
		if p.buf == nil {
			p.buf = make([]byte, genChunk)
		}
		p.buf = p.buf[:cap(p.buf)]
		if p.left < int64(len(p.buf)) {
			p.buf = p.buf[:(p.left+7)&^7]
		}
		p.t.fill(p.buf, &p.r)
		p.pos = 0
	}
	n := copy(b, p.buf[p.pos:])
	if int64(n) > p.left {
		n = int(p.left)
	}
	p.pos += n
	p.left -= int64(n)
	if p.left == 0 {
		p.pos = len(p.buf)
	}
	return n, nil
}

// PresetNames lists the presets, sorted.
func PresetNames() []string {
	names := make([]string, len(Presets))
	for i, p := range Presets {
		names[i] = p.Name
	}
	sort.Strings(names)
	return names
}
