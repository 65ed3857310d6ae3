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

// rule maps the last module name before .weight/.bias to a role. Rules are
// tried in order; the first whose pattern matches wins.
type rule struct {
	re     *regexp.Regexp
	role   string
	linear bool
}

var textRules = []rule{
	{regexp.MustCompile(`weight_scale_inv$|\.scale_inv$`), RoleScale, false},
	{regexp.MustCompile(`(^|\.)lm_head\.weight$|^output\.weight$`), RoleLMHead, false},
	{regexp.MustCompile(`(embed_tokens|wte|word_embeddings|embeddings)\.weight$`), RoleEmbedding, false},
	{regexp.MustCompile(`e_score_correction_bias$`), RoleRouter, false},
	{regexp.MustCompile(`\.shared_expert_gate\.weight$`), RoleRouter, true},
	{regexp.MustCompile(`\.shared_experts?\.[a-z_0-9]+\.weight$`), RoleSharedExpert, true},
	{regexp.MustCompile(`\.experts\.`), RoleExpert, false},
	{regexp.MustCompile(`(block_sparse_moe|mlp|moe)\.(gate|router)(\.weight)?$|\.router\.`), RoleRouter, false},
	{regexp.MustCompile(`norm[^.]*\.weight$|norm[^.]*\.bias$|\.ln_[a-z0-9_]*\.(weight|bias)$`), RoleNorm, false},
	{regexp.MustCompile(`\.bias$`), RoleBias, false},
	{regexp.MustCompile(`\.(q_proj|query|wq)\.weight$`), RoleAttnQ, true},
	{regexp.MustCompile(`\.(k_proj|key|wk)\.weight$`), RoleAttnK, true},
	{regexp.MustCompile(`\.(v_proj|value|wv)\.weight$`), RoleAttnV, true},
	{regexp.MustCompile(`\.(o_proj|out_proj|wo|dense)\.weight$`), RoleAttnO, true},
	{regexp.MustCompile(`\.(qkv_proj|query_key_value|c_attn|Wqkv|qkv)\.weight$`), RoleAttnQKV, true},
	{regexp.MustCompile(`\.q_a_proj\.weight$`), RoleAttnQA, true},
	{regexp.MustCompile(`\.q_b_proj\.weight$`), RoleAttnQB, true},
	{regexp.MustCompile(`\.kv_a_proj_with_mqa\.weight$`), RoleAttnKVA, true},
	{regexp.MustCompile(`\.kv_b_proj\.weight$`), RoleAttnKVB, true},
	{regexp.MustCompile(`\.gate_up_proj\.weight$`), RoleMLPGateUp, true},
	{regexp.MustCompile(`\.(gate_proj|w1)\.weight$`), RoleMLPGate, true},
	{regexp.MustCompile(`\.(up_proj|w3|fc1|c_fc)\.weight$`), RoleMLPUp, true},
	{regexp.MustCompile(`\.(down_proj|w2|fc2|c_proj)\.weight$`), RoleMLPDown, true},
}

var (
	projectorRe = regexp.MustCompile(`(^|\.)(multi_modal_projector|mm_projector|merger|modality_projection)(\.|$)`)
	visionRe    = regexp.MustCompile(`^(model\.)?(vision_tower|visual|vision_model|vision_encoder|vision)\.`)
	layerRe     = regexp.MustCompile(`(?:^|\.)(?:layers|h|blocks|layer)\.(\d+)\.`)
	linearName  = regexp.MustCompile(`\.(q_proj|k_proj|v_proj|o_proj|out_proj|qkv|proj|fc1|fc2|gate_proj|up_proj|down_proj|linear_1|linear_2|[0-9]+)\.weight$|^multi_modal_projector\.weight$`)
)

// Classify gives a tensor its role, layer and part from its name and shape.
func Classify(name string, shape []int64) Class {
	matrix := len(shape) == 2
	if projectorRe.MatchString(name) {
		return Class{Role: RoleProjector, Layer: -1, Part: PartProjector,
			Linear: matrix && strings.HasSuffix(name, ".weight") && !strings.Contains(name, "norm") && !strings.Contains(name, ".ln_")}
	}
	if visionRe.MatchString(name) {
		lin := matrix && linearName.MatchString(name) && !strings.Contains(name, "embed")
		return Class{Role: RoleVision, Layer: -1, Part: PartVision, Linear: lin}
	}
	c := Class{Role: RoleOther, Layer: -1, Part: PartText}
	if m := layerRe.FindStringSubmatch(name); m != nil {
		if l, err := strconv.Atoi(m[1]); err == nil {
			c.Layer = l
		}
	}
	for _, r := range textRules {
		if r.re.MatchString(name) {
			c.Role = r.role
			c.Linear = r.linear && matrix
			break
		}
	}
	return c
}
