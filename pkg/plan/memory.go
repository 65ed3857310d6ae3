package plan

import (
	"fmt"
	"math"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
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
}

// Constants of the memory model. docs/plan.md gives the reasoning for each.
const (
	// CUDAContext is the driver context and the kernels loaded into it: on the
	// device, but outside torch's caching allocator.
	CUDAContext = 500 << 20
	// FrameworkBuffers: what is allocated after from_pretrained beyond the
	// parameters (cuBLAS workspace and small buffers), measured on the
	// calibration run (19.7 MiB) and rounded.
	FrameworkBuffers = 20 << 20
	// fragLayer and fragUnit* size the caching allocator's slack in the large
	// pool: blocks freed by one layer's working set that later requests split
	// and cannot coalesce. See docs/plan.md, "Allocator".
	fragLayer      = 1.0
	fragUnitCkpt   = 0.5
	fragUnitNoCkpt = 2.0

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

// actBytes is the width of the residual stream's elements under the recipe.
func (c Config) actBytes() float64 {
	if c.Recipe == RecipeHFPeft {
		return 4
	}
	return 2
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
	return t.Quantize && t.Layer >= 0 && t.Part == arch.PartText && len(t.Shape) == 2 && set[t.Role]
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

// layerActs is what one decoder layer keeps for backward, per token: lin
// bytes, plus quad bytes per token per key position (the attention
// probabilities of the math and eager kernels); and the extra working set
// of its backward at the peak, per token (transLin) and per token per
// position (transQuad).
type layerActs struct {
	lin, quad, transLin, transQuad float64
}

func (m *Model) layerActs(l int, c Config, loras []Tensor) layerActs {
	a := c.actBytes()
	h := float64(m.Hidden)
	qd := float64(m.Heads * m.HeadDim)
	kvd := float64(m.KVHeads * m.HeadDim)
	nh := float64(m.Heads)
	r := float64(c.Rank)
	var x layerActs

	// Each RMSNorm keeps a float32 view of its input (the input itself under
	// hf-peft, a float32 copy under lean) for pow and mul; its weight is
	// frozen, so the normalized value is not kept.
	norms := 2.0
	if m.SandwichNorm {
		norms = 4
	}
	x.lin += norms * 4 * h
	if m.QKNorm {
		x.lin += 4 * (qd + kvd)
	}

	// LoRA: lora_A keeps its input (float32, the adapters' dtype); lora_B
	// keeps the rank-wide intermediate. The base 4-bit matmul keeps nothing
	// (its weight is frozen and dequantized on the fly).
	groups := map[string]bool{}
	for _, t := range loras {
		in := float64(t.Shape[1])
		g := inputGroup(t.Role)
		if a == 4 {
			if !groups[g] {
				x.lin += 4 * in
			}
		} else {
			x.lin += 4 * in // cast to float32 per adapter
		}
		groups[g] = true
		x.lin += 4 * r
	}

	switch c.Kernel {
	case KernelMath:
		// q·scale, kᵀ·scale (repeated to all heads), v (repeated), probabilities.
		x.lin += 3 * a * qd
		x.quad += a * nh
		x.transQuad += 3 * a * nh
	case KernelEager:
		x.lin += 3 * a * qd
		x.quad += 4 * nh // float32 softmax
		if a != 4 {
			x.quad += a * nh // its cast back to the compute dtype
		}
		if m.AttnSoftcap > 0 {
			x.quad += a * nh // tanh output of the soft-cap
		}
		x.transQuad += 3 * 4 * nh
	case KernelEfficient:
		// q, k and v repeated to all heads (an explicit mask disables GQA), out, logsumexp.
		x.lin += 4*a*qd + 4*nh
		x.transLin += 3 * a * qd
	case KernelFlash:
		x.lin += 2*(2*qd+2*kvd) + 4*nh
		x.transLin += 2*(qd+2*kvd) + 4*qd
	case KernelFlash2:
		// transformers casts float32 q, k, v to the compute dtype first.
		x.lin += 2*(qd+2*kvd) + 2*qd + 4*nh
		x.transLin += 2*(qd+2*kvd) + 4*qd
	}

	if m.sparse(l) {
		k := float64(m.ExpertsPerToken)
		mi := float64(m.MoEIntermediate)
		x.lin += k*3*a*mi + k*a*h + 4*float64(m.Experts)
		if m.SharedIntermediate > 0 {
			x.lin += 3 * a * float64(m.SharedIntermediate)
		}
	} else {
		// gate output (kept by the activation), activation output and up
		// output (kept by their product).
		x.lin += 3 * a * float64(m.Intermediate)
	}
	x.transLin += 2 * a * h
	return x
}

// lossPerToken is the working set of logits and cross-entropy at the start
// of backward: the logits (kept by the output object), the float32
// log-probabilities, their gradient and the logits' gradient.
func (m *Model) lossPerToken(c Config) float64 {
	la := c.actBytes()
	v := float64(m.Vocab)
	x := (la + 12) * v
	if m.FinalSoftcap > 0 {
		x += 2 * la * v
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
		ac.lora += gr.lora
		ac.grads += gr.grads
		ac.states += gr.states
		ac.paged += gr.paged
		ac.resPersist += gr.resPersist
		ac.resGrads += gr.resGrads
		ac.resStep += gr.resStep
		if gr.layer >= 0 {
			ac.gradsByLayer[gr.layer] += gr.grads
		}
	}
	loraByLayer := g.loraByLayer
	for l := 0; l < int(m.Layers) && l < len(p.Layer); l++ {
		if d := p.Layer[l]; d >= 0 && d < p.Devices {
			accs[d].layers = append(accs[d].layers, l)
		}
	}

	T := float64(c.SeqLen * c.Batch)
	s := float64(c.SeqLen)
	a := c.actBytes()
	h := float64(m.Hidden)
	out := make([]DeviceMemory, p.Devices)
	for d := range accs {
		ac := &accs[d]
		persistent := ac.weights4 + ac.kept + ac.lora + ac.states + FrameworkBuffers
		var saved, maxLayer, maxTrans, fragLin, fragQuad, firstSaved float64
		for i, l := range ac.layers {
			x := m.layerActs(l, c, loraByLayer[l])
			full := x.lin*T + x.quad*T*s
			trans := x.transLin*T + x.transQuad*T*s
			switch c.Checkpointing {
			case CkptOff:
				saved += full
			case CkptOn:
				saved += a * h * T
			}
			if i == 0 {
				firstSaved = full
			}
			maxLayer = math.Max(maxLayer, full)
			maxTrans = math.Max(maxTrans, trans)
			fragLin = math.Max(fragLin, x.lin*T)
			fragQuad = math.Max(fragQuad, x.transQuad/3*T*s)
		}
		var lastGrads, allGrads float64
		if n := len(ac.layers); n > 0 {
			lastGrads = float64(ac.gradsByLayer[ac.layers[n-1]])
			allGrads = float64(ac.grads)
		}
		// The backward peak of this device is at its last layer, with all its
		// saved activations and few gradients, or at its first layer, with
		// all its gradients and little else; the loss peak is on the device
		// of lm_head, at the start of backward.
		type peak struct{ saved, grads, work float64 }
		total := func(x peak) float64 { return x.saved + x.grads + x.work }
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
		if d == p.Last {
			consider(peak{saved, 0, 4*h*T + m.lossPerToken(c)*T})
		}
		unit := fragUnitNoCkpt
		if c.Checkpointing != CkptOff {
			unit = fragUnitCkpt
		}
		frag := 0.0
		if len(ac.layers) > 0 {
			frag = fragLayer*fragLin + unit*fragQuad
		}
		dm := DeviceMemory{}
		dm.PeakAllocated = persistent + int64(total(best))
		reserved := ac.resPersist + float64(FrameworkBuffers) + ac.resGrads + ac.resStep + best.saved + best.work + frag
		dm.PeakReserved = int64(reserved)
		add := func(name string, b int64, torch bool, note string) {
			if b > 0 {
				dm.Items = append(dm.Items, Item{Name: name, Bytes: b, Torch: torch, Note: note})
			}
		}
		add("4-bit weights and quantization constants", ac.weights4, true, "NF4, blocksize 64, double quantization")
		keptNote := "as loaded (16-bit)"
		if c.Recipe == RecipeHFPeft {
			keptNote = "cast to float32 by prepare_model_for_kbit_training"
		}
		add("non-quantized parameters", ac.kept, true, keptNote)
		add("LoRA weights (float32)", ac.lora, true, "")
		add("LoRA gradients (float32) at the peak", int64(best.grads), true, "")
		add("optimizer states", ac.states, true, string(c.Optimizer))
		add("framework buffers", FrameworkBuffers, true, "cuBLAS workspace and small buffers")
		actNote := "kept for backward by every layer"
		switch c.Checkpointing {
		case CkptOn:
			actNote = "layer inputs kept by gradient checkpointing"
		case CkptOffload:
			actNote = "layer inputs offloaded to host memory"
		}
		add("activations", int64(best.saved), true, actNote)
		add("working set at the peak", int64(best.work), true, "recomputed layer, attention backward, or logits and loss")
		add("allocator rounding and fragmentation", dm.PeakReserved-dm.PeakAllocated, true, "reserved minus allocated")
		add("paged optimizer states", ac.paged, false, "CUDA unified memory outside torch's allocator; evictable to host")
		add("CUDA context", CUDAContext, false, "outside torch's allocator")
		dm.Total = dm.PeakReserved + ac.paged + CUDAContext
		if c.Checkpointing == CkptOffload {
			dm.HostBytes = int64(a * h * T * float64(len(ac.layers)))
		}
		out[d] = dm
	}
	return out
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
	}
	return n
}

// SinglePlacement puts everything on device 0.
func SinglePlacement(m *Model) Placement {
	return Placement{Layer: make([]int, m.Layers), Devices: 1}
}

// SDPAKernel is the backend torch's scaled_dot_product_attention picks for
// transformers' call on a device of capability cc (major*10+minor): with no
// padding mask transformers passes is_causal and, for grouped-query attention
// on torch >= 2.5, enable_gqa. Flash needs 16-bit inputs and cc >= 8.0; the
// memory-efficient kernel takes float32 but not enable_gqa; the math kernel
// takes anything and keeps the attention probabilities.
func (m *Model) SDPAKernel(c Config, cc int) Kernel {
	sixteen := c.Recipe != RecipeHFPeft
	gqa := m.KVHeads != m.Heads
	switch {
	case sixteen && cc >= 80 && m.HeadDim <= 256:
		return KernelFlash
	case gqa:
		return KernelMath
	default:
		return KernelEfficient
	}
}

// sums are the persistent bytes of a group of tensors.
type sums struct {
	weights4, kept, lora, grads, states, paged int64
	resPersist, resGrads, resStep              float64
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
}

// groups sums the persistent bytes of every placement unit under c; the
// result depends only on the rank, targets, recipe and optimizer, so it is
// cached.
func (m *Model) groups(c Config) *groups {
	key := fmt.Sprint(c.Rank, c.Targets, c.Recipe, c.Optimizer)
	m.mu.Lock()
	defer m.mu.Unlock()
	if g, ok := m.cache[key]; ok {
		return g
	}
	set := c.targets()
	g := &groups{list: make([]group, m.Layers+2), loraByLayer: map[int][]Tensor{}}
	for l := range g.list {
		g.list[l].layer = l
	}
	head, tail := &g.list[m.Layers], &g.list[m.Layers+1]
	head.layer, tail.layer, tail.last = -1, -1, true
	probe := Placement{First: 0, Last: 1, Devices: 2}
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
		if t.Quantize {
			ac.weights4 += NF4Bytes(n)
			blocks := ceilDiv(n, 64)
			ac.resPersist += poolBytes(ceilDiv(n, 2)) + poolBytes(blocks) + poolBytes(ceilDiv(blocks, 256)*4) + poolBytes(64) + poolBytes(1024)
		} else {
			b := n * c.keptBytes(t.DType)
			ac.kept += b
			ac.resPersist += poolBytes(b)
		}
		if !c.isTarget(t, set) {
			continue
		}
		g.loraByLayer[t.Layer] = append(g.loraByLayer[t.Layer], t)
		for _, pn := range []int64{c.Rank * t.Shape[1], t.Shape[0] * c.Rank} {
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
	if m.cache == nil {
		m.cache = map[string]*groups{}
	}
	m.cache[key] = g
	return g
}
