package plan

import (
	"fmt"
	"math"
	"strings"

	"github.com/nf4pipe/nf4pipe/internal/units"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
)

// Recipe is how the model is prepared for training.
type Recipe string

// Recipes.
const (
	// RecipeHFPeft is peft's prepare_model_for_kbit_training: every parameter
	// that is not 4-bit is cast to float32, so the residual stream, the norms,
	// the logits and the attention inputs all run in float32.
	RecipeHFPeft Recipe = "hf-peft"
	// RecipeLean skips the cast: 16-bit parameters and activations.
	RecipeLean Recipe = "lean"
)

// Optimizer is the training optimizer.
type Optimizer string

// Optimizers, named as TrainingArguments.optim names them.
const (
	AdamW          Optimizer = "adamw"
	AdamW8bit      Optimizer = "adamw_8bit"
	PagedAdamW8bit Optimizer = "paged_adamw_8bit"
)

// Checkpointing is the gradient checkpointing mode.
type Checkpointing string

// Checkpointing modes; CkptAuto is resolved to one of the others by Decide.
const (
	CkptAuto    Checkpointing = "auto"
	CkptOff     Checkpointing = "off"
	CkptOn      Checkpointing = "on"
	CkptOffload Checkpointing = "offload"
)

// Attention is the attn_implementation passed to from_pretrained.
type Attention string

// Attention implementations.
const (
	AttnAuto   Attention = "auto"
	AttnFlash2 Attention = "flash_attention_2"
	AttnSDPA   Attention = "sdpa"
	AttnEager  Attention = "eager"
)

// Kernel is the attention kernel that actually runs, which decides what
// autograd keeps: SDPA picks one of flash, mem_efficient and math by dtype,
// capability and grouped-query support.
type Kernel string

// Kernels.
const (
	KernelFlash2    Kernel = "flash_attn_2"   // the flash-attn package, via transformers
	KernelFlash     Kernel = "sdpa_flash"     // torch's flash backend
	KernelEfficient Kernel = "sdpa_efficient" // torch's memory-efficient backend
	KernelMath      Kernel = "sdpa_math"      // torch's reference backend: keeps the probabilities
	KernelEager     Kernel = "eager"          // transformers' matmul + softmax
)

// Config is one fully decided training configuration.
type Config struct {
	SeqLen        int64
	Batch         int64
	Rank          int64
	Targets       []string // LoRA target roles (arch.Role*); empty means every linear projection of the decoder
	Recipe        Recipe
	Optimizer     Optimizer
	Checkpointing Checkpointing // off, on or offload
	Attention     Attention
	Kernel        Kernel
	ComputeDType  string // "bf16" or "fp16"
	// Accumulate: gradient accumulation over micro-batches, so the LoRA
	// gradients of earlier micro-batches are there at the loss peak.
	Accumulate bool
	// Images per sample, and the tokens each makes (0: the family's
	// default; see Model.images).
	Images, ImageTokens int64
	// ExpertLoRA: LoRA on the routed experts' fused parameters instead of
	// the MLP projections. It is what peft 0.21 does on a transformers 5 MoE
	// model when target_modules names gate_proj, up_proj and down_proj
	// (measured on the H200, scripts/real-stack/moe_probe.py): the names are
	// matched to the experts' gate_up_proj and down_proj parameters, the
	// shared experts and dense layers' MLPs get no adapter, and gate_up_proj,
	// named twice, gets two. plan's snippet targets all-linear instead
	// (never the experts); this models code that lists the names.
	ExpertLoRA bool
}

// Constants of the memory model. docs/plan.md gives the reasoning for each.
const (
	// CUDAContext is the driver context and the kernels loaded into it: on the
	// device, but outside torch's caching allocator.
	CUDAContext = gpus.ContextBytes
	// FrameworkBuffers: what is allocated after from_pretrained beyond the
	// parameters (cuBLAS workspace and small buffers), measured on the
	// calibration run (19.7 MiB) and rounded.
	FrameworkBuffers = 20 << 20
	// BackwardBuffers: what the backward pass allocates once and keeps (the
	// autograd thread's cuBLAS workspaces), fitted to the measured rows.
	BackwardBuffers = 64 << 20
	// slackLoss, slackLayer and slackConst size the caching allocator's
	// slack (see slack); fitted to the measured rows.
	slackLoss  = 0.75
	slackLayer = 1.00

	smallAlloc   = 1 << 20  // requests up to this go to the small pool
	smallSegment = 2 << 20  // the small pool's segment
	midAlloc     = 10 << 20 // below this, large requests share 20 MiB segments
	midSegment   = 20 << 20
	largeRound   = 2 << 20

	pagedMinElems = 100_000 // bitsandbytes pages optimizer states from this size on
	min8bitElems  = 4096    // below this bitsandbytes keeps 32-bit states
)

