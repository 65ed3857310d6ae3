package arch

import (
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Facts are the model facts detect puts in the stream header's "model" section.
// Dimensions come from config.json; counts and bytes from the tensor list (the
// real one when weights are there, else the one derived from the config).
type Facts struct {
	ModelType     string   `msgpack:"model_type" json:"model_type"`
	Family        string   `msgpack:"family" json:"family"`
	Fallback      bool     `msgpack:"fallback" json:"fallback"`
	Architectures []string `msgpack:"architectures,omitempty" json:"architectures,omitempty"`
	SourceDType   string   `msgpack:"source_dtype" json:"source_dtype"`

	Hidden             int64 `msgpack:"hidden" json:"hidden"`
	Intermediate       int64 `msgpack:"intermediate" json:"intermediate"`
	MoEIntermediate    int64 `msgpack:"moe_intermediate,omitempty" json:"moe_intermediate,omitempty"`
	SharedIntermediate int64 `msgpack:"shared_intermediate,omitempty" json:"shared_intermediate,omitempty"`
	Layers             int64 `msgpack:"layers" json:"layers"`
	Heads              int64 `msgpack:"heads" json:"heads"`
	KVHeads            int64 `msgpack:"kv_heads" json:"kv_heads"`
	HeadDim            int64 `msgpack:"head_dim" json:"head_dim"`
	VHeadDim           int64 `msgpack:"v_head_dim,omitempty" json:"v_head_dim,omitempty"`
	Vocab              int64 `msgpack:"vocab" json:"vocab"`
	MaxPosition        int64 `msgpack:"max_position,omitempty" json:"max_position,omitempty"`

	TiedEmbeddings bool    `msgpack:"tied_embeddings" json:"tied_embeddings"`
	SlidingWindow  int64   `msgpack:"sliding_window,omitempty" json:"sliding_window,omitempty"`
	AttnSoftcap    float64 `msgpack:"attn_softcap,omitempty" json:"attn_softcap,omitempty"`
	FinalSoftcap   float64 `msgpack:"final_softcap,omitempty" json:"final_softcap,omitempty"`
	QKNorm         bool    `msgpack:"qk_norm" json:"qk_norm"`
	FusedQKV       bool    `msgpack:"fused_qkv,omitempty" json:"fused_qkv,omitempty"`
	FusedGateUp    bool    `msgpack:"fused_gate_up,omitempty" json:"fused_gate_up,omitempty"`
	MLA            *MLA    `msgpack:"mla,omitempty" json:"mla,omitempty"`
	CrossAttn      []int64 `msgpack:"cross_attention_layers,omitempty" json:"cross_attention_layers,omitempty"`
	FP8            bool    `msgpack:"fp8,omitempty" json:"fp8,omitempty"`

	Experts *Experts     `msgpack:"experts,omitempty" json:"experts,omitempty"`
	Vision  *VisionFacts `msgpack:"vision,omitempty" json:"vision,omitempty"`
	// Prequantized is set when the checkpoint is already stored in 4 bits.
	Prequantized *Prequantized `msgpack:"prequantized,omitempty" json:"prequantized,omitempty"`

	Params Params `msgpack:"params" json:"params"`
	Bytes  Bytes  `msgpack:"bytes" json:"bytes"`

	Tensors          int `msgpack:"tensors" json:"tensors"`
	QuantizedTensors int `msgpack:"quantized_tensors" json:"quantized_tensors"`
	// Linears lists each distinct linear shape with how often it occurs, for
	// a training-memory model (LoRA sizes, activations).
	Linears []Linear `msgpack:"linears,omitempty" json:"linears,omitempty"`
	// LayerParams and LayerBytes are per decoder layer (index = layer): the
	// parameters, and the bytes after quantization, for device mapping.
	LayerParams []int64 `msgpack:"layer_params,omitempty" json:"layer_params,omitempty"`
	LayerBytes  []int64 `msgpack:"layer_bytes,omitempty" json:"layer_bytes,omitempty"`
}

// Prequantized describes the format of a checkpoint stored in 4 bits by
// bitsandbytes (its config.json's quantization_config and quant states).
type Prequantized struct {
	Method       string   `msgpack:"method" json:"method"` // "bitsandbytes"
	Type         string   `msgpack:"type" json:"type"`     // nf4 or fp4
	BlockSize    int      `msgpack:"blocksize" json:"blocksize"`
	DoubleQuant  bool     `msgpack:"double_quant" json:"double_quant"`
	ComputeDType string   `msgpack:"compute_dtype,omitempty" json:"compute_dtype,omitempty"`
	SkipModules  []string `msgpack:"skip_modules,omitempty" json:"skip_modules,omitempty"`
}

// MLA holds DeepSeek multi-head latent attention ranks.
type MLA struct {
	QLoraRank  int64 `msgpack:"q_lora_rank" json:"q_lora_rank"`
	KVLoraRank int64 `msgpack:"kv_lora_rank" json:"kv_lora_rank"`
	QKNopeDim  int64 `msgpack:"qk_nope_head_dim" json:"qk_nope_head_dim"`
	QKRopeDim  int64 `msgpack:"qk_rope_head_dim" json:"qk_rope_head_dim"`
	VHeadDim   int64 `msgpack:"v_head_dim" json:"v_head_dim"`
}

// Experts describes a mixture of experts.
type Experts struct {
	Count        int64 `msgpack:"count" json:"count"`
	PerToken     int64 `msgpack:"per_token" json:"per_token"`
	Shared       int64 `msgpack:"shared" json:"shared"`
	SparseLayers int64 `msgpack:"sparse_layers" json:"sparse_layers"`
	// DenseLayers are the decoder layers with a dense MLP instead of experts.
	DenseLayers []int64 `msgpack:"dense_layers,omitempty" json:"dense_layers,omitempty"`
}

// VisionFacts describes a vision tower.
type VisionFacts struct {
	Hidden       int64 `msgpack:"hidden" json:"hidden"`
	Intermediate int64 `msgpack:"intermediate" json:"intermediate"`
	Layers       int64 `msgpack:"layers" json:"layers"`
	GlobalLayers int64 `msgpack:"global_layers,omitempty" json:"global_layers,omitempty"`
	Heads        int64 `msgpack:"heads" json:"heads"`
	ImageSize    int64 `msgpack:"image_size,omitempty" json:"image_size,omitempty"`
	PatchSize    int64 `msgpack:"patch_size" json:"patch_size"`
}

// Params counts parameters (elements, FP8 scales excluded) by kind.
type Params struct {
	Total     int64 `msgpack:"total" json:"total"`
	Quantized int64 `msgpack:"quantized" json:"quantized"`
	Kept      int64 `msgpack:"kept" json:"kept"`
	Embedding int64 `msgpack:"embedding" json:"embedding"`
	LMHead    int64 `msgpack:"lm_head" json:"lm_head"`
	Attention int64 `msgpack:"attention" json:"attention"`
	MLP       int64 `msgpack:"mlp" json:"mlp"`
	Experts   int64 `msgpack:"experts" json:"experts"`
	Router    int64 `msgpack:"router" json:"router"`
	Norm      int64 `msgpack:"norm" json:"norm"`
	Bias      int64 `msgpack:"bias" json:"bias"`
	Vision    int64 `msgpack:"vision" json:"vision"`
	Projector int64 `msgpack:"projector" json:"projector"`
	Other     int64 `msgpack:"other" json:"other"`
}

// Bytes are checkpoint sizes: the source tensors, and the bitsandbytes NF4
// checkpoint's tensors (double quantization, blocksize 64) with every constant.
type Bytes struct {
	Source int64 `msgpack:"source" json:"source"`
	NF4    int64 `msgpack:"nf4" json:"nf4"`
	// NF4Slack bounds the error of NF4: the quant-state JSON's length depends
	// on the digits of each tensor's nested offset, known only once quantized.
	// NF4 assumes NominalOffsetDigits characters; the truth is within ±NF4Slack.
	NF4Slack int64 `msgpack:"nf4_slack" json:"nf4_slack"`
}

// Linear is one linear shape and how many tensors have it.
type Linear struct {
	Role     string `msgpack:"role" json:"role"`
	Part     string `msgpack:"part" json:"part"`
	Out      int64  `msgpack:"out" json:"out"`
	In       int64  `msgpack:"in" json:"in"`
	Count    int64  `msgpack:"count" json:"count"`
	Quantize bool   `msgpack:"quantize" json:"quantize"`
}

// Bitsandbytes defaults transformers writes: NF4, blocksize 64, nested 256.
const (
	BlockSize       = 64
	NestedBlockSize = 256
	// NominalOffsetChars is the assumed length of the nested offset's repr in
	// the quant-state JSON, like "0.050658226013183594"; SlackPerTensor bounds
	// how far a real one is from it for offsets in [1e-4, 1e3).
	NominalOffsetChars = 20
	SlackPerTensor     = 4
)

var dtypeBytes = map[string]int64{"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
	"I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1}

// DTypeSize returns the bytes per element of a safetensors dtype, 0 if unknown.
func DTypeSize(d string) int64 { return dtypeBytes[d] }

// quantStateJSON returns the bytes transformers stores as
// <name>.quant_state.bitsandbytes__nf4 for an NF4 tensor with double
// quantization whose nested offset is offset (checkpoint.QuantStateJSON).
func quantStateJSON(dtype string, shape []int64, offset float32) ([]byte, error) {
	return checkpoint.QuantStateJSON(&tensorstream.Tensor{DType: tensorstream.DType(dtype), Shape: shape,
		Encoding: tensorstream.BNB4, Quant: &tensorstream.QuantState{Type: "nf4", BlockSize: BlockSize,
			DoubleQuant: true, NestedBlockSize: NestedBlockSize, NestedOffset: offset}})
}

// NF4Bytes returns the bytes of one quantized tensor in a transformers
// bitsandbytes checkpoint: packed codes, U8 absmax, F32 nested absmax,
// nested_quant_map (256 F32), quant_map (16 F32) and the quant-state JSON,
// whose length is given by jsonLen.
func NF4Bytes(elements int64, jsonLen int64) int64 {
	blocks := ceilDiv(elements, BlockSize)
	return ceilDiv(elements, 2) + blocks + 4*ceilDiv(blocks, NestedBlockSize) + 256*4 + 16*4 + jsonLen
}

// NominalQuantStateLen is the quant-state JSON length assuming a nested offset
// of NominalOffsetChars characters.
// A dtype bitsandbytes does not quantize (Decide quantizes none) counts as BF16.
func NominalQuantStateLen(dtype string, shape []int64) int64 {
	js, err := quantStateJSON(dtype, shape, 0)
	if err != nil {
		js, _ = quantStateJSON("BF16", shape, 0)
	}
	return int64(len(js)) - 3 + NominalOffsetChars // "0.0" is 3 chars
}

// Summarize computes the facts of a model from its annotated tensors. m may be
// nil (weights without config.json): dimensions are then left zero.
func Summarize(m *Model, ts []Tensor) *Facts {
	f := &Facts{Family: Generic.Name, Fallback: true}
	if m != nil {
		f.fill(m)
	}
	f.Tensors = len(ts)
	linears := map[Linear]int64{}
	var order []Linear
	layers := int64(0)
	for _, t := range ts {
		if t.Layer >= 0 && int64(t.Layer)+1 > layers {
			layers = int64(t.Layer) + 1
		}
	}
	if m == nil {
		f.Layers = layers
	}
	f.LayerParams = make([]int64, layers)
	f.LayerBytes = make([]int64, layers)
	p := &f.Params
	for _, t := range ts {
		n := t.Elements()
		src := n * DTypeSize(t.DType)
		f.Bytes.Source += src
		out := src
		if t.Quantize {
			out = NF4Bytes(n, NominalQuantStateLen(t.DType, t.Shape))
			f.Bytes.NF4Slack += SlackPerTensor
			f.QuantizedTensors++
		}
		f.Bytes.NF4 += out
		if t.Role == RoleScale {
			continue
		}
		p.Total += n
		if t.Quantize {
			p.Quantized += n
		} else {
			p.Kept += n
		}
		if t.Layer >= 0 {
			f.LayerParams[t.Layer] += n
			f.LayerBytes[t.Layer] += out
		}
		switch t.Role {
		case RoleEmbedding:
			p.Embedding += n
		case RoleLMHead:
			p.LMHead += n
		case RoleAttnQ, RoleAttnK, RoleAttnV, RoleAttnO, RoleAttnQKV, RoleAttnQA, RoleAttnQB, RoleAttnKVA, RoleAttnKVB:
			p.Attention += n
		case RoleMLPGate, RoleMLPUp, RoleMLPDown, RoleMLPGateUp, RoleSharedExpert:
			p.MLP += n
		case RoleExpert:
			p.Experts += n
		case RoleRouter:
			p.Router += n
		case RoleNorm:
			p.Norm += n
		case RoleBias:
			p.Bias += n
		case RoleVision:
			p.Vision += n
		case RoleProjector:
			p.Projector += n
		default:
			p.Other += n
		}
		if len(t.Shape) == 2 && (t.Linear || t.Role == RoleExpert) {
			k := Linear{Role: t.Role, Part: t.Part, Out: t.Shape[0], In: t.Shape[1], Quantize: t.Quantize}
			if linears[k] == 0 {
				order = append(order, k)
			}
			linears[k]++
		}
	}
	for _, k := range order {
		k.Count = linears[k]
		f.Linears = append(f.Linears, k)
	}
	return f
}

func (f *Facts) fill(m *Model) {
	t := &m.Text
	f.ModelType, f.Family, f.Fallback = m.ModelType, m.Family.Name, m.Family.Fallback
	f.Architectures = m.Architectures
	f.SourceDType = m.DType
	f.Hidden, f.Intermediate, f.Layers = t.Hidden, t.Intermediate, t.Layers
	f.Heads, f.KVHeads, f.HeadDim, f.Vocab = t.Heads, t.KVHeads, t.HeadDim, t.Vocab
	f.MaxPosition = t.MaxPosition
	f.TiedEmbeddings = t.Tied
	f.SlidingWindow = t.SlidingWindow
	f.AttnSoftcap, f.FinalSoftcap = t.AttnSoftcap, t.FinalSoftcap
	f.QKNorm = t.QKNorm
	f.FusedQKV = m.Family.Attn == AttnFusedQKV
	f.FusedGateUp = m.Family.MLP == MLPFusedGated
	f.CrossAttn = t.CrossAttnLayers
	f.FP8 = t.FP8
	if m.Family.Attn == AttnMLA {
		f.VHeadDim = t.VHeadDim
		f.MLA = &MLA{QLoraRank: t.QLoraRank, KVLoraRank: t.KVLoraRank, QKNopeDim: t.QKNopeDim,
			QKRopeDim: t.QKRopeDim, VHeadDim: t.VHeadDim}
	}
	if t.Experts > 0 {
		f.MoEIntermediate, f.SharedIntermediate = t.MoEIntermediate, t.SharedIntermediate
		e := &Experts{Count: t.Experts, PerToken: t.ExpertsPerToken, Shared: t.SharedExperts}
		for l, sparse := range t.SparseLayers {
			if sparse {
				e.SparseLayers++
			} else {
				e.DenseLayers = append(e.DenseLayers, int64(l))
			}
		}
		f.Experts = e
	}
	if v := m.Vision; v != nil {
		f.Vision = &VisionFacts{Hidden: v.Hidden, Intermediate: v.Intermediate, Layers: v.Layers,
			GlobalLayers: v.GlobalLayers, Heads: v.Heads, ImageSize: v.ImageSize, PatchSize: v.PatchSize}
	}
}

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(strings.TrimSpace(s), 64) }
