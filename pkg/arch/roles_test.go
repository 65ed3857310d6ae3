package arch

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestClassify(t *testing.T) {
	m2 := []int64{8, 8}
	cases := []struct {
		name   string
		shape  []int64
		role   string
		layer  int
		linear bool
	}{
		{"model.layers.3.self_attn.kv_a_proj_with_mqa.weight", m2, RoleAttnKVA, 3, true},
		{"model.layers.3.self_attn.q_b_proj.weight", m2, RoleAttnQB, 3, true},
		{"model.layers.3.self_attn.kv_a_layernorm.weight", []int64{8}, RoleNorm, 3, false},
		{"model.layers.3.mlp.gate.e_score_correction_bias", []int64{8}, RoleRouter, 3, false},
		{"model.layers.3.mlp.gate.weight", m2, RoleRouter, 3, false},
		{"model.layers.3.mlp.shared_experts.up_proj.weight", m2, RoleSharedExpert, 3, true},
		{"model.layers.3.mlp.shared_expert_gate.weight", []int64{1, 8}, RoleRouter, 3, true},
		{"model.layers.3.mlp.experts.7.down_proj.weight", m2, RoleExpert, 3, false},
		{"model.layers.1.mlp.experts.gate_up_proj", []int64{4, 16, 8}, RoleExpert, 1, false},
		{"model.layers.3.self_attn.qkv_proj.weight", m2, RoleAttnQKV, 3, true},
		{"model.layers.3.mlp.gate_up_proj.weight", m2, RoleMLPGateUp, 3, true},
		{"model.layers.12.self_attn.q_proj.bias", []int64{8}, RoleBias, 12, false},
		{"language_model.model.layers.3.cross_attn.k_norm.weight", []int64{8}, RoleNorm, 3, false},
		{"language_model.model.layers.3.cross_attn_attn_gate", []int64{1}, RoleOther, 3, false},
		{"language_model.lm_head.weight", m2, RoleLMHead, -1, false},
		{"model.embed_tokens.weight", m2, RoleEmbedding, -1, false},
		{"visual.patch_embed.proj.weight", []int64{8, 3, 2, 14, 14}, RoleVision, -1, false},
		{"visual.blocks.0.attn.qkv.weight", m2, RoleVision, -1, true},
		{"visual.merger.mlp.0.weight", m2, RoleProjector, -1, true},
		{"visual.merger.ln_q.weight", []int64{8}, RoleProjector, -1, false},
		{"vision_model.gated_positional_embedding.tile_embedding.weight", m2, RoleVision, -1, false},
		{"vision_tower.vision_model.embeddings.position_embedding.weight", m2, RoleVision, -1, false},
		{"multi_modal_projector.weight", m2, RoleProjector, -1, true},
		{"multi_modal_projector.mm_input_projection_weight", m2, RoleProjector, -1, false},
		{"model.layers.0.self_attn.o_proj.weight_scale_inv", []int64{1, 1}, RoleScale, 0, false},
	}
	for _, c := range cases {
		got := Classify(c.name, c.shape)
		assert.Equal(t, c.role, got.Role, c.name)
		assert.Equal(t, c.layer, got.Layer, c.name)
		assert.Equal(t, c.linear, got.Linear, c.name)
	}
}

// TestFamilies checks that every registered family resolves from its own
// model_type and architecture and yields tensors.
func TestFamilies(t *testing.T) {
	for _, f := range Families {
		assert.Same(t, f, Lookup("", f.Architectures), "%s by architecture", f.Name)
		assert.Same(t, f, Lookup(f.ModelTypes[0], nil), "%s by model type", f.Name)
	}
	g := Lookup("brand_new", []string{"BrandNewForCausalLM"})
	assert.True(t, g.Fallback, "unknown model: %s, want the fallback", g.Name)
	for _, js := range []string{`{"model_type":"cohere","num_hidden_layers":2,"use_qk_norm":true}`,
		`{"model_type":"granite","num_hidden_layers":2}`, `{"model_type":"gemma","num_hidden_layers":2}`,
		`{"model_type":"qwen2_moe","num_hidden_layers":2}`, `{"model_type":"qwen2_vl","num_hidden_layers":2}`,
		`{"model_type":"brand_new","hidden_size":64,"intermediate_size":128,"num_hidden_layers":2,"num_attention_heads":4,"vocab_size":100}`} {
		cfg, err := ParseConfig([]byte(js))
		require.NoError(t, err)
		m, err := Resolve(cfg)
		require.NoError(t, err, js)
		f := Summarize(m, Annotate(m.Tensors(), Policy{}))
		assert.NotZero(t, f.Params.Total, js)
		assert.NotZero(t, f.QuantizedTensors, js)
		assert.Equal(t, f.Params.Total, f.Params.Quantized+f.Params.Kept, js)
	}
}

// TestQKNormKeyFromTable checks that a family's QKNormKey switches the per-head
// norms on and off, so that no family needs a case of its own in Resolve.
func TestQKNormKeyFromTable(t *testing.T) {
	for _, c := range []struct {
		js    string
		norms int
	}{
		{`{"model_type":"cohere","num_hidden_layers":2,"use_qk_norm":true}`, 4},
		{`{"model_type":"cohere","num_hidden_layers":2}`, 0},
		{`{"model_type":"qwen3","num_hidden_layers":2}`, 4},
	} {
		cfg, err := ParseConfig([]byte(c.js))
		require.NoError(t, err)
		m, err := Resolve(cfg)
		require.NoError(t, err, c.js)
		norms := 0
		for _, ts := range m.Tensors() {
			if strings.HasSuffix(ts.Name, "q_norm.weight") || strings.HasSuffix(ts.Name, "k_norm.weight") {
				norms++
			}
		}
		assert.Equal(t, c.norms, norms, "%s: q/k norm tensors", c.js)
	}
}