// poolBytes is what the caching allocator reserves for one request of n
// bytes, amortized over the segment it shares with requests of the same size.
func poolBytes(n int64) float64 {
	if n <= 0 {
		return 0
	}
	r := ceilDiv(n, 512) * 512
	switch {
	case r <= smallAlloc:
		return float64(smallSegment) / math.Floor(float64(smallSegment)/float64(r))
	case r < midAlloc:
		return float64(midSegment) / math.Floor(float64(midSegment)/float64(r))
	default:
		return float64(ceilDiv(r, largeRound) * largeRound)
	}
}

// images is what the images of one sample bring under c: the tokens they add
// to the language model's sequence (llava, qwen vl, gemma3), the tokens the
// cross-attention layers attend to (mllama), and the tokens they are inside
// the vision tower. All zero for a text model or no images.
func (m *Model) images(c Config) (seq, cross, patches int64) {
	v := m.Vision
	if v == nil || c.Images <= 0 {
		return 0, 0, 0
	}
	if v.CrossTokensPerImage > 0 {
		cross = v.CrossTokensPerImage
		if c.ImageTokens > 0 {
			cross = c.ImageTokens
		}
		return 0, cross * c.Images, cross * c.Images
	}
	seq, patches = v.TokensPerImage, v.PatchesPerImage
	if c.ImageTokens > 0 {
		seq = c.ImageTokens
		if v.Merge > 1 {
			// qwen vl: the image's resolution makes its tokens, so the tower
			// sees merge x as many patches.
			patches = seq * v.Merge
		}
	}
	return seq * c.Images, 0, patches * c.Images
}

// seqLen is the language model's sequence under c: the text and the tokens of
// every image.
func (m *Model) seqLen(c Config) int64 {
	s, _, _ := m.images(c)
	return c.SeqLen + s
}

// visionGraph reports whether autograd records the frozen vision tower's
// forward, so that it keeps activations for backward. The planner puts no
// adapter in the tower (the snippet excludes it from LoRA), so that happens
// only when the tower's input needs a gradient: transformers 5's
// enable_input_require_grads hooks the input embeddings of every sub-model,
// the vision tower's patch embedding included, and the lean recipe calls it;
// hf-peft's prepare_model_for_kbit_training with non-reentrant checkpointing
// does not, so under hf-peft the tower runs without a graph.
func (c Config) visionGraph() bool { return c.Recipe == RecipeLean }

// layerBytes is what one encoder layer of the tower keeps per token when
// autograd records it (16-bit activations under autocast): both norms'
// float32 inputs (layer_norm and RMSNorm compute in float32), q, k, v and the
// output kept by the attention kernel with its float32 log-sum-exp, and the
// MLP's activation input (fc1's output; gate, activation and up outputs of a
// gated MLP). The 4-bit projections keep no input.
func (v *Vision) layerBytes() float64 {
	h, i := float64(v.Hidden), float64(v.Intermediate)
	mlp := 2 * i
	if v.GatedMLP {
		mlp = 3 * 2 * i
	}
	return 2*4*h + 2*4*h + 4*float64(v.Heads) + mlp
}

// crossBytes is what one cross-attention layer (mllama) keeps for nv image
// tokens (batch included) beyond a self-attention layer, with s text tokens
// a sample: k and v of the image tokens kept by the kernel, k_norm's float32
// input, the input of the k and v adapters' lora_A (one 16-bit copy each of
// the float32 image states under hf-peft, one shared 16-bit tensor under
// lean), and the cross-attention mask as a 16-bit bias of s x nv. Modelled,
// not measured.
func (m *Model) crossBytes(c Config, nv, s float64) float64 {
	kvd := float64(m.KVHeads * m.HeadDim)
	h := float64(m.Hidden)
	x := nv * (2*2*kvd + 4*kvd)
	set := c.targets()
	n := 0.0
	for _, r := range []string{arch.RoleAttnK, arch.RoleAttnV} {
		if set[r] {
			n++
		}
	}
	if c.Recipe == RecipeLean {
		n = min(n, 1)
	}
	return x + n*2*h*nv + 2*s*nv
}

// keptBytes is the width of a parameter that is not quantized.
func (c Config) keptBytes(dtype string) int64 {
	if c.Recipe == RecipeHFPeft {
		return 4
	}
	if dtype == "F32" {
		return 4
	}
	return 2
}

// defaultTargets are the roles "all linear projections" of a decoder layer covers.
var defaultTargets = []string{
	arch.RoleAttnQ, arch.RoleAttnK, arch.RoleAttnV, arch.RoleAttnO, arch.RoleAttnQKV,
	arch.RoleAttnQA, arch.RoleAttnQB, arch.RoleAttnKVA, arch.RoleAttnKVB,
	arch.RoleMLPGate, arch.RoleMLPUp, arch.RoleMLPDown, arch.RoleMLPGateUp, arch.RoleSharedExpert,
}

