package arch

import "strings"

// The ways a decoder layer's parts are laid out in a checkpoint. A family is a
// choice of one of each, plus names and defaults: the table below is the whole
// registry, and the tensor builder in layout.go reads only these values.
type (
	AttnKind   int
	MLPKind    int
	NormKind   int
	QKNormKind int
	VisionKind int
)

const (
	AttnSeparate AttnKind = iota // q_proj, k_proj, v_proj, o_proj
	AttnFusedQKV                 // qkv_proj, o_proj (phi3)
	AttnMLA                      // DeepSeek multi-head latent attention
)

const (
	MLPGated      MLPKind = iota // gate_proj, up_proj, down_proj
	MLPFusedGated                // gate_up_proj, down_proj (phi3)
	MoEMixtral                   // block_sparse_moe.gate + experts.N.w1/w2/w3
	MoEQwen                      // mlp.gate + mlp.experts.N.*_proj (+ shared_expert in qwen2_moe)
	MoEDeepSeek                  // mlp.gate + experts + shared_experts, first layers dense
)

const (
	NormPrePost  NormKind = iota // input_layernorm, post_attention_layernorm
	NormSandwich                 // + pre_feedforward_layernorm, post_feedforward_layernorm (gemma2/3)
	NormInput                    // input_layernorm only (cohere, parallel block)
)

const (
	QKNormNone    QKNormKind = iota
	QKNormHead               // q_norm, k_norm of [head_dim] (qwen3, gemma3)
	QKNormPerHead            // q_norm [heads, head_dim], k_norm [kv_heads, head_dim] (cohere)
)

const (
	VisionNone     VisionKind = iota
	VisionCLIP                // llava: CLIP ViT + 2-layer MLP projector
	VisionSiglip              // gemma3: SigLIP ViT + projection weight and norm
	VisionQwen2VL             // qwen2_vl: ViT with LayerNorm and fc1/fc2, merger
	VisionQwen25VL            // qwen2_5_vl: ViT with RMSNorm and gated MLP, merger
	VisionMllama              // mllama: tiled ViT with gated global layers, linear projector
)

// Family is one architecture family and what a checkpoint of it looks like.
type Family struct {
	Name          string
	ModelTypes    []string // model_type values, top level
	Architectures []string // architectures[] class names
	Fallback      bool     // the generic decoder: names guessed, not known

	Attn   AttnKind
	MLP    MLPKind
	Norm   NormKind
	QKNorm QKNormKind
	Vision VisionKind

	// QKNormKey is the config key that switches QKNorm on; "" means the
	// family always has it (cohere's use_qk_norm defaults to off).
	QKNormKey string
	// GeluMLP: the MLP activation is a GELU (gemma's gelu_pytorch_tanh);
	// SiLU otherwise. The planner sizes the saved activations by it.
	GeluMLP bool

	// AlwaysQKVBias: q/k/v carry a bias whatever attention_bias says (qwen2).
	AlwaysQKVBias bool
	// SoftCapping: the family may set attn/final logit soft-capping (gemma2).
	SoftCapping bool
	// SlidingWindow: the family may use sliding-window attention.
	SlidingWindow bool
	// CrossAttention: some decoder layers are cross-attention layers (mllama).
	CrossAttention bool
	// KeepF32 lists the modules transformers holds in float32 whatever the
	// model's dtype (the model class's _keep_in_fp32_modules_strict), matched
	// as whole dotted components of a tensor's name: a kept tensor of one is
	// written F32 from a 16-bit source (KeepF32Tensors).
	KeepF32 []string

	// Checkpoint key prefixes as transformers writes them (5.x, legacy-compatible
	// names) and as the published checkpoints use them.
	TextPrefix   string // "model." or "language_model.model."
	LMHead       string // "lm_head.weight" or "language_model.lm_head.weight"
	VisionPrefix string // "vision_tower.", "visual.", "vision_model."
	ProjPrefix   string // "multi_modal_projector."
	// Renames: the names transformers 5 gives those keys in memory, where
	// they differ. A vision-language checkpoint keeps its legacy keys, and
	// transformers renames them on load (the model class's checkpoint
	// conversion mapping) into the modules of its ...ForConditionalGeneration:
	// `model` (vision tower, projector, `language_model`) and `lm_head`.
	// device_map keys are module names, so they use these (ModuleName).
	Renames []Rename

	// TextDefaults are the defaults of the text config class, used for keys
	// config.json leaves out; VisionDefaults likewise for vision_config.
	TextDefaults   obj
	VisionDefaults obj
	// NestedText: the text dimensions live in text_config (else at top level,
	// or in text_config when present).
	NestedText bool

	// Checked names the tiny fixture (under testdata/models, in this repository
	// or in ../shared) on which detect | quantize | place was found
	// byte-identical to the checkpoint transformers + bitsandbytes wrote; the
	// tests hold every family that names one to it. Empty: no such fixture, so
	// the policy follows transformers' rules by tensor name, unverified.
	Checked string
}

