package arch

import (
	"regexp"
	"strconv"
	"strings"
)

// Roles a tensor can have.
const (
	RoleAttnQ        = "attn_q"
	RoleAttnK        = "attn_k"
	RoleAttnV        = "attn_v"
	RoleAttnO        = "attn_o"
	RoleAttnQKV      = "attn_qkv"
	RoleAttnQA       = "attn_q_a"  // MLA query down-projection
	RoleAttnQB       = "attn_q_b"  // MLA query up-projection
	RoleAttnKVA      = "attn_kv_a" // MLA joint kv down-projection
	RoleAttnKVB      = "attn_kv_b" // MLA kv up-projection
	RoleMLPGate      = "mlp_gate"
	RoleMLPUp        = "mlp_up"
	RoleMLPDown      = "mlp_down"
	RoleMLPGateUp    = "mlp_gate_up"
	RoleExpert       = "expert"
	RoleSharedExpert = "shared_expert"
	RoleRouter       = "router"
	RoleEmbedding    = "embedding"
	RoleLMHead       = "lm_head"
	RoleNorm         = "norm"
	RoleBias         = "bias"
	RoleVision       = "vision"
	RoleProjector    = "projector"
	RoleScale        = "fp8_scale" // FP8 per-block inverse scale: not a parameter
	RoleOther        = "other"
)

// Parts of a model a tensor belongs to.
const (
	PartText      = "text"
	PartVision    = "vision"
	PartProjector = "projector"
)

// Class is what the name and shape of a tensor say about it.
type Class struct {
	Role  string
	Layer int // decoder layer index, -1 for none (also for vision tower layers)
	Part  string
	// Linear: the tensor is the weight of an nn.Linear in the transformers
	// model, the only kind of tensor bitsandbytes converts.
	Linear bool
}

// leafRoles maps the module that owns a .weight to the role of that weight
// when it is an nn.Linear: the last name before ".weight".
var leafRoles = map[string]string{
	"q_proj": RoleAttnQ, "query": RoleAttnQ, "wq": RoleAttnQ,
	"k_proj": RoleAttnK, "key": RoleAttnK, "wk": RoleAttnK,
	"v_proj": RoleAttnV, "value": RoleAttnV, "wv": RoleAttnV,
	"o_proj": RoleAttnO, "out_proj": RoleAttnO, "wo": RoleAttnO, "dense": RoleAttnO,
	"qkv_proj": RoleAttnQKV, "query_key_value": RoleAttnQKV, "c_attn": RoleAttnQKV, "Wqkv": RoleAttnQKV, "qkv": RoleAttnQKV,
	"q_a_proj": RoleAttnQA, "q_b_proj": RoleAttnQB, "kv_a_proj_with_mqa": RoleAttnKVA, "kv_b_proj": RoleAttnKVB,
	"gate_up_proj": RoleMLPGateUp,
	"gate_proj":    RoleMLPGate, "w1": RoleMLPGate,
	"up_proj": RoleMLPUp, "w3": RoleMLPUp, "fc1": RoleMLPUp, "c_fc": RoleMLPUp,
	"down_proj": RoleMLPDown, "w2": RoleMLPDown, "fc2": RoleMLPDown, "c_proj": RoleMLPDown,
}

var embeddingLeaves = map[string]bool{"embed_tokens": true, "wte": true, "word_embeddings": true, "embeddings": true}

// textRole classifies a decoder tensor by its name. The checks run in order;
// the first that applies wins. It uses plain string operations: a DeepSeek-V3
// config lists about 90,000 tensors.
func textRole(name string) (role string, linear bool) {
	mod, isWeight := strings.CutSuffix(name, ".weight")
	leaf, parent := mod, ""
	if i := strings.LastIndexByte(mod, '.'); i >= 0 {
		leaf = mod[i+1:]
		if j := strings.LastIndexByte(mod[:i], '.'); j >= 0 {
			parent = mod[j+1 : i]
		} else {
			parent = mod[:i]
		}
	}
	switch {
	case strings.HasSuffix(name, "scale_inv"):
		return RoleScale, false
	case name == "lm_head.weight" || strings.HasSuffix(name, ".lm_head.weight") || name == "output.weight":
		return RoleLMHead, false
	case isWeight && embeddingLeaves[leaf]:
		return RoleEmbedding, false
	case strings.HasSuffix(name, "e_score_correction_bias"):
		return RoleRouter, false
	case isWeight && leaf == "shared_expert_gate":
		return RoleRouter, true
	case isWeight && (strings.Contains(name, ".shared_expert.") || strings.Contains(name, ".shared_experts.")):
		return RoleSharedExpert, true
	case strings.Contains(name, ".experts."):
		return RoleExpert, false
	case (leaf == "gate" || leaf == "router") && (parent == "block_sparse_moe" || parent == "mlp" || parent == "moe"),
		strings.Contains(name, ".router."):
		return RoleRouter, false
	}
	// Norms: the owning module's name says norm (input_layernorm, q_norm, ln_q).
	owner := leaf
	if !isWeight {
		owner = ""
		if m, ok := strings.CutSuffix(name, ".bias"); ok {
			owner = m[strings.LastIndexByte(m, '.')+1:]
		}
	}
	switch {
	case strings.Contains(owner, "norm") || strings.HasPrefix(owner, "ln_"):
		return RoleNorm, false
	case strings.HasSuffix(name, ".bias"):
		return RoleBias, false
	case isWeight:
		if r, ok := leafRoles[leaf]; ok {
			return r, true
		}
	}
	return RoleOther, false
}

var (
	projectorSegs = map[string]bool{"multi_modal_projector": true, "mm_projector": true, "merger": true, "modality_projection": true}
	visionRoots   = map[string]bool{"vision_tower": true, "visual": true, "vision_model": true, "vision_encoder": true, "vision": true}
	layerSegs     = map[string]bool{"layers": true, "h": true, "blocks": true, "layer": true}
	linearName    = regexp.MustCompile(`\.(q_proj|k_proj|v_proj|o_proj|out_proj|qkv|proj|fc1|fc2|gate_proj|up_proj|down_proj|linear_1|linear_2|[0-9]+)\.weight$`)
)

// Classify gives a tensor its role, layer and part from its name and shape.
func Classify(name string, shape []int64) Class {
	matrix := len(shape) == 2
	segs := strings.Split(name, ".")
	for _, sg := range segs {
		if projectorSegs[sg] {
			return Class{Role: RoleProjector, Layer: -1, Part: PartProjector,
				Linear: matrix && strings.HasSuffix(name, ".weight") && !strings.Contains(name, "norm") && !strings.Contains(name, ".ln_")}
		}
	}
	root := segs[0]
	if root == "model" && len(segs) > 1 {
		root = segs[1]
	}
	if visionRoots[root] {
		lin := matrix && linearName.MatchString(name) && !strings.Contains(name, "embed")
		return Class{Role: RoleVision, Layer: -1, Part: PartVision, Linear: lin}
	}
	c := Class{Role: RoleOther, Layer: -1, Part: PartText}
	for i := 0; i+2 < len(segs); i++ {
		if layerSegs[segs[i]] {
			if l, err := strconv.Atoi(segs[i+1]); err == nil && l >= 0 {
				c.Layer = l
				break
			}
		}
	}
	role, lin := textRole(name)
	c.Role, c.Linear = role, lin && matrix
	return c
}