// targetAliases maps peft-style module names to roles.
var targetAliases = map[string]string{
	"q_proj": arch.RoleAttnQ, "k_proj": arch.RoleAttnK, "v_proj": arch.RoleAttnV, "o_proj": arch.RoleAttnO,
	"qkv_proj": arch.RoleAttnQKV, "q_a_proj": arch.RoleAttnQA, "q_b_proj": arch.RoleAttnQB,
	"kv_a_proj_with_mqa": arch.RoleAttnKVA, "kv_b_proj": arch.RoleAttnKVB,
	"gate_proj": arch.RoleMLPGate, "up_proj": arch.RoleMLPUp, "down_proj": arch.RoleMLPDown,
	"gate_up_proj": arch.RoleMLPGateUp, "w1": arch.RoleMLPGate, "w3": arch.RoleMLPUp, "w2": arch.RoleMLPDown,
}

// TargetRoles turns --lora-targets (module names like q_proj, roles, or
// "all-linear") into roles; empty means all linear projections.
func TargetRoles(names []string) ([]string, bool) {
	if len(names) == 0 {
		return defaultTargets, true
	}
	var out []string
	for _, n := range names {
		n = strings.TrimSpace(n)
		switch {
		case n == "":
		case n == "all-linear" || n == "all_linear" || n == "all":
			out = append(out, defaultTargets...)
		case targetAliases[n] != "":
			out = append(out, targetAliases[n])
		default:
			found := false
			for _, r := range defaultTargets {
				if r == n {
					out, found = append(out, r), true
				}
			}
			if !found {
				return nil, false
			}
		}
	}
	return out, len(out) > 0
}

func (c Config) targets() map[string]bool {
	roles := c.Targets
	if len(roles) == 0 {
		roles = defaultTargets
	}
	set := map[string]bool{}
	for _, r := range roles {
		set[r] = true
	}
	return set
}

// isTarget reports whether a tensor gets a LoRA adapter.
func (c Config) isTarget(t Tensor, set map[string]bool) bool {
	if c.ExpertLoRA && mlpRoles[t.Role] {
		return false
	}
	return t.Quantize && t.Layer >= 0 && t.Part == arch.PartText && len(t.Shape) == 2 && set[t.Role]
}

var mlpRoles = map[string]bool{arch.RoleMLPGate: true, arch.RoleMLPUp: true, arch.RoleMLPDown: true,
	arch.RoleMLPGateUp: true, arch.RoleSharedExpert: true}

// expertLoRA is the LoRA parameters one routed expert's checkpoint tensor
// stands for under c.ExpertLoRA, as its A and B pieces: peft wraps the fused
// parameter with A of (rank x experts) x in and B of out x (rank x experts),
// per expert rank x (in + out); gate_up_proj, fused from gate and up and
// named by both, gets two such adapters, so each of gate and up counts
// rank x (in + 2 out).
func (c Config) expertLoRA(t Tensor) (a, b int64) {
	if !c.ExpertLoRA || t.Role != arch.RoleExpert || t.Layer < 0 || len(t.Shape) != 2 {
		return 0, 0
	}
	out, in := t.Shape[0], t.Shape[1]
	if strings.HasSuffix(t.Name, "gate_proj.weight") || strings.HasSuffix(t.Name, "up_proj.weight") ||
		strings.HasSuffix(t.Name, "w1.weight") || strings.HasSuffix(t.Name, "w3.weight") {
		return c.Rank * in, 2 * out * c.Rank
	}
	return c.Rank * in, out * c.Rank
}

// inputGroup names the tensor a projection reads, so that projections
// reading the same activation share one saved copy when it needs no cast.
func inputGroup(role string) string {
	switch role {
	case arch.RoleAttnQ, arch.RoleAttnK, arch.RoleAttnV, arch.RoleAttnQKV, arch.RoleAttnQA, arch.RoleAttnKVA:
		return "attn_in"
	case arch.RoleMLPGate, arch.RoleMLPUp, arch.RoleMLPGateUp:
		return "mlp_in"
	case arch.RoleSharedExpert:
		return "shared"
	}
	return role
}

// residualBytes is the width of the residual stream under the recipe: the
// embeddings' dtype. hf-peft makes them float32, and autocast does not touch
// additions and norms, so the residual stays float32; lean keeps it 16-bit.
func (c Config) residualBytes() float64 {
	if c.Recipe == RecipeHFPeft {
		return 4
	}
	return 2
}

// layerActs is what one decoder layer keeps for backward under autocast:
// lin bytes per token, quad bytes per token per key position (attention
// probabilities of the math and eager kernels and explicit masks), and
// fixed bytes independent of the tokens; trans and transQuad are the extra
// working set of its backward, per token and per token per position.
type layerActs struct {
	lin, quad, fixed, trans, transQuad float64
}

