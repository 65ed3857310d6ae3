package sections

// Model is detect's "model" section: the model facts.
// Dimensions come from config.json; counts and bytes from the tensor list (the
// real one when weights are there, else the one derived from the config).
type Model struct {
	ModelType string `msgpack:"model_type" json:"model_type"`
	Family    string `msgpack:"family" json:"family"`
	Fallback  bool   `msgpack:"fallback" json:"fallback"`
	// PolicyVerifiedOn is the family's Checked fixture: where the default
	// policy was found byte-identical to transformers + bitsandbytes. Empty:
	// never verified (a family without a fixture, or the fallback).
	PolicyVerifiedOn string   `msgpack:"policy_verified_on,omitempty" json:"policy_verified_on"`
	Architectures    []string `msgpack:"architectures,omitempty" json:"architectures,omitempty"`
	SourceDType      string   `msgpack:"source_dtype" json:"source_dtype"`

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
	Type         string   `msgpack:"type" json:"type"`     // a name of pkg/qtype's registry
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
	// NF4 assumes arch.NominalOffsetChars characters; the truth is within ±NF4Slack.
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