// Rename is a checkpoint key prefix and the module name prefix transformers 5
// gives it once loaded.
type Rename struct{ Key, Module string }

// visionLMRenames is the conversion of llava, mllama and gemma3, whose
// checkpoints nest the decoder as language_model.model and its head as
// language_model.lm_head (transformers 5.17, models/{llava,mllama,gemma3}/
// modeling_*.py: `self.model` holds the tower, the projector and
// `language_model`, the decoder without its head; `self.lm_head` is beside it).
func visionLMRenames(tower string) []Rename {
	return []Rename{{"language_model.model.", "model.language_model."}, {"language_model.lm_head.", "lm_head."},
		{tower + ".", "model." + tower + "."}, {"multi_modal_projector.", "model.multi_modal_projector."}}
}

// qwenVLRenames: qwen2-vl and qwen2.5-vl checkpoints keep the text model at
// model. and the tower at visual.; transformers 5 holds them as
// model.language_model and model.visual, lm_head unchanged
// (models/qwen2_vl/modeling_qwen2_vl.py, models/qwen2_5_vl/modeling_qwen2_5_vl.py).
var qwenVLRenames = []Rename{{"visual.", "model.visual."}, {"model.", "model.language_model."}}

// ModuleName is the name transformers 5 gives the tensor stored under key
// once the model is loaded: the first of f.Renames whose Key begins key
// replaces that prefix. A key already in the in-memory form (it begins with
// one of the Modules) stays as it is.
func (f *Family) ModuleName(key string) string {
	for _, r := range f.Renames {
		if strings.HasPrefix(key, r.Module) {
			return key
		}
	}
	for _, r := range f.Renames {
		if strings.HasPrefix(key, r.Key) {
			return r.Module + key[len(r.Key):]
		}
	}
	return key
}

var llamaDefaults = obj{"vocab_size": n(32000), "hidden_size": n(4096), "intermediate_size": n(11008),
	"num_hidden_layers": n(32), "num_attention_heads": n(32), "max_position_embeddings": n(2048),
	"tie_word_embeddings": false}

var gemma3TextDefaults = obj{"vocab_size": n(262208), "hidden_size": n(2304), "intermediate_size": n(9216),
	"num_hidden_layers": n(26), "num_attention_heads": n(8), "num_key_value_heads": n(4), "head_dim": n(256),
	"max_position_embeddings": n(131072), "sliding_window": n(4096), "tie_word_embeddings": true}