// layerActs follows what autograd saves in one decoder layer of
// transformers 5 under torch.autocast (Trainer with bf16/fp16), with peft's
// bnb LoRA layers (which do not cast their input under autocast) and
// bitsandbytes' MatMul4Bit (which saves no input: its weight is frozen).
// docs/plan.md walks through each term.
func (m *Model) layerActs(l int, c Config, loras []Tensor) layerActs {
	const h16 = 2 // autocast's compute dtype, bf16 or fp16
	a := c.residualBytes()
	h := float64(m.Hidden)
	qd := float64(m.Heads * m.HeadDim)
	kvd := float64(m.KVHeads * m.HeadDim)
	nh := float64(m.Heads)
	r := float64(c.Rank)
	var x layerActs

	// RMSNorm keeps a float32 view of its input (a copy under lean) and the
	// rsqrt; its weight is frozen, so the normalized value is not kept.
	norms := 2.0
	if m.SandwichNorm {
		norms = 4
	}
	x.lin += norms * (4*h + 4)
	if m.QKNorm {
		x.lin += 4 * (qd + kvd)
	}

	// The kernel's saved set; outShared says whether it keeps the output,
	// which o_proj's lora_A then keeps too (the same tensor).
	outShared := false
	switch c.Kernel {
	case KernelFlash, KernelFlash2:
		// q, k, v cast to 16 bits, the output and the float32 log-sum-exp.
		x.lin += h16*(2*qd+2*kvd) + 4*nh
		x.trans += h16 * (4*qd + 2*kvd) // dq, dk and dv for every head, dout
		outShared = true
	case KernelEfficient:
		// An explicit mask: k and v repeated to every head, and the boolean
		// mask turned into a 16-bit bias that each layer keeps.
		x.lin += h16*4*qd + 4*nh
		x.quad += h16
		x.trans += h16 * 4 * qd
		outShared = true
	case KernelMath:
		// torch computes 16-bit math SDPA in float32: q, k and v (repeated)
		// upcast and the float32 probabilities are kept.
		x.lin += 4 * 3 * qd
		x.quad += 4 * nh
		x.transQuad += 2 * 4 * nh
	case KernelEager:
		// q, k (repeated), v (repeated) in 16 bits; the float32 softmax and its
		// 16-bit cast; the tanh of the soft-cap.
		x.lin += h16 * 3 * qd
		x.quad += (4 + h16) * nh
		if m.AttnSoftcap > 0 {
			x.quad += h16 * nh
		}
		x.transQuad += (4 + h16) * nh
	}

	// LoRA: lora_A keeps its input as autocast gives it to the matmul: a 16-bit
	// copy per adapter when the input is float32 (hf-peft), the shared 16-bit
	// tensor otherwise; lora_B keeps the rank-wide 16-bit intermediate.
	groups := map[string]bool{}
	for _, t := range loras {
		in := float64(t.Shape[1])
		g := inputGroup(t.Role)
		x.lin += h16 * r
		switch {
		case t.Role == arch.RoleAttnO && outShared:
		case t.Role == arch.RoleAttnO, t.Role == arch.RoleMLPDown:
			x.lin += h16 * in // a tensor nobody else keeps
		case a == 4 || !groups[g]:
			x.lin += h16 * in
		}
		groups[g] = true
	}

	if m.sparse(l) {
		// Routed experts are plain 16-bit Linear layers (float32 under
		// hf-peft): per routed token the gathered input, gate_up output,
		// activation, product and weighted output in 16 bits; the router's
		// float32 probabilities.
		k := float64(m.ExpertsPerToken)
		mi := float64(m.MoEIntermediate)
		x.lin += k*(h16*(2*h)+h16*4*mi) + 2*4*float64(m.Experts)
		if m.SharedIntermediate > 0 {
			x.lin += 3*a*float64(m.SharedIntermediate) + h16*float64(m.SharedIntermediate)
		}
		x.trans += k * h16 * 3 * mi
	} else {
		// Dense MLP: the gate output (kept by the activation), the activation
		// and up outputs (kept by their product), all in the residual's width
		// (bitsandbytes casts its output back to its input's dtype).
		i := float64(m.Intermediate)
		x.lin += 3 * a * i
		x.trans = math.Max(x.trans, 3*a*i)
	}
	x.trans += 2 * a * h
	return x
}

// lossPerToken is the working set of logits and cross-entropy at its peak,
// at the start of backward: transformers upcasts the 16-bit logits to
// float32 for the loss, log-softmax keeps its float32 output, and its
// backward holds the gradient of the log-probabilities and of the logits
// (the 16-bit logits are gone with the output object). A final soft-cap
// keeps its 16-bit tanh.
func (m *Model) lossPerToken() float64 {
	v := float64(m.Vocab)
	x := 12 * v
	if m.FinalSoftcap > 0 {
		x += 2 * v
	}
	return x
}

// Item is one line of a device's memory breakdown.
type Item struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
	// Torch is false for memory outside torch's caching allocator (CUDA
	// context, paged optimizer states): it counts against capacity but not in
	// torch.cuda.max_memory_reserved.
	Torch bool   `json:"in_torch_reserved"`
	Note  string `json:"note,omitempty"`
}

