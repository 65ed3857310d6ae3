package arch

import (
	"fmt"

	"github.com/nf4pipe/nf4pipe/pkg/dtype"
)

// Text holds the decoder's dimensions, resolved from config.json and the
// family's defaults.
type Text struct {
	Hidden       int64
	Intermediate int64
	Layers       int64
	Heads        int64
	KVHeads      int64
	HeadDim      int64
	Vocab        int64
	Tied         bool
	AttnBias     bool
	MLPBias      bool
	MaxPosition  int64
	QKNorm       bool

	SlidingWindow      int64
	AttnSoftcap        float64
	FinalSoftcap       float64
	CrossAttnLayers    []int64 // mllama
	ExtraEmbedRows     int64   // mllama: 8 extra rows for image tokens
	SharedExpertGate   bool    // qwen2_moe
	NoAuxCorrection    bool    // deepseek_v3 noaux_tc: gate.e_score_correction_bias
	FP8                bool    // weights stored as float8 with per-block scales
	FP8Block           [2]int64
	Experts            int64
	ExpertsPerToken    int64
	SharedExperts      int64 // number of shared experts (deepseek); 1 for qwen2_moe's shared expert
	MoEIntermediate    int64
	SharedIntermediate int64
	SparseLayers       []bool // per layer: MoE (true) or dense MLP

	// MLA (DeepSeek): q_lora_rank 0 means q_proj directly.
	QLoraRank, KVLoraRank, QKNopeDim, QKRopeDim, VHeadDim int64
}

// Vision holds a vision tower's dimensions.
type Vision struct {
	Kind          VisionKind
	Hidden        int64
	Intermediate  int64
	Layers        int64
	GlobalLayers  int64 // mllama
	Heads         int64
	Channels      int64
	ImageSize     int64
	PatchSize     int64
	TemporalPatch int64 // qwen vl
	SpatialMerge  int64 // qwen vl
	OutHidden     int64 // what the projector maps to (text hidden)
	MaxTiles      int64 // mllama
	AspectRatios  int64 // mllama: supported aspect ratio count
	OutputDim     int64 // mllama: vision_output_dim
	UseHead       bool  // siglip attention-pooling head

	// TokensPerImage is what one image puts into the language model's
	// sequence at the family's default resolution: llava (image/patch)^2
	// (+1 with vision_feature_select_strategy "full"), gemma3
	// mm_tokens_per_image; 0 for qwen vl (it depends on the image) and mllama
	// (its images enter through cross-attention, not the sequence).
	TokensPerImage int64
}

// Model is a resolved architecture: the family and every dimension needed to
// list the tensors and count the parameters.
type Model struct {
	Family        *Family
	ModelType     string
	Architectures []string
	DType         string // source dtype as safetensors names it: BF16, F16, F32
	Text          Text
	Vision        *Vision
	Config        *Config
}

// configDType returns the safetensors name of a config's torch_dtype when it
// is a 16-, 32- or 64-bit float; other values leave the default.
func configDType(torch string) (string, bool) {
	switch d, _ := dtype.FromTorch(torch); d {
	case dtype.BF16, dtype.F16, dtype.F32, dtype.F64:
		return string(d), true
	}
	return "", false
}

// Resolve identifies the family of a config and resolves its dimensions.
func Resolve(cfg *Config) (*Model, error) {
	fam := Lookup(cfg.ModelType(), cfg.Architectures())
	m := &Model{Family: fam, ModelType: cfg.ModelType(), Architectures: cfg.Architectures(), Config: cfg}

	top := cfg.m
	textObj := top
	if tc := top.sub("text_config"); tc != nil && (fam.NestedText || fam.Vision != VisionNone) {
		textObj = tc
	} else if fam.NestedText {
		textObj = obj{}
	}
	m.DType = "BF16"
	for _, o := range []obj{top, textObj} {
		for _, k := range []string{"torch_dtype", "dtype"} {
			if d, ok := configDType(o.str(k)); ok {
				m.DType = d
			}
		}
	}
	v := &view{o: textObj, def: fam.TextDefaults}
	if err := m.resolveText(v, top); err != nil {
		return nil, err
	}
	if fam.Vision != VisionNone {
		vo := top.sub("vision_config")
		if vo == nil {
			vo = obj{}
		}
		vv := &view{o: vo, def: fam.VisionDefaults, where: "vision_config"}
		m.Vision = resolveVision(fam.Vision, vv, m.Text.Hidden)
		if vv.err != nil {
			return nil, vv.err
		}
		tv := &view{o: top, def: obj{"mm_tokens_per_image": n(256)}}
		switch fam.Vision {
		case VisionCLIP:
			side := m.Vision.ImageSize / m.Vision.PatchSize
			m.Vision.TokensPerImage = side * side
			if top.str("vision_feature_select_strategy") == "full" {
				m.Vision.TokensPerImage++
			}
		case VisionSiglip:
			m.Vision.TokensPerImage = tv.opt("mm_tokens_per_image", 256)
		}
		if tv.err != nil {
			return nil, tv.err
		}
	}
	if err := m.checkCounts(); err != nil {
		return nil, err
	}
	return m, nil
}

