package arch

import (
	"strings"
	"testing"
)

// TestModuleName: checkpoint keys to the names transformers 5 gives them in
// memory (the reverse of what save_pretrained writes), per family.
func TestModuleName(t *testing.T) {
	for _, x := range []struct{ family, key, want string }{
		{"llama", "model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight"},
		{"llama", "lm_head.weight", "lm_head.weight"},
		{"gemma3", "language_model.model.layers.0.mlp.up_proj.weight", "model.language_model.layers.0.mlp.up_proj.weight"},
		{"gemma3", "language_model.lm_head.weight", "lm_head.weight"},
		{"gemma3", "vision_tower.encoder.layers.1.mlp.fc1.weight", "model.vision_tower.encoder.layers.1.mlp.fc1.weight"},
		{"gemma3", "multi_modal_projector.mm_input_projection_weight", "model.multi_modal_projector.mm_input_projection_weight"},
		{"llava", "vision_tower.vision_model.embeddings.patch_embedding.weight", "model.vision_tower.vision_model.embeddings.patch_embedding.weight"},
		{"llava", "language_model.model.embed_tokens.weight", "model.language_model.embed_tokens.weight"},
		{"mllama", "vision_model.gated_positional_embedding.tile_embedding.weight", "model.vision_model.gated_positional_embedding.tile_embedding.weight"},
		{"mllama", "language_model.model.layers.3.cross_attn.k_proj.weight", "model.language_model.layers.3.cross_attn.k_proj.weight"},
		{"qwen2_vl", "model.layers.0.self_attn.q_proj.bias", "model.language_model.layers.0.self_attn.q_proj.bias"},
		{"qwen2_vl", "visual.merger.mlp.0.weight", "model.visual.merger.mlp.0.weight"},
		{"qwen2_5_vl", "lm_head.weight", "lm_head.weight"},
		{"qwen2_5_vl", "model.norm.weight", "model.language_model.norm.weight"},
		// already in memory form: unchanged, not renamed twice
		{"qwen2_5_vl", "model.language_model.norm.weight", "model.language_model.norm.weight"},
		{"qwen2_5_vl", "model.visual.blocks.0.attn.qkv.weight", "model.visual.blocks.0.attn.qkv.weight"},
		{"gemma3", "model.language_model.layers.0.mlp.up_proj.weight", "model.language_model.layers.0.mlp.up_proj.weight"},
	} {
		f := ByName(x.family)
		if f == nil {
			t.Fatalf("no family %q", x.family)
		}
		if got := f.ModuleName(x.key); got != x.want {
			t.Errorf("%s: ModuleName(%q) = %q, want %q", x.family, x.key, got, x.want)
		}
	}
	// Every vision-language family renames its checkpoint keys: their
	// in-memory modules all sit under model. and lm_head.
	for _, f := range Families {
		if f.Vision == VisionNone {
			continue
		}
		for _, key := range []string{f.TextPrefix + "norm.weight", f.LMHead, f.VisionPrefix + "x.weight"} {
			got := f.ModuleName(key)
			if got != "lm_head.weight" && !strings.HasPrefix(got, "model.") {
				t.Errorf("%s: %q is %q in memory, outside model. and lm_head", f.Name, key, got)
			}
		}
		if f.ModuleName(f.TextPrefix+"norm.weight") != "model.language_model.norm.weight" {
			t.Errorf("%s: the text model is not model.language_model", f.Name)
		}
	}
}