// DeviceMemory is the predicted memory of one device.
type DeviceMemory struct {
	Items []Item `json:"items"`
	// PeakAllocated predicts torch.cuda.max_memory_allocated.
	PeakAllocated int64 `json:"predicted_peak_allocated_bytes"`
	// PeakReserved predicts torch.cuda.max_memory_reserved.
	PeakReserved int64 `json:"predicted_peak_reserved_bytes"`
	// Total is PeakReserved plus what lives outside the allocator.
	Total int64 `json:"total_bytes"`
	// HostBytes is pinned host memory used by activation offloading.
	HostBytes int64 `json:"host_bytes,omitempty"`
}

// Placement says which device holds what: Layer[l] is the device of decoder
// layer l; First holds the embeddings (and vision tower), Last the final norm,
// lm_head and loss.
type Placement struct {
	Layer       []int
	First, Last int
	Devices     int
}

// DeviceOf returns the device of a tensor under p.
func (p Placement) DeviceOf(t Tensor) int {
	switch {
	case t.Layer >= 0 && t.Part == arch.PartText && t.Layer < len(p.Layer):
		return p.Layer[t.Layer]
	case t.Role == arch.RoleLMHead:
		return p.Last
	case t.Part == arch.PartText && t.Role == arch.RoleNorm:
		return p.Last // the final norm
	}
	return p.First
}