// Limits on the counts a config may declare. The largest published models have
// a few hundred layers and experts; these bounds keep a hostile config from
// making Tensors allocate without bound.
const (
	MaxLayers  = 1 << 12
	MaxExperts = 1 << 14
)

func (m *Model) checkCounts() error {
	check := func(what string, n, limit int64) error {
		if n > limit {
			return fmt.Errorf("%w: %s = %d exceeds the limit of %d", ErrShape, what, n, limit)
		}
		return nil
	}
	if err := check("num_hidden_layers", m.Text.Layers, MaxLayers); err != nil {
		return err
	}
	experts := m.Text.Experts + m.Text.SharedExperts
	if err := check("number of experts", experts, MaxExperts); err != nil {
		return err
	}
	if err := check("experts over all layers", experts*m.Text.Layers, MaxExperts*16); err != nil {
		return err
	}
	if m.Vision != nil {
		if err := check("vision layers", m.Vision.Layers+m.Vision.GlobalLayers, MaxLayers); err != nil {
			return err
		}
	}
	return nil
}

func (m *Model) resolveText(v *view, top obj) error {
	t := &m.Text
	fam := m.Family
	t.Hidden = v.pos("hidden_size")
	t.Intermediate = v.opt("intermediate_size", 0)
	t.Layers = v.pos("num_hidden_layers")
	t.Heads = v.pos("num_attention_heads")
	t.KVHeads = v.opt("num_key_value_heads", t.Heads)
	if t.KVHeads == 0 {
		t.KVHeads = t.Heads
	}
	t.Vocab = v.pos("vocab_size")
	if v.err != nil {
		return v.err
	}
	t.HeadDim = v.opt("head_dim", 0)
	if t.HeadDim == 0 {
		if t.Hidden%t.Heads != 0 {
			return fmt.Errorf("%w: hidden_size %d is not a multiple of num_attention_heads %d", ErrShape, t.Hidden, t.Heads)
		}
		t.HeadDim = t.Hidden / t.Heads
	}
	if t.Heads%t.KVHeads != 0 {
		return fmt.Errorf("%w: num_attention_heads %d is not a multiple of num_key_value_heads %d", ErrShape, t.Heads, t.KVHeads)
	}
	// A multimodal model ties by its top-level config when that says: the
	// gemma3 fixture transformers 5.17 wrote has text_config false, top level
	// true, and no lm_head.
	t.Tied = v.boolean("tie_word_embeddings", false)
	if b, ok := top.boolean("tie_word_embeddings"); ok && fam.Vision != VisionNone {
		t.Tied = b
	}
	t.AttnBias = v.boolean("attention_bias", false) || fam.AlwaysQKVBias
	t.MLPBias = v.boolean("mlp_bias", false)
	t.MaxPosition = v.opt("max_position_embeddings", 0)
	if fam.QKNorm != QKNormNone {
		t.QKNorm = fam.QKNormKey == "" || v.boolean(fam.QKNormKey, false)
	}
	if fam.SlidingWindow && v.boolean("use_sliding_window", true) {
		t.SlidingWindow = v.opt("sliding_window", 0)
	}
	if fam.SoftCapping {
		t.AttnSoftcap = v.float("attn_logit_softcapping")
		t.FinalSoftcap = v.float("final_logit_softcapping")
	}
	if fam.CrossAttention {
		t.CrossAttnLayers = v.ints("cross_attention_layers")
		t.ExtraEmbedRows = 8
	}
	if qc := top.sub("quantization_config"); qc != nil && qc.str("quant_method") == "fp8" {
		t.FP8 = true
		t.FP8Block = [2]int64{128, 128}
		if b, _ := qc.ints("weight_block_size"); len(b) == 2 && b[0] > 0 && b[1] > 0 {
			t.FP8Block = [2]int64{b[0], b[1]}
		}
	}

	switch fam.MLP {
	case MoEMixtral:
		t.Experts = v.pos("num_local_experts")
		t.ExpertsPerToken = v.opt("num_experts_per_tok", 0)
		t.MoEIntermediate = t.Intermediate
		t.SparseLayers = fill(t.Layers, true)
	case MoEQwen:
		// transformers 5 writes num_local_experts; older configs num_experts.
		if v.has("num_local_experts") {
			t.Experts = v.opt("num_local_experts", 0)
		} else {
			t.Experts = v.opt("num_experts", 0)
		}
		t.ExpertsPerToken = v.opt("num_experts_per_tok", 0)
		t.MoEIntermediate = v.pos("moe_intermediate_size")
		t.SharedIntermediate = v.opt("shared_expert_intermediate_size", 0)
		if t.SharedIntermediate > 0 {
			t.SharedExperts, t.SharedExpertGate = 1, true
		}
		step := v.opt("decoder_sparse_step", 1)
		only := map[int64]bool{}
		for _, l := range v.ints("mlp_only_layers") {
			only[l] = true
		}
		t.SparseLayers = make([]bool, t.Layers)
		for l := range t.SparseLayers {
			t.SparseLayers[l] = t.Experts > 0 && !only[int64(l)] && step > 0 && (int64(l)+1)%step == 0
		}
	case MoEDeepSeek:
		t.Experts = v.opt("n_routed_experts", 0)
		t.ExpertsPerToken = v.opt("num_experts_per_tok", 0)
		t.MoEIntermediate = v.pos("moe_intermediate_size")
		t.SharedExperts = v.opt("n_shared_experts", 0)
		t.SharedIntermediate = t.MoEIntermediate * t.SharedExperts
		t.NoAuxCorrection = v.str("topk_method") == "noaux_tc"
		first := v.opt("first_k_dense_replace", 0)
		freq := v.opt("moe_layer_freq", 1)
		t.SparseLayers = make([]bool, t.Layers)
		for l := range t.SparseLayers {
			t.SparseLayers[l] = t.Experts > 0 && int64(l) >= first && freq > 0 && int64(l)%freq == 0
		}
	}
	if fam.Attn == AttnMLA {
		t.QLoraRank = v.opt("q_lora_rank", 0)
		t.KVLoraRank = v.pos("kv_lora_rank")
		t.QKNopeDim = v.pos("qk_nope_head_dim")
		t.QKRopeDim = v.pos("qk_rope_head_dim")
		t.VHeadDim = v.pos("v_head_dim")
		t.HeadDim = t.QKNopeDim + t.QKRopeDim
	}
	if t.Intermediate <= 0 {
		return fmt.Errorf("%w: intermediate_size is missing", ErrConfig)
	}
	return v.err
}

