package arch

import "strconv"

// Desc describes one tensor of a checkpoint without its data.
type Desc struct {
	Name  string
	DType string // safetensors dtype name
	Shape []int64
}

// Elements returns the number of elements.
func (d Desc) Elements() int64 {
	n := int64(1)
	for _, s := range d.Shape {
		n *= s
	}
	return n
}

type builder struct {
	out   []Desc
	dtype string
	fp8   bool
	block [2]int64
}

func (b *builder) add(name string, shape ...int64) {
	b.out = append(b.out, Desc{Name: name, DType: b.dtype, Shape: shape})
}

// linear adds a Linear layer's weight [out, in] and, with bias, its bias [out].
// An FP8 checkpoint stores the weight as float8 with a per-block inverse scale.
func (b *builder) linear(name string, out, in int64, bias bool) {
	if b.fp8 {
		b.out = append(b.out, Desc{Name: name + ".weight", DType: "F8_E4M3", Shape: []int64{out, in}},
			Desc{Name: name + ".weight_scale_inv", DType: "F32",
				Shape: []int64{ceilDiv(out, b.block[0]), ceilDiv(in, b.block[1])}})
	} else {
		b.add(name+".weight", out, in)
	}
	if bias {
		b.add(name+".bias", out)
	}
}

// norm adds a norm's weight and, for LayerNorm with bias, its bias.
func (b *builder) norm(name string, dim int64, bias bool) {
	b.add(name+".weight", dim)
	if bias {
		b.add(name+".bias", dim)
	}
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

func itoa(i int64) string { return strconv.FormatInt(i, 10) }

// Tensors lists every tensor the architecture has, as its checkpoint names them,
// derived from the config alone. Order: text embedding, decoder layers in order,
// final norm, lm_head, then vision tower and projector.
func (m *Model) Tensors() []Desc {
	b := &builder{dtype: m.DType}
	m.text(b)
	if m.Vision != nil {
		b.fp8 = false
		m.vision(b)
	}
	return b.out
}

func (m *Model) text(b *builder) {
	t, f := &m.Text, m.Family
	p := f.TextPrefix
	b.add(p+"embed_tokens.weight", t.Vocab+t.ExtraEmbedRows, t.Hidden)
	cross := map[int64]bool{}
	for _, l := range t.CrossAttnLayers {
		cross[l] = true
	}
	b.fp8, b.block = t.FP8, t.FP8Block
	for l := int64(0); l < t.Layers; l++ {
		lp := p + "layers." + itoa(l) + "."
		if cross[l] {
			m.crossLayer(b, lp)
			continue
		}
		switch f.Norm {
		case NormPrePost:
			b.norm(lp+"input_layernorm", t.Hidden, false)
			b.norm(lp+"post_attention_layernorm", t.Hidden, false)
		case NormSandwich:
			b.norm(lp+"input_layernorm", t.Hidden, false)
			b.norm(lp+"post_attention_layernorm", t.Hidden, false)
			b.norm(lp+"pre_feedforward_layernorm", t.Hidden, false)
			b.norm(lp+"post_feedforward_layernorm", t.Hidden, false)
		case NormInput:
			b.norm(lp+"input_layernorm", t.Hidden, false)
		}
		m.attention(b, lp+"self_attn.")
		m.mlp(b, lp, l)
	}
	b.fp8 = false
	b.norm(p+"norm", t.Hidden, false)
	if !t.Tied {
		b.add(f.LMHead, t.Vocab, t.Hidden)
	}
}

func (m *Model) attention(b *builder, ap string) {
	t := &m.Text
	q, kv := t.Heads*t.HeadDim, t.KVHeads*t.HeadDim
	switch m.Family.Attn {
	case AttnSeparate:
		b.linear(ap+"q_proj", q, t.Hidden, t.AttnBias)
		b.linear(ap+"k_proj", kv, t.Hidden, t.AttnBias)
		b.linear(ap+"v_proj", kv, t.Hidden, t.AttnBias)
		b.linear(ap+"o_proj", t.Hidden, q, t.AttnBias && !m.Family.AlwaysQKVBias)
	case AttnFusedQKV:
		b.linear(ap+"qkv_proj", q+2*kv, t.Hidden, t.AttnBias)
		b.linear(ap+"o_proj", t.Hidden, q, t.AttnBias)
	case AttnMLA:
		qk := t.Heads * (t.QKNopeDim + t.QKRopeDim)
		if t.QLoraRank > 0 {
			b.linear(ap+"q_a_proj", t.QLoraRank, t.Hidden, t.AttnBias)
			b.fp8save(func() { b.norm(ap+"q_a_layernorm", t.QLoraRank, false) })
			b.linear(ap+"q_b_proj", qk, t.QLoraRank, false)
		} else {
			b.linear(ap+"q_proj", qk, t.Hidden, false)
		}
		b.linear(ap+"kv_a_proj_with_mqa", t.KVLoraRank+t.QKRopeDim, t.Hidden, t.AttnBias)
		b.fp8save(func() { b.norm(ap+"kv_a_layernorm", t.KVLoraRank, false) })
		b.linear(ap+"kv_b_proj", t.Heads*(t.QKNopeDim+t.VHeadDim), t.KVLoraRank, false)
		b.linear(ap+"o_proj", t.Hidden, t.Heads*t.VHeadDim, t.AttnBias)
	}
	if t.QKNorm {
		switch m.Family.QKNorm {
		case QKNormHead:
			b.norm(ap+"q_norm", t.HeadDim, false)
			b.norm(ap+"k_norm", t.HeadDim, false)
		case QKNormPerHead:
			b.add(ap+"q_norm.weight", t.Heads, t.HeadDim)
			b.add(ap+"k_norm.weight", t.KVHeads, t.HeadDim)
		}
	}
}

// fp8save runs fn with FP8 storage off (norms stay in the source dtype).
func (b *builder) fp8save(fn func()) {
	saved := b.fp8
	b.fp8 = false
	fn()
	b.fp8 = saved
}

func (m *Model) gated(b *builder, mp string, inter int64) {
	t := &m.Text
	b.linear(mp+"gate_proj", inter, t.Hidden, t.MLPBias)
	b.linear(mp+"up_proj", inter, t.Hidden, t.MLPBias)
	b.linear(mp+"down_proj", t.Hidden, inter, t.MLPBias)
}

func (m *Model) mlp(b *builder, lp string, l int64) {
	t := &m.Text
	sparse := len(t.SparseLayers) > int(l) && t.SparseLayers[l]
	switch {
	case m.Family.MLP == MLPFusedGated:
		b.linear(lp+"mlp.gate_up_proj", 2*t.Intermediate, t.Hidden, t.MLPBias)
		b.linear(lp+"mlp.down_proj", t.Hidden, t.Intermediate, t.MLPBias)
	case m.Family.MLP == MoEMixtral:
		mp := lp + "block_sparse_moe."
		b.fp8save(func() { b.add(mp+"gate.weight", t.Experts, t.Hidden) })
		for e := int64(0); e < t.Experts; e++ {
			ep := mp + "experts." + itoa(e) + "."
			b.linear(ep+"w1", t.MoEIntermediate, t.Hidden, false)
			b.linear(ep+"w2", t.Hidden, t.MoEIntermediate, false)
			b.linear(ep+"w3", t.MoEIntermediate, t.Hidden, false)
		}
	case sparse:
		mp := lp + "mlp."
		fp8 := b.fp8
		b.fp8save(func() {
			b.add(mp+"gate.weight", t.Experts, t.Hidden)
			switch {
			case t.NoAuxCorrection && fp8:
				// DeepSeek's FP8 release stores the correction bias F32.
				b.dtypeOverride("F32", func() { b.add(mp+"gate.e_score_correction_bias", t.Experts) })
			case t.NoAuxCorrection:
				// transformers' own 16-bit save stores it in the model's dtype
				// (testdata/models/deepseek_v3); its 4-bit save F32 (KeepF32).
				b.add(mp+"gate.e_score_correction_bias", t.Experts)
			}
		})
		for e := int64(0); e < t.Experts; e++ {
			m.gated(b, mp+"experts."+itoa(e)+".", t.MoEIntermediate)
		}
		switch {
		case t.SharedExpertGate: // qwen2_moe
			m.gated(b, mp+"shared_expert.", t.SharedIntermediate)
			b.fp8save(func() { b.linear(mp+"shared_expert_gate", 1, t.Hidden, false) })
		case t.SharedExperts > 0: // deepseek
			m.gated(b, mp+"shared_experts.", t.SharedIntermediate)
		}
	default:
		m.gated(b, lp+"mlp.", t.Intermediate)
	}
}

func (b *builder) dtypeOverride(d string, fn func()) {
	saved := b.dtype
	b.dtype = d
	fn()
	b.dtype = saved
}

// crossLayer adds an mllama cross-attention decoder layer.
func (m *Model) crossLayer(b *builder, lp string) {
	t := &m.Text
	q, kv := t.Heads*t.HeadDim, t.KVHeads*t.HeadDim
	b.add(lp+"cross_attn_attn_gate", 1)
	b.add(lp+"cross_attn_mlp_gate", 1)
	b.norm(lp+"input_layernorm", t.Hidden, false)
	b.norm(lp+"post_attention_layernorm", t.Hidden, false)
	ap := lp + "cross_attn."
	b.linear(ap+"q_proj", q, t.Hidden, false)
	b.linear(ap+"k_proj", kv, t.Hidden, false)
	b.linear(ap+"v_proj", kv, t.Hidden, false)
	b.linear(ap+"o_proj", t.Hidden, q, false)
	b.norm(ap+"q_norm", t.HeadDim, false)
	b.norm(ap+"k_norm", t.HeadDim, false)
	m.gated(b, lp+"mlp.", t.Intermediate)
}

// vitLayer adds a CLIP/SigLIP encoder layer.
func vitLayer(b *builder, lp string, h, inter int64) {
	b.norm(lp+"layer_norm1", h, true)
	b.norm(lp+"layer_norm2", h, true)
	for _, n := range []string{"q_proj", "k_proj", "v_proj", "out_proj"} {
		b.linear(lp+"self_attn."+n, h, h, true)
	}
	b.linear(lp+"mlp.fc1", inter, h, true)
	b.linear(lp+"mlp.fc2", h, inter, true)
}

func (m *Model) vision(b *builder) {
	v, f := m.Vision, m.Family
	vp, pp := f.VisionPrefix, f.ProjPrefix
	h := v.Hidden
	switch v.Kind {
	case VisionCLIP:
		patches := (v.ImageSize / v.PatchSize) * (v.ImageSize / v.PatchSize)
		b.add(vp+"embeddings.class_embedding", h)
		b.add(vp+"embeddings.patch_embedding.weight", h, v.Channels, v.PatchSize, v.PatchSize)
		b.add(vp+"embeddings.position_embedding.weight", patches+1, h)
		b.norm(vp+"pre_layrnorm", h, true)
		for l := int64(0); l < v.Layers; l++ {
			vitLayer(b, vp+"encoder.layers."+itoa(l)+".", h, v.Intermediate)
		}
		b.norm(vp+"post_layernorm", h, true)
		bias := true
		if x, ok := m.Config.m.boolean("multimodal_projector_bias"); ok {
			bias = x
		}
		b.linear(pp+"linear_1", v.OutHidden, h, bias)
		b.linear(pp+"linear_2", v.OutHidden, v.OutHidden, bias)
	case VisionSiglip:
		patches := (v.ImageSize / v.PatchSize) * (v.ImageSize / v.PatchSize)
		b.add(vp+"embeddings.patch_embedding.weight", h, v.Channels, v.PatchSize, v.PatchSize)
		b.add(vp+"embeddings.patch_embedding.bias", h)
		b.add(vp+"embeddings.position_embedding.weight", patches, h)
		for l := int64(0); l < v.Layers; l++ {
			vitLayer(b, vp+"encoder.layers."+itoa(l)+".", h, v.Intermediate)
		}
		b.norm(vp+"post_layernorm", h, true)
		if v.UseHead {
			b.add(vp+"head.probe", 1, 1, h)
			b.add(vp+"head.attention.in_proj_weight", 3*h, h)
			b.add(vp+"head.attention.in_proj_bias", 3*h)
			b.linear(vp+"head.attention.out_proj", h, h, true)
			b.norm(vp+"head.layernorm", h, true)
			b.linear(vp+"head.mlp.fc1", v.Intermediate, h, true)
			b.linear(vp+"head.mlp.fc2", h, v.Intermediate, true)
		}
		b.add(pp+"mm_input_projection_weight", h, v.OutHidden)
		b.norm(pp+"mm_soft_emb_norm", h, false)
	case VisionQwen2VL, VisionQwen25VL:
		b.add(vp+"patch_embed.proj.weight", h, v.Channels, v.TemporalPatch, v.PatchSize, v.PatchSize)
		ln := v.Kind == VisionQwen2VL // LayerNorm with bias; 2.5 uses RMSNorm
		for l := int64(0); l < v.Layers; l++ {
			lp := vp + "blocks." + itoa(l) + "."
			b.norm(lp+"norm1", h, ln)
			b.norm(lp+"norm2", h, ln)
			b.linear(lp+"attn.qkv", 3*h, h, true)
			b.linear(lp+"attn.proj", h, h, true)
			if ln {
				b.linear(lp+"mlp.fc1", v.Intermediate, h, true)
				b.linear(lp+"mlp.fc2", h, v.Intermediate, true)
			} else {
				b.linear(lp+"mlp.gate_proj", v.Intermediate, h, true)
				b.linear(lp+"mlp.up_proj", v.Intermediate, h, true)
				b.linear(lp+"mlp.down_proj", h, v.Intermediate, true)
			}
		}
		merged := h * v.SpatialMerge * v.SpatialMerge
		b.norm(vp+"merger.ln_q", h, ln)
		b.linear(vp+"merger.mlp.0", merged, merged, true)
		b.linear(vp+"merger.mlp.2", v.OutHidden, merged, true)
	case VisionMllama:
		patches := (v.ImageSize/v.PatchSize)*(v.ImageSize/v.PatchSize) + 1
		b.add(vp+"patch_embedding.weight", h, v.Channels, v.PatchSize, v.PatchSize)
		b.add(vp+"class_embedding", h)
		b.add(vp+"gated_positional_embedding.embedding", patches, h)
		b.add(vp+"gated_positional_embedding.gate", 1)
		b.add(vp+"gated_positional_embedding.tile_embedding.weight", v.AspectRatios+1, v.MaxTiles*patches*h)
		for _, n := range []string{"pre_tile_positional_embedding.", "post_tile_positional_embedding."} {
			b.add(vp+n+"embedding.weight", v.AspectRatios+1, v.MaxTiles*h)
			b.add(vp+n+"gate", 1)
		}
		b.norm(vp+"layernorm_pre", h, true)
		b.norm(vp+"layernorm_post", h, true)
		mllamaLayer := func(lp string, gated bool) {
			for _, n := range []string{"q_proj", "k_proj", "v_proj", "o_proj"} {
				b.linear(lp+"self_attn."+n, h, h, false)
			}
			b.linear(lp+"mlp.fc1", v.Intermediate, h, true)
			b.linear(lp+"mlp.fc2", h, v.Intermediate, true)
			b.norm(lp+"input_layernorm", h, true)
			b.norm(lp+"post_attention_layernorm", h, true)
			if gated {
				b.add(lp+"gate_attn", 1)
				b.add(lp+"gate_ffn", 1)
			}
		}
		for l := int64(0); l < v.Layers; l++ {
			mllamaLayer(vp+"transformer.layers."+itoa(l)+".", false)
		}
		for l := int64(0); l < v.GlobalLayers; l++ {
			mllamaLayer(vp+"global_transformer.layers."+itoa(l)+".", true)
		}
		b.linear(pp[:len(pp)-1], v.OutHidden, v.OutputDim, true)
	}
}