// Estimate predicts the peak memory of every device under placement p.
func (m *Model) Estimate(c Config, p Placement) []DeviceMemory {
	type acc struct {
		sums
		layers       []int
		gradsByLayer map[int]int64
	}
	accs := make([]acc, p.Devices)
	for i := range accs {
		accs[i].gradsByLayer = map[int]int64{}
	}
	g := m.groups(c)
	for _, gr := range g.list {
		d := p.First
		switch {
		case gr.layer >= 0:
			if gr.layer >= len(p.Layer) {
				continue
			}
			d = p.Layer[gr.layer]
		case gr.last:
			d = p.Last
		}
		if d < 0 || d >= p.Devices {
			continue
		}
		ac := &accs[d]
		ac.weights4 += gr.weights4
		ac.kept += gr.kept
		ac.lmHead16 += gr.lmHead16
		ac.lora += gr.lora
		ac.grads += gr.grads
		ac.states += gr.states
		ac.paged += gr.paged
		ac.resPersist += gr.resPersist
		ac.resGrads += gr.resGrads
		ac.resStep += gr.resStep
		ac.vis4 += gr.vis4
		ac.visKept += gr.visKept
		ac.proj4 += gr.proj4
		ac.projKept += gr.projKept
		if gr.layer >= 0 {
			ac.gradsByLayer[gr.layer] += gr.grads
		}
	}
	for l := 0; l < int(m.Layers) && l < len(p.Layer); l++ {
		if d := p.Layer[l]; d >= 0 && d < p.Devices {
			accs[d].layers = append(accs[d].layers, l)
		}
	}

	// Layers alike (same MLP kind and adapters) keep alike: compute once.
	type shape struct {
		sparse  bool
		n       int
		in, out int64
	}
	memo := map[shape]layerActs{}
	acts := func(l int) layerActs {
		k := shape{sparse: m.sparse(l), n: len(g.loraByLayer[l])}
		for _, t := range g.loraByLayer[l] {
			k.in += t.Shape[1]
			k.out += t.Shape[0]
		}
		if x, ok := memo[k]; ok {
			return x
		}
		x := m.layerActs(l, c, g.loraByLayer[l])
		memo[k] = x
		return x
	}
	seqTok, crossTok, patches := m.images(c)
	T := float64((c.SeqLen + seqTok) * c.Batch)
	s := float64(c.SeqLen + seqTok)
	a := c.residualBytes()
	h := float64(m.Hidden)
	// The vision tower, on the device of the embeddings: what it keeps for
	// backward (only when autograd records it), its forward working set, and
	// mllama's image states that the cross-attention layers read.
	var visSaved, visWork, visHost float64
	if v := m.Vision; v != nil && patches > 0 {
		n := float64(patches * c.Batch)
		per, L, hv := v.layerBytes(), float64(v.Layers), float64(v.Hidden)
		visWork = per * n
		if c.visionGraph() {
			switch c.Checkpointing {
			case CkptOff:
				visSaved = per * n * L
			case CkptOn:
				visSaved = 2 * hv * n * L
			case CkptOffload:
				visHost = 2 * hv * n * L
			}
		} else if v.AllHiddenStates {
			visWork += (L + 1) * 2 * hv * n // every layer's output, until the projector ran
		}
	}
	crossN := float64(crossTok * c.Batch)
	if crossN > 0 && c.Checkpointing != CkptOff {
		// The checkpointed cross-attention layers keep their input, the image states.
		states := a * h * crossN
		if c.Checkpointing == CkptOffload {
			visHost += states
		} else {
			visSaved += states
		}
	}
	out := make([]DeviceMemory, p.Devices)
	for d := range accs {
		ac := &accs[d]
		// autocast's 16-bit copies of the LoRA weights, kept by each lora
		// matmul for the input's gradient (recomputed layer by layer under
		// checkpointing).
		loraCopies := 0.0
		if c.Checkpointing == CkptOff {
			loraCopies = float64(ac.lora) / 2
		}
		persistent := ac.weights4 + ac.kept + ac.lora + ac.states + FrameworkBuffers + BackwardBuffers
		var saved, maxLayer, maxTrans, firstSaved float64
		for i, l := range ac.layers {
			x := acts(l)
			x.fixed += g.copiesByLayer[l]
			if crossN > 0 && l < len(m.CrossAttnLayers) && m.CrossAttnLayers[l] {
				x.fixed += m.crossBytes(c, crossN, s)
			}
			full := x.lin*T + x.quad*T*s + x.fixed
			trans := x.trans*T + x.transQuad*T*s
			switch c.Checkpointing {
			case CkptOff:
				saved += full
			case CkptOn:
				saved += a * h * T // the layer's input
			}
			if i == 0 {
				firstSaved = full
			}
			maxLayer = math.Max(maxLayer, full)
			maxTrans = math.Max(maxTrans, trans)
		}
		saved += loraCopies
		var lastGrads, allGrads float64
		if n := len(ac.layers); n > 0 {
			lastGrads = float64(ac.gradsByLayer[ac.layers[n-1]])
			allGrads = float64(ac.grads)
		}
		// The peaks: the loss on the device of lm_head at the start of
		// backward (no gradients yet: the Trainer sets them to None after each
		// step); the backward of this device's last layer with every saved
		// activation; its first layer with every gradient.
		type peak struct{ saved, grads, work float64 }
		// vis: the vision tower's kept activations, there at every peak of
		// the device of the embeddings (its backward comes last).
		vis := 0.0
		if d == p.First {
			vis = visSaved
		}
		total := func(x peak) float64 { return x.saved + x.grads + x.work + vis }
		var best peak
		consider := func(x peak) {
			if total(x) > total(best) {
				best = x
			}
		}
		if len(ac.layers) > 0 {
			switch c.Checkpointing {
			case CkptOff:
				consider(peak{saved, lastGrads, maxTrans})
				consider(peak{firstSaved, allGrads, maxTrans})
			case CkptOn:
				consider(peak{saved, lastGrads, maxLayer + maxTrans})
				consider(peak{a * h * T, allGrads, maxLayer + maxTrans})
			case CkptOffload:
				consider(peak{0, allGrads, maxLayer + maxTrans})
			}
		}
		if d == p.First && visWork > 0 {
			// The tower's forward, before any decoder layer ran; with a
			// recorded graph, also its backward, after every layer's.
			consider(peak{0, 0, visWork})
			if visSaved > 0 {
				consider(peak{0, float64(ac.grads), visWork})
			}
		}
		var loss float64
		if d == p.Last {
			// The final norm's float32 input, autocast's 16-bit copy of a
			// float32 lm_head (kept by its matmul), and the loss.
			loss = 4*h*T + float64(ac.lmHead16) + m.lossPerToken()*T
			grads := 0.0
			if c.Accumulate {
				grads = float64(ac.grads)
			}
			consider(peak{saved, grads, loss})
		}
		dm := DeviceMemory{}
		dm.PeakAllocated = persistent + int64(total(best))
		slack := m.slack(c, d == p.Last, maxLayer)
		reserved := ac.resPersist + float64(FrameworkBuffers+BackwardBuffers) + ac.resGrads + ac.resStep + best.saved + best.work + vis + slack
		dm.PeakReserved = int64(reserved)
		add := func(name string, b int64, torch bool, note string) {
			if b > 0 {
				dm.Items = append(dm.Items, Item{Name: name, Bytes: b, Torch: torch, Note: note})
			}
		}
		add("4-bit weights and quantization constants", ac.weights4-ac.vis4-ac.proj4, true, "NF4, blocksize 64, double quantization")
		keptNote, keptWidth := "as loaded (16-bit)", "16-bit"
		if c.Recipe == RecipeHFPeft {
			keptNote, keptWidth = "cast to float32 by prepare_model_for_kbit_training", "float32 (prepare_model_for_kbit_training)"
		}
		add("non-quantized parameters", ac.kept-ac.visKept-ac.projKept, true, keptNote)
		partNote := func(w4, kept int64) string {
			return fmt.Sprintf("frozen: %s in 4-bit, %s kept %s", units.Bytes(w4), units.Bytes(kept), keptWidth)
		}
		add("vision tower", ac.vis4+ac.visKept, true, partNote(ac.vis4, ac.visKept))
		add("projector", ac.proj4+ac.projKept, true, partNote(ac.proj4, ac.projKept))
		add("LoRA weights (float32)", ac.lora, true, "")
		add("LoRA gradients (float32) at the peak", int64(best.grads), true, "")
		add("optimizer states", ac.states, true, string(c.Optimizer))
		add("framework buffers", FrameworkBuffers+BackwardBuffers, true, "cuBLAS workspaces (forward and backward threads) and small buffers")
		actNote := "kept for backward by every layer, under autocast"
		switch c.Checkpointing {
		case CkptOn:
			actNote = "layer inputs kept by gradient checkpointing"
		case CkptOffload:
			actNote = "layer inputs offloaded to host memory"
		}
		add("activations", int64(best.saved), true, actNote)
		if vis > 0 {
			visNote := "the vision tower's, kept for backward: lean's enable_input_require_grads makes its input need a gradient"
			switch {
			case c.visionGraph() && c.Checkpointing == CkptOn:
				visNote = "the vision tower's layer inputs, kept by checkpointing (lean's enable_input_require_grads makes its input need a gradient)"
			case !c.visionGraph():
				visNote = "the image states the checkpointed cross-attention layers keep"
			}
			add("image activations", int64(vis), true, visNote)
		}
		add("working set at the peak", int64(best.work), true, "recomputed layer and its backward, or lm_head, logits and loss, or the vision tower's forward")
		add("allocator rounding and slack", dm.PeakReserved-dm.PeakAllocated, true, "reserved minus allocated: cached blocks the peak's requests could not reuse")
		add("paged optimizer states", ac.paged, false, "CUDA unified memory outside torch's allocator; evictable to host")
		add("CUDA context", CUDAContext, false, "outside torch's allocator")
		dm.Total = dm.PeakReserved + ac.paged + CUDAContext
		if c.Checkpointing == CkptOffload {
			dm.HostBytes = int64(a * h * T * float64(len(ac.layers)))
			if d == p.First {
				dm.HostBytes += int64(visHost)
			}
		}
		out[d] = dm
	}
	return out
}