// Families is the registry. Lookup matches model_type first, then architectures.
var Families = []*Family{
	{Name: "llama", Checked: "testdata/models/llama", ModelTypes: []string{"llama"}, Architectures: []string{"LlamaForCausalLM"},
		TextPrefix: "model.", LMHead: "lm_head.weight", TextDefaults: llamaDefaults},
	{Name: "mistral", Checked: "../shared/testdata/models/mistral", ModelTypes: []string{"mistral"}, Architectures: []string{"MistralForCausalLM"},
		SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(32000), "hidden_size": n(4096), "intermediate_size": n(14336),
			"num_hidden_layers": n(32), "num_attention_heads": n(32), "num_key_value_heads": n(8),
			"max_position_embeddings": n(131072), "sliding_window": n(4096), "tie_word_embeddings": false}},
	{Name: "mixtral", Checked: "../shared/testdata/models/mixtral", ModelTypes: []string{"mixtral"}, Architectures: []string{"MixtralForCausalLM"},
		MLP: MoEMixtral, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(32000), "hidden_size": n(4096), "intermediate_size": n(14336),
			"num_hidden_layers": n(32), "num_attention_heads": n(32), "num_key_value_heads": n(8),
			"max_position_embeddings": n(131072), "num_local_experts": n(8), "num_experts_per_tok": n(2),
			"tie_word_embeddings": false}},
	{Name: "qwen2", Checked: "../shared/testdata/models/qwen2", ModelTypes: []string{"qwen2"}, Architectures: []string{"Qwen2ForCausalLM"},
		AlwaysQKVBias: true, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(151936), "hidden_size": n(4096), "intermediate_size": n(22016),
			"num_hidden_layers": n(32), "num_attention_heads": n(32), "num_key_value_heads": n(32),
			"max_position_embeddings": n(32768), "tie_word_embeddings": false}},
	{Name: "qwen2_moe", Checked: "testdata/models/qwen2_moe", ModelTypes: []string{"qwen2_moe"}, Architectures: []string{"Qwen2MoeForCausalLM"},
		MLP: MoEQwen, AlwaysQKVBias: true, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(151936), "hidden_size": n(2048), "intermediate_size": n(5632),
			"num_hidden_layers": n(24), "num_attention_heads": n(16), "num_key_value_heads": n(16),
			"max_position_embeddings": n(32768), "moe_intermediate_size": n(1408),
			"shared_expert_intermediate_size": n(5632), "num_experts": n(60), "num_experts_per_tok": n(4),
			"decoder_sparse_step": n(1), "tie_word_embeddings": false}},
	{Name: "qwen3", Checked: "../shared/testdata/models/qwen3", ModelTypes: []string{"qwen3"}, Architectures: []string{"Qwen3ForCausalLM"},
		QKNorm: QKNormHead, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(151936), "hidden_size": n(4096), "intermediate_size": n(22016),
			"num_hidden_layers": n(32), "num_attention_heads": n(32), "num_key_value_heads": n(32),
			"head_dim": n(128), "max_position_embeddings": n(32768), "tie_word_embeddings": false}},
	{Name: "qwen3_moe", Checked: "../shared/testdata/models/qwen3_moe", ModelTypes: []string{"qwen3_moe"}, Architectures: []string{"Qwen3MoeForCausalLM"},
		MLP: MoEQwen, QKNorm: QKNormHead, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(151936), "hidden_size": n(2048), "intermediate_size": n(6144),
			"num_hidden_layers": n(24), "num_attention_heads": n(32), "num_key_value_heads": n(4),
			"head_dim": n(128), "max_position_embeddings": n(32768), "moe_intermediate_size": n(768),
			"num_experts": n(128), "num_experts_per_tok": n(8), "decoder_sparse_step": n(1),
			"tie_word_embeddings": false}},
	{Name: "gemma", Checked: "testdata/models/gemma", ModelTypes: []string{"gemma"}, Architectures: []string{"GemmaForCausalLM"},
		GeluMLP: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(256000), "hidden_size": n(3072), "intermediate_size": n(24576),
			"num_hidden_layers": n(28), "num_attention_heads": n(16), "num_key_value_heads": n(16),
			"head_dim": n(256), "max_position_embeddings": n(8192), "tie_word_embeddings": true}},
	{Name: "gemma2", Checked: "../shared/testdata/models/gemma2", ModelTypes: []string{"gemma2"}, Architectures: []string{"Gemma2ForCausalLM"},
		Norm: NormSandwich, GeluMLP: true, SoftCapping: true, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(256000), "hidden_size": n(2304), "intermediate_size": n(9216),
			"num_hidden_layers": n(26), "num_attention_heads": n(8), "num_key_value_heads": n(4),
			"head_dim": n(256), "max_position_embeddings": n(8192), "sliding_window": n(4096),
			"attn_logit_softcapping": n(50), "final_logit_softcapping": n(30), "tie_word_embeddings": true}},
	{Name: "gemma3_text", Checked: "../shared/testdata/models/gemma3_text", ModelTypes: []string{"gemma3_text"}, Architectures: []string{"Gemma3ForCausalLM"},
		Norm: NormSandwich, QKNorm: QKNormHead, GeluMLP: true, SoftCapping: true, SlidingWindow: true,
		TextPrefix: "model.", LMHead: "lm_head.weight", TextDefaults: gemma3TextDefaults},
	{Name: "phi3", Checked: "../shared/testdata/models/phi3", ModelTypes: []string{"phi3"}, Architectures: []string{"Phi3ForCausalLM"},
		Attn: AttnFusedQKV, MLP: MLPFusedGated, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(32064), "hidden_size": n(3072), "intermediate_size": n(8192),
			"num_hidden_layers": n(32), "num_attention_heads": n(32), "max_position_embeddings": n(4096),
			"tie_word_embeddings": false}},
	{Name: "cohere", Checked: "testdata/models/cohere", ModelTypes: []string{"cohere"}, Architectures: []string{"CohereForCausalLM"},
		Norm: NormInput, QKNorm: QKNormPerHead, QKNormKey: "use_qk_norm", TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(256000), "hidden_size": n(8192), "intermediate_size": n(22528),
			"num_hidden_layers": n(40), "num_attention_heads": n(64), "max_position_embeddings": n(8192),
			"tie_word_embeddings": true}},
	{Name: "cohere2", Checked: "testdata/models/cohere2", ModelTypes: []string{"cohere2"}, Architectures: []string{"Cohere2ForCausalLM"},
		Norm: NormInput, SlidingWindow: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(256000), "hidden_size": n(8192), "intermediate_size": n(22528),
			"num_hidden_layers": n(40), "num_attention_heads": n(64), "max_position_embeddings": n(8192),
			"sliding_window": n(4096), "tie_word_embeddings": true}},
	{Name: "granite", Checked: "testdata/models/granite", ModelTypes: []string{"granite"}, Architectures: []string{"GraniteForCausalLM"},
		TextPrefix: "model.", LMHead: "lm_head.weight", TextDefaults: llamaDefaults},
	{Name: "deepseek_v2", Checked: "testdata/models/deepseek_v2", ModelTypes: []string{"deepseek_v2"}, Architectures: []string{"DeepseekV2ForCausalLM"},
		Attn: AttnMLA, MLP: MoEDeepSeek, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(102400), "hidden_size": n(5120), "intermediate_size": n(12288),
			"moe_intermediate_size": n(1536), "num_hidden_layers": n(60), "num_attention_heads": n(128),
			"num_key_value_heads": n(128), "n_shared_experts": n(2), "n_routed_experts": n(160),
			"num_experts_per_tok": n(6), "first_k_dense_replace": n(0), "moe_layer_freq": n(1),
			"kv_lora_rank": n(512), "q_lora_rank": n(1536), "qk_rope_head_dim": n(64), "v_head_dim": n(128),
			"qk_nope_head_dim": n(128), "max_position_embeddings": n(2048), "tie_word_embeddings": false}},
	{Name: "deepseek_v3", Checked: "testdata/models/deepseek_v3", ModelTypes: []string{"deepseek_v3"}, Architectures: []string{"DeepseekV3ForCausalLM"},
		Attn: AttnMLA, MLP: MoEDeepSeek, KeepF32: []string{"e_score_correction_bias"}, TextPrefix: "model.", LMHead: "lm_head.weight",
		TextDefaults: obj{"vocab_size": n(129280), "hidden_size": n(7168), "intermediate_size": n(18432),
			"moe_intermediate_size": n(2048), "num_hidden_layers": n(61), "num_attention_heads": n(128),
			"num_key_value_heads": n(128), "n_shared_experts": n(1), "n_routed_experts": n(256),
			"num_experts_per_tok": n(8), "first_k_dense_replace": n(3), "moe_layer_freq": n(1),
			"kv_lora_rank": n(512), "q_lora_rank": n(1536), "qk_rope_head_dim": n(64), "v_head_dim": n(128),
			"qk_nope_head_dim": n(128), "topk_method": "noaux_tc", "max_position_embeddings": n(4096),
			"tie_word_embeddings": false}},

	// Vision-language families. Names are those of the published checkpoints,
	// which transformers 5 still reads and writes.
	{Name: "llava", Checked: "../shared/testdata/models/llava", ModelTypes: []string{"llava"}, Architectures: []string{"LlavaForConditionalGeneration"},
		Vision: VisionCLIP, NestedText: true, TextPrefix: "language_model.model.", LMHead: "language_model.lm_head.weight",
		VisionPrefix: "vision_tower.", ProjPrefix: "multi_modal_projector.", Renames: visionLMRenames("vision_tower"),
		TextDefaults: llamaDefaults,
		VisionDefaults: obj{"hidden_size": n(1024), "intermediate_size": n(4096), "num_hidden_layers": n(24),
			"num_attention_heads": n(16), "num_channels": n(3), "image_size": n(336), "patch_size": n(14)}},
	{Name: "qwen2_vl", Checked: "testdata/models/qwen2_vl", ModelTypes: []string{"qwen2_vl"}, Architectures: []string{"Qwen2VLForConditionalGeneration"},
		Vision: VisionQwen2VL, AlwaysQKVBias: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		VisionPrefix: "visual.", Renames: qwenVLRenames, TextDefaults: obj{"vocab_size": n(152064), "hidden_size": n(8192),
			"intermediate_size": n(29568), "num_hidden_layers": n(80), "num_attention_heads": n(64),
			"num_key_value_heads": n(8), "max_position_embeddings": n(32768), "tie_word_embeddings": false},
		VisionDefaults: obj{"depth": n(32), "embed_dim": n(1280), "hidden_size": n(3584), "mlp_ratio": n(4),
			"num_heads": n(16), "in_channels": n(3), "patch_size": n(14), "spatial_merge_size": n(2),
			"temporal_patch_size": n(2)}},
	{Name: "qwen2_5_vl", Checked: "testdata/models/qwen2_5_vl", ModelTypes: []string{"qwen2_5_vl"}, Architectures: []string{"Qwen2_5_VLForConditionalGeneration"},
		Vision: VisionQwen25VL, AlwaysQKVBias: true, TextPrefix: "model.", LMHead: "lm_head.weight",
		VisionPrefix: "visual.", Renames: qwenVLRenames, TextDefaults: obj{"vocab_size": n(152064), "hidden_size": n(8192),
			"intermediate_size": n(29568), "num_hidden_layers": n(80), "num_attention_heads": n(64),
			"num_key_value_heads": n(8), "max_position_embeddings": n(32768), "tie_word_embeddings": false},
		VisionDefaults: obj{"depth": n(32), "hidden_size": n(3584), "intermediate_size": n(3420),
			"num_heads": n(16), "in_channels": n(3), "patch_size": n(14), "spatial_merge_size": n(2),
			"temporal_patch_size": n(2), "out_hidden_size": n(3584)}},
	{Name: "mllama", Checked: "testdata/models/mllama", ModelTypes: []string{"mllama"}, Architectures: []string{"MllamaForConditionalGeneration"},
		Vision: VisionMllama, CrossAttention: true, NestedText: true, TextPrefix: "language_model.model.",
		LMHead: "language_model.lm_head.weight", VisionPrefix: "vision_model.", ProjPrefix: "multi_modal_projector.",
		Renames: visionLMRenames("vision_model"),
		TextDefaults: obj{"vocab_size": n(128256), "hidden_size": n(4096), "intermediate_size": n(14336),
			"num_hidden_layers": n(40), "num_attention_heads": n(32), "num_key_value_heads": n(8),
			"max_position_embeddings": n(131072), "tie_word_embeddings": false,
			"cross_attention_layers": []any{n(3), n(8), n(13), n(18), n(23), n(28), n(33), n(38)}},
		VisionDefaults: obj{"hidden_size": n(1280), "attention_heads": n(16), "num_hidden_layers": n(32),
			"num_global_layers": n(8), "num_channels": n(3), "intermediate_size": n(5120), "image_size": n(448),
			"patch_size": n(14), "max_num_tiles": n(4), "vision_output_dim": n(7680),
			"intermediate_layers_indices": []any{n(3), n(7), n(15), n(23), n(30)}}},
	{Name: "gemma3", Checked: "testdata/models/gemma3", ModelTypes: []string{"gemma3"}, Architectures: []string{"Gemma3ForConditionalGeneration"},
		Vision: VisionSiglip, Norm: NormSandwich, QKNorm: QKNormHead, GeluMLP: true, SoftCapping: true, SlidingWindow: true,
		NestedText: true, TextPrefix: "language_model.model.", LMHead: "language_model.lm_head.weight",
		VisionPrefix: "vision_tower.", ProjPrefix: "multi_modal_projector.", Renames: visionLMRenames("vision_tower"),
		TextDefaults: gemma3TextDefaults,
		VisionDefaults: obj{"hidden_size": n(768), "intermediate_size": n(3072), "num_hidden_layers": n(12),
			"num_attention_heads": n(12), "num_channels": n(3), "image_size": n(224), "patch_size": n(16)}},
}

// Generic is the fallback for decoder-only models no family knows: it assumes
// the llama layout and says so.
var Generic = &Family{Name: "generic-decoder", Fallback: true, TextPrefix: "model.", LMHead: "lm_head.weight",
	TextDefaults: obj{"tie_word_embeddings": false}}

// Lookup finds the family for a model_type and architectures list: model_type
// first, then each architecture class name. It returns Generic when none match.
func Lookup(modelType string, architectures []string) *Family {
	for _, f := range Families {
		for _, t := range f.ModelTypes {
			if t == modelType {
				return f
			}
		}
	}
	for _, a := range architectures {
		for _, f := range Families {
			for _, fa := range f.Architectures {
				if strings.EqualFold(fa, a) {
					return f
				}
			}
		}
	}
	return Generic
}

// ByName returns the registered family called name, or nil.
func ByName(name string) *Family {
	for _, f := range append(Families, Generic) {
		if f.Name == name {
			return f
		}
	}
	return nil
}