func fill(n int64, b bool) []bool {
	s := make([]bool, n)
	for i := range s {
		s[i] = b
	}
	return s
}

func resolveVision(kind VisionKind, v *view, textHidden int64) *Vision {
	vis := &Vision{Kind: kind, OutHidden: textHidden}
	switch kind {
	case VisionCLIP, VisionSiglip:
		vis.Hidden = v.pos("hidden_size")
		vis.Intermediate = v.pos("intermediate_size")
		vis.Layers = v.pos("num_hidden_layers")
		vis.Heads = v.pos("num_attention_heads")
		vis.Channels = v.opt("num_channels", 3)
		vis.ImageSize = v.pos("image_size")
		vis.PatchSize = v.pos("patch_size")
		vis.UseHead = kind == VisionSiglip && v.boolean("vision_use_head", true) // SiglipVisionConfig default
	case VisionQwen2VL:
		vis.Hidden = v.pos("embed_dim")
		vis.Intermediate = vis.Hidden * v.pos("mlp_ratio")
		vis.Layers = v.pos("depth")
		vis.Heads = v.pos("num_heads")
		vis.Channels = v.opt("in_channels", 3)
		vis.PatchSize = v.pos("patch_size")
		vis.TemporalPatch = v.pos("temporal_patch_size")
		vis.SpatialMerge = v.pos("spatial_merge_size")
		vis.OutHidden = v.pos("hidden_size")
	case VisionQwen25VL:
		vis.Hidden = v.pos("hidden_size")
		vis.Intermediate = v.pos("intermediate_size")
		vis.Layers = v.pos("depth")
		vis.Heads = v.pos("num_heads")
		vis.Channels = v.opt("in_channels", 3)
		vis.PatchSize = v.pos("patch_size")
		vis.TemporalPatch = v.pos("temporal_patch_size")
		vis.SpatialMerge = v.pos("spatial_merge_size")
		vis.OutHidden = v.pos("out_hidden_size")
	case VisionMllama:
		vis.Hidden = v.pos("hidden_size")
		vis.Intermediate = v.pos("intermediate_size")
		vis.Layers = v.pos("num_hidden_layers")
		vis.GlobalLayers = v.opt("num_global_layers", 0)
		vis.Heads = v.pos("attention_heads")
		vis.Channels = v.opt("num_channels", 3)
		vis.ImageSize = v.pos("image_size")
		vis.PatchSize = v.pos("patch_size")
		vis.MaxTiles = v.pos("max_num_tiles")
		vis.OutputDim = v.pos("vision_output_dim")
		vis.AspectRatios = int64(v.lookup("supported_aspect_ratios").len("supported_aspect_ratios"))
		if vis.AspectRatios == 0 {
			vis.AspectRatios = 8
		}
	}
	return vis
}