// slack is the caching allocator's reserved-over-allocated at the peak:
// blocks cached by one phase of a step that the next phase's requests cannot
// reuse. The largest requests of a step are the loss's float32
// vocabulary-wide tensors (4·V bytes a token, on the device of lm_head) and
// a layer's activations; blocks freed by one get split by the other's
// smaller requests in the next step and cannot be coalesced, so the slack
// grows with the tokens of a step. Fitted to the measured rows
// (docs/plan.md, "Allocator").
func (m *Model) slack(c Config, lossDevice bool, layer float64) float64 {
	x := slackLayer * layer
	if lossDevice {
		x += slackLoss * 4 * float64(m.Vocab) * float64(m.seqLen(c)*c.Batch)
	}
	return x
}

// smallOnly is what a request of n bytes adds to the small pool, which the
// large pool's cached blocks cannot serve.
func smallOnly(n int64) float64 {
	if ceilDiv(n, 512)*512 <= smallAlloc {
		return poolBytes(n)
	}
	return 0
}

// LoRAParams counts the trainable parameters under c.
func (m *Model) LoRAParams(c Config) int64 {
	set := c.targets()
	var n int64
	for _, t := range m.Tensors {
		if c.isTarget(t, set) {
			n += c.Rank * (t.Shape[0] + t.Shape[1])
		}
		a, b := c.expertLoRA(t)
		n += a + b
	}
	return n
}

// SinglePlacement puts everything on device 0.
func SinglePlacement(m *Model) Placement {
	return Placement{Layer: make([]int, m.Layers), Devices: 1}
}

// SDPAKernel is the backend torch's scaled_dot_product_attention picks for
// transformers' call on a device of capability cc (major*10+minor). Under
// the Trainer's autocast its inputs are 16-bit whatever the recipe; with no
// padding mask transformers passes is_causal and, for grouped-query
// attention on torch >= 2.5, enable_gqa. Flash needs cc >= 8.0 and head size
// <= 256; the memory-efficient kernel does not take enable_gqa; the math
// kernel takes anything and keeps the attention probabilities.
func (m *Model) SDPAKernel(c Config, cc int) Kernel {
	switch {
	case cc >= 80 && m.HeadDim <= 256:
		return KernelFlash
	case m.KVHeads != m.Heads:
		return KernelMath
	default:
		return KernelEfficient
	}
}

// sums are the persistent bytes of a group of tensors.
type sums struct {
	weights4, kept, lora, grads, states, paged int64
	// lmHead16 is autocast's 16-bit copy of a float32 lm_head (hf-peft),
	// which its matmul keeps for the input's gradient.
	lmHead16                      int64
	resPersist, resGrads, resStep float64
	// The vision tower's and the projector's share of weights4 and kept.
	vis4, visKept, proj4, projKept int64
}

// group is the tensors that always go to the same device: one decoder
// layer, the head of the model (embeddings, vision tower), or its tail
// (final norm, lm_head).
type group struct {
	sums
	layer int // -1 for head and tail
	last  bool
}

type groups struct {
	list        []group
	loraByLayer map[int][]Tensor
	// copiesByLayer is autocast's 16-bit copies of a layer's float32
	// (hf-peft) expert weights, which their matmuls keep for backward.
	copiesByLayer map[int]float64
}

// groups sums the persistent bytes of every placement unit under c; the
// result depends only on the rank, targets, recipe and optimizer, so it is
// cached.
func (m *Model) groups(c Config) *groups {
	key := fmt.Sprint(c.Rank, c.Targets, c.Recipe, c.Optimizer, c.ExpertLoRA)
	m.mu.Lock()
	defer m.mu.Unlock()
	if g, ok := m.cache[key]; ok {
		return g
	}
	set := c.targets()
	g := &groups{list: make([]group, m.Layers+2), loraByLayer: map[int][]Tensor{}, copiesByLayer: map[int]float64{}}
	for l := range g.list {
		g.list[l].layer = l
	}
	head, tail := &g.list[m.Layers], &g.list[m.Layers+1]
	head.layer, tail.layer, tail.last = -1, -1, true
	probe := Placement{First: 0, Last: 1, Devices: 2}
	fused := map[int]int64{}
	for _, t := range m.Tensors {
		gr := head
		switch {
		case t.Layer >= 0 && t.Part == arch.PartText:
			gr = &g.list[t.Layer]
		case probe.DeviceOf(t) == 1:
			gr = tail
		}
		ac := &gr.sums
		n := t.Elements()
		part4, partKept := &ac.vis4, &ac.visKept
		if t.Part == arch.PartProjector {
			part4, partKept = &ac.proj4, &ac.projKept
		}
		if t.Part != arch.PartText {
			if t.Quantize {
				*part4 += NF4Bytes(n)
			} else {
				*partKept += n * c.keptBytes(t.DType)
			}
		}
		if t.Quantize {
			ac.weights4 += NF4Bytes(n)
			blocks := ceilDiv(n, 64)
			ac.resPersist += poolBytes(ceilDiv(n, 2)) + poolBytes(blocks) + poolBytes(ceilDiv(blocks, 256)*4) + poolBytes(64) + poolBytes(1024)
		} else {
			b := n * c.keptBytes(t.DType)
			ac.kept += b
			if t.Role == arch.RoleExpert && t.Layer >= 0 {
				// transformers 5 fuses a layer's experts into a few large
				// parameters: the allocator sees those, not the checkpoint's
				// per-expert tensors.
				fused[t.Layer] += b
			} else {
				ac.resPersist += poolBytes(b)
			}
			if c.Recipe == RecipeHFPeft && t.Role == arch.RoleExpert && t.Layer >= 0 {
				g.copiesByLayer[t.Layer] += 2 * float64(n)
				if a, b := c.expertLoRA(t); a > 0 && b > t.Shape[0]*c.Rank {
					// With adapters on the float32 experts, each layer
					// keeps about a float32 copy of gate_up_proj more: fitted
					// to the two hf-peft rows of deepseek-v2-lite-8l (with and
					// without checkpointing, testdata/plan), the mechanism
					// inside peft's parametrization not traced.
					g.copiesByLayer[t.Layer] += 4 * float64(n)
				}
			}
			if c.Recipe == RecipeHFPeft && (t.Role == arch.RoleLMHead || (m.Tied && t.Role == arch.RoleEmbedding && t.Part == arch.PartText)) {
				tail.lmHead16 += 2 * n
			}
		}
		pieces := []int64{}
		if a, b := c.expertLoRA(t); a > 0 {
			pieces = []int64{a, b}
		} else if c.isTarget(t, set) {
			g.loraByLayer[t.Layer] = append(g.loraByLayer[t.Layer], t)
			pieces = []int64{c.Rank * t.Shape[1], t.Shape[0] * c.Rank}
		}
		for _, pn := range pieces {
			ac.lora += 4 * pn
			ac.grads += 4 * pn
			ac.resPersist += poolBytes(4 * pn)
			ac.resGrads += poolBytes(4 * pn)
			switch {
			case c.Optimizer == AdamW || pn < min8bitElems:
				ac.states += 8 * pn
				ac.resPersist += 2 * poolBytes(4*pn)
				if c.Optimizer == AdamW {
					ac.resStep += smallOnly(4 * pn) // foreach temporary at step
				}
			case c.Optimizer == PagedAdamW8bit && pn >= pagedMinElems:
				ac.paged += 2*pn + 2*ceilDiv(pn, 256)*4
			default:
				ac.states += 2*pn + 2*ceilDiv(pn, 256)*4
				ac.resPersist += 2*poolBytes(pn) + 2*poolBytes(ceilDiv(pn, 256)*4)
			}
		}
	}
	for l, b := range fused {
		g.list[l].resPersist += poolBytes(b)
	}
	if m.cache == nil {
		m.cache = map[string]*groups{}
	}
	m.cache[key] = g
	return g
}
