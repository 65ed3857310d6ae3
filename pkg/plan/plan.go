package plan

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
)

// Strategy is how decoder layers are spread over devices.
type Strategy string

// Strategies.
const (
	// Sequential fills device 0, then device 1, as accelerate's "sequential" map does.
	Sequential Strategy = "sequential"
	// Balanced spreads layers so that every device ends at the same share of its capacity.
	Balanced Strategy = "balanced"
)

// Settings are the user's training settings, before decisions.
type Settings struct {
	SeqLen        int64
	Batch         int64
	Rank          int64
	Targets       []string // peft module names or roles; empty: all linear projections
	Checkpointing Checkpointing
	Optimizer     Optimizer
	Recipe        Recipe
	Strategy      Strategy
	Attention     Attention
}

// DefaultSettings are the flag defaults.
func DefaultSettings() Settings {
	return Settings{SeqLen: 2048, Batch: 1, Rank: 16, Checkpointing: CkptAuto, Optimizer: PagedAdamW8bit,
		Recipe: RecipeHFPeft, Strategy: Sequential, Attention: AttnAuto}
}

// Validate checks settings for values the memory model cannot take.
func (s Settings) Validate() error {
	switch {
	case s.SeqLen < 1 || s.SeqLen > 1<<22:
		return fmt.Errorf("%w: sequence length %d (want 1..4194304)", ErrSettings, s.SeqLen)
	case s.Batch < 1 || s.Batch > 1<<16:
		return fmt.Errorf("%w: batch size %d (want 1..65536)", ErrSettings, s.Batch)
	case s.Rank < 1 || s.Rank > 1<<14:
		return fmt.Errorf("%w: LoRA rank %d (want 1..16384)", ErrSettings, s.Rank)
	}
	switch s.Checkpointing {
	case CkptAuto, CkptOn, CkptOff, CkptOffload:
	default:
		return fmt.Errorf("%w: gradient checkpointing %q (want auto, on, off or offload)", ErrSettings, s.Checkpointing)
	}
	switch s.Optimizer {
	case AdamW, AdamW8bit, PagedAdamW8bit:
	default:
		return fmt.Errorf("%w: optimizer %q (want adamw, adamw_8bit or paged_adamw_8bit)", ErrSettings, s.Optimizer)
	}
	switch s.Recipe {
	case RecipeHFPeft, RecipeLean:
	default:
		return fmt.Errorf("%w: recipe %q (want hf-peft or lean)", ErrSettings, s.Recipe)
	}
	switch s.Strategy {
	case Sequential, Balanced:
	default:
		return fmt.Errorf("%w: strategy %q (want sequential or balanced)", ErrSettings, s.Strategy)
	}
	switch s.Attention {
	case AttnAuto, AttnFlash2, AttnSDPA, AttnEager:
	default:
		return fmt.Errorf("%w: attention %q (want auto, flash_attention_2, sdpa or eager)", ErrSettings, s.Attention)
	}
	if _, ok := TargetRoles(s.Targets); !ok {
		return fmt.Errorf("%w: LoRA targets %q: want module names such as q_proj,v_proj or all-linear", ErrSettings, strings.Join(s.Targets, ","))
	}
	return nil
}

// Decision is one choice with the reason for it.
type Decision struct {
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

// Device is one device of a plan.
type Device struct {
	Index         int    `json:"index"`
	Name          string `json:"name"`
	CapacityBytes int64  `json:"capacity_bytes"`
	// Layers is the first and last decoder layer on the device; empty if none.
	Layers []int `json:"layers,omitempty"`
	DeviceMemory
	HeadroomBytes int64 `json:"headroom_bytes"`
	Fits          bool  `json:"fits"`
}

// Advice is one change that would make a plan fit (or fit better), with the
// figure it would reach.
type Advice struct {
	Change string `json:"change"`
	// PeakBytes is the largest device total under the change.
	PeakBytes int64 `json:"peak_bytes"`
	Fits      bool  `json:"fits"`
}

// Plan is the planner's answer.
type Plan struct {
	Fits                  bool              `json:"fits"`
	Model                 string            `json:"model"`
	SeqLen                int64             `json:"seq_len"`
	BatchSize             int64             `json:"batch_size"`
	LoRARank              int64             `json:"lora_rank"`
	LoRATargets           []string          `json:"lora_targets"`
	TrainableParams       int64             `json:"trainable_params"`
	Recipe                Recipe            `json:"recipe"`
	Strategy              Strategy          `json:"strategy"`
	ComputeDType          Decision          `json:"compute_dtype"`
	Attention             Decision          `json:"attention"`
	AttentionKernel       Decision          `json:"attention_kernel"`
	GradientCheckpointing Decision          `json:"gradient_checkpointing"`
	Optimizer             Decision          `json:"optimizer"`
	MaxBatchSize          int64             `json:"max_batch_size"`
	Devices               []Device          `json:"devices"`
	DeviceMap             map[string]string `json:"device_map"`
	Advice                []Advice          `json:"advice,omitempty"`
	Notes                 []string          `json:"notes,omitempty"`

	placement Placement
	config    Config
}

// DeviceOf is the device ("cuda:N") a tensor goes to under the plan.
func (p *Plan) DeviceOf(t Tensor) string {
	return "cuda:" + strconv.Itoa(p.placement.DeviceOf(t))
}

// minCC is the lowest known compute capability, and whether all were known.
func minCC(gs []gpus.GPU) (int, bool) {
	cc, known := 0, true
	for _, g := range gs {
		if !g.KnownCC() {
			known = false
			continue
		}
		if cc == 0 || g.CC() < cc {
			cc = g.CC()
		}
	}
	if cc == 0 {
		cc = 80 // assumed; said so in the reason
	}
	return cc, known
}

func ccString(cc int) string { return fmt.Sprintf("%d.%d", cc/10, cc%10) }

// decideDType picks the compute dtype.
func decideDType(gs []gpus.GPU) Decision {
	cc, known := minCC(gs)
	switch {
	case !known:
		return Decision{"bf16", "compute capability not known for every GPU (a size was given, not a preset): assumed >= 8.0 for bfloat16; name a preset to be sure"}
	case cc >= 80:
		return Decision{"bf16", "compute capability " + ccString(cc) + " >= 8.0 has bfloat16 tensor cores; bfloat16 needs no loss scaling"}
	}
	return Decision{"fp16", "compute capability " + ccString(cc) + " < 8.0 has no bfloat16 tensor cores: float16 with loss scaling"}
}

// decideAttention picks attn_implementation.
func decideAttention(m *Model, gs []gpus.GPU, forced Attention) (Decision, []string) {
	cc, known := minCC(gs)
	var notes []string
	if m.SlidingWindow > 0 {
		notes = append(notes, fmt.Sprintf("sliding window of %d tokens: flash-attention 2 applies it in the kernel; SDPA needs an explicit mask (linear-memory kernel, no GQA fast path) once the sequence exceeds the window", m.SlidingWindow))
	}
	if forced != AttnAuto && forced != "" {
		return Decision{string(forced), "given with --attention"}, notes
	}
	fa2 := known && cc >= 80 && m.HeadDim <= 256
	switch {
	case fa2 && m.AttnSoftcap > 0:
		return Decision{string(AttnFlash2), fmt.Sprintf("compute capability %s >= 8.0 and head size %d <= 256; the model soft-caps attention logits at %g, which flash-attn supports from 2.6.0 on: install flash-attn >= 2.6 (SDPA has no soft-capping and transformers would drop it)", ccString(cc), m.HeadDim, m.AttnSoftcap)}, notes
	case fa2:
		return Decision{string(AttnFlash2), fmt.Sprintf("compute capability %s >= 8.0 and head size %d <= 256: flash-attention 2 keeps attention memory linear in the sequence (pip install flash-attn; without it use sdpa)", ccString(cc), m.HeadDim)}, notes
	case m.AttnSoftcap > 0:
		why := "head size > 256"
		if !known || cc < 80 {
			why = "flash-attention 2 needs compute capability >= 8.0"
		}
		return Decision{string(AttnEager), why + "; the model soft-caps attention logits, which SDPA cannot do (transformers drops the cap under sdpa and asks for eager when training Gemma 2): eager"}, notes
	case !known:
		return Decision{string(AttnSDPA), "compute capability unknown, so flash-attention 2 is not assumed: SDPA"}, notes
	case cc < 80:
		return Decision{string(AttnSDPA), "flash-attention 2 needs compute capability >= 8.0 (this is " + ccString(cc) + "): SDPA"}, notes
	}
	return Decision{string(AttnSDPA), fmt.Sprintf("head size %d > 256 is beyond flash-attention 2: SDPA", m.HeadDim)}, notes
}

// kernelFor says which kernel runs under attention a, and why.
func (m *Model) kernelFor(a Attention, c Config, cc int) Decision {
	switch a {
	case AttnFlash2:
		return Decision{string(KernelFlash2), "flash-attn keeps q, k, v, the output and the log-sum-exp; float32 inputs are cast to " + c.ComputeDType}
	case AttnEager:
		return Decision{string(KernelEager), "eager keeps the float32 attention probabilities of every layer: memory grows with the square of the sequence"}
	}
	if m.SlidingWindow > 0 && c.SeqLen > m.SlidingWindow {
		return Decision{string(KernelEfficient), "the sliding-window mask is explicit, so SDPA runs the memory-efficient kernel with k and v repeated to every head"}
	}
	k := m.SDPAKernel(c, cc)
	switch k {
	case KernelFlash:
		return Decision{string(k), "autocast gives SDPA 16-bit inputs; on compute capability >= 8.0 it runs its flash kernel"}
	case KernelMath:
		why := "compute capability " + ccString(cc) + " has no SDPA flash kernel"
		if m.HeadDim > 256 {
			why = fmt.Sprintf("head size %d is beyond SDPA's flash kernel", m.HeadDim)
		}
		return Decision{string(k), why + ", and with grouped-query attention the memory-efficient kernel (no enable_gqa) is skipped: SDPA falls back to its math kernel, which upcasts to float32 and keeps the attention probabilities (quadratic in the sequence)"}
	}
	return Decision{string(k), "SDPA's memory-efficient kernel: linear in the sequence"}
}

// Make plans training of m on gs with settings s.
func Make(m *Model, gs []gpus.GPU, s Settings) (*Plan, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if len(gs) == 0 {
		return nil, fmt.Errorf("%w: no GPU to plan for", gpus.ErrNoGPU)
	}
	roles, _ := TargetRoles(s.Targets)
	p := &Plan{Model: m.Family, SeqLen: s.SeqLen, BatchSize: s.Batch, LoRARank: s.Rank, LoRATargets: roles,
		Recipe: s.Recipe, Strategy: s.Strategy}
	p.ComputeDType = decideDType(gs)
	p.Attention, p.Notes = decideAttention(m, gs, s.Attention)
	c := Config{SeqLen: s.SeqLen, Batch: s.Batch, Rank: s.Rank, Targets: roles, Recipe: s.Recipe,
		Optimizer: s.Optimizer, Attention: Attention(p.Attention.Value), ComputeDType: p.ComputeDType.Value}
	cc, _ := minCC(gs)
	p.AttentionKernel = m.kernelFor(c.Attention, c, cc)
	c.Kernel = Kernel(p.AttentionKernel.Value)
	p.TrainableParams = m.LoRAParams(c)
	p.LoRATargets = m.presentTargets(c)

	modes := []Checkpointing{s.Checkpointing}
	if s.Checkpointing == CkptAuto {
		modes = []Checkpointing{CkptOff, CkptOn, CkptOffload}
	}
	var devs []Device
	var fits bool
	for _, mode := range modes {
		c.Checkpointing = mode
		p.placement, devs, fits = m.place(c, gs, s.Strategy)
		if fits {
			break
		}
	}
	p.config = c
	p.Devices, p.Fits = devs, fits
	p.GradientCheckpointing = ckptDecision(s.Checkpointing, c.Checkpointing, fits)
	p.Optimizer = optimizerDecision(s.Optimizer)
	p.MaxBatchSize = m.maxBatch(c, gs, s.Strategy)
	p.DeviceMap = m.deviceMap(p.placement)
	if c.Kernel == KernelMath || c.Kernel == KernelEager {
		p.Notes = append(p.Notes, "attention memory grows with the square of the sequence under this kernel; flash-attention 2 (compute capability >= 8.0) or the lean recipe avoid it")
	}
	if m.Experts > 0 {
		p.Notes = append(p.Notes, "MoE experts stay 16-bit under transformers 5 (fused parameters bitsandbytes does not convert); hf-peft casts them to float32")
	}
	if !fits || p.MaxBatchSize < s.Batch*2 {
		p.Advice = m.advise(c, gs, s)
	}
	return p, nil
}

func ckptDecision(asked, got Checkpointing, fits bool) Decision {
	if asked != CkptAuto {
		return Decision{string(got), "given with --gradient-checkpointing"}
	}
	switch {
	case got == CkptOff && fits:
		return Decision{"off", "fits without it, and recomputation would cost about a third more compute"}
	case got == CkptOn && fits:
		return Decision{"on", "does not fit without it: only each layer's input is kept, and one layer is recomputed at a time in backward"}
	case got == CkptOffload && fits:
		return Decision{"offload", "does not fit even with checkpointing on: layer inputs go to pinned host memory"}
	}
	return Decision{string(got), "does not fit in any mode; this is the most frugal one"}
}

func optimizerDecision(o Optimizer) Decision {
	switch o {
	case PagedAdamW8bit:
		return Decision{string(o), "8-bit Adam states (2 bytes a parameter); large ones are paged through CUDA unified memory, so spikes spill to host instead of failing"}
	case AdamW8bit:
		return Decision{string(o), "8-bit Adam states: 2 bytes a parameter instead of 8"}
	}
	return Decision{string(o), "float32 Adam states: 8 bytes a trainable parameter"}
}

// evaluate estimates every device under placement pl.
func (m *Model) evaluate(c Config, gs []gpus.GPU, pl Placement) ([]Device, bool) {
	mem := m.Estimate(c, pl)
	used := make([]bool, len(gs))
	for _, d := range pl.Layer {
		if d >= 0 {
			used[d] = true
		}
	}
	used[pl.First], used[pl.Last] = true, true
	devs := make([]Device, len(gs))
	fits := true
	for i, g := range gs {
		d := Device{Index: i, Name: g.Name, CapacityBytes: g.Capacity()}
		if used[i] {
			d.DeviceMemory = mem[i]
		}
		first, last := -1, -1
		for l, dv := range pl.Layer {
			if dv == i {
				if first < 0 {
					first = l
				}
				last = l
			}
		}
		if first >= 0 {
			d.Layers = []int{first, last}
		}
		d.HeadroomBytes = d.CapacityBytes - d.Total
		d.Fits = d.HeadroomBytes >= 0
		fits = fits && d.Fits
		devs[i] = d
	}
	return devs, fits
}

// place assigns whole decoder layers to devices in order.
func (m *Model) place(c Config, gs []gpus.GPU, st Strategy) (Placement, []Device, bool) {
	n := len(gs)
	L := int(m.Layers)
	if st == Balanced && n > 1 {
		lo, hi := 0.0, 1.0
		best, ok := m.fill(c, gs, 1.0, false)
		if !ok {
			best = m.sequential(c, gs)
		} else {
			for i := 0; i < 24; i++ {
				mid := (lo + hi) / 2
				if pl, ok := m.fill(c, gs, mid, false); ok {
					best, hi = pl, mid
				} else {
					lo = mid
				}
			}
		}
		devs, fits := m.evaluate(c, gs, best)
		return best, devs, fits
	}
	_ = L
	pl := m.sequential(c, gs)
	devs, fits := m.evaluate(c, gs, pl)
	return pl, devs, fits
}

// sequential fills device 0 with layers until the next would not fit, then
// device 1, and so on, as accelerate does; the final norm and lm_head follow
// the last layer, or move to the next device when they do not fit there.
func (m *Model) sequential(c Config, gs []gpus.GPU) Placement {
	pl, _ := m.fill(c, gs, 1, true)
	return pl
}

// fill places layers in order, each on the current device while that device
// stays within u of its capacity, else on the next; then the tail (final
// norm, lm_head and the loss) goes with the last layer, or on the next device
// when it does not fit there. ok is false when something is over budget; with
// overflow the rest then piles onto the last device, so the caller can report it.
func (m *Model) fill(c Config, gs []gpus.GPU, u float64, overflow bool) (Placement, bool) {
	n := len(gs)
	budget := func(d int) int64 { return int64(u * float64(gs[d].Capacity())) }
	pl := Placement{Layer: make([]int, m.Layers), Devices: n, Last: -1} // no tail while filling
	for l := range pl.Layer {
		pl.Layer[l] = -1
	}
	d := 0
	for l := range pl.Layer {
		pl.Layer[l] = d
		if d+1 < n && m.Estimate(c, pl)[d].Total > budget(d) {
			d++
			pl.Layer[l] = d
		}
		if !overflow && m.Estimate(c, pl)[d].Total > budget(d) {
			return pl, false
		}
	}
	pl.Last = pl.Layer[len(pl.Layer)-1]
	if m.Estimate(c, pl)[pl.Last].Total > budget(pl.Last) && pl.Last+1 < n {
		pl.Last++
	}
	mem := m.Estimate(c, pl)
	for i := range mem {
		if mem[i].Total > budget(i) && (i == pl.First || i == pl.Last || contains(pl.Layer, i)) {
			return pl, false
		}
	}
	return pl, true
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// peakOf is the largest total over devices, and whether all fit.
func (m *Model) peakOf(c Config, gs []gpus.GPU, st Strategy) (int64, bool) {
	_, devs, fits := m.place(c, gs, st)
	var peak int64
	for _, d := range devs {
		peak = max(peak, d.Total)
	}
	return peak, fits
}

// maxBatch is the largest batch size that fits under c, 0 when none does.
func (m *Model) maxBatch(c Config, gs []gpus.GPU, st Strategy) int64 {
	ok := func(b int64) bool {
		c.Batch = b
		_, fits := m.peakOf(c, gs, st)
		return fits
	}
	if !ok(1) {
		return 0
	}
	lo, hi := int64(1), int64(2)
	for hi <= 4096 && ok(hi) {
		lo, hi = hi, hi*2
	}
	if hi > 4096 {
		return lo
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if ok(mid) {
			lo = mid
		} else {
			hi = mid
		}
	}
	return lo
}

// advise tries the changes a user can make and reports the figure each reaches.
func (m *Model) advise(c Config, gs []gpus.GPU, s Settings) []Advice {
	var out []Advice
	try := func(change string, c2 Config, gs2 []gpus.GPU) {
		peak, fits := m.peakOf(c2, gs2, s.Strategy)
		out = append(out, Advice{Change: change, PeakBytes: peak, Fits: fits})
	}
	cc, _ := minCC(gs)
	if c.Checkpointing == CkptOff {
		c2 := c
		c2.Checkpointing = CkptOn
		try("--gradient-checkpointing on", c2, gs)
	}
	if c.Checkpointing != CkptOffload {
		c2 := c
		c2.Checkpointing = CkptOffload
		try("--gradient-checkpointing offload", c2, gs)
	}
	if c.Optimizer != PagedAdamW8bit {
		c2 := c
		c2.Optimizer = PagedAdamW8bit
		try("--optimizer paged_adamw_8bit", c2, gs)
	}
	if c.Attention != AttnFlash2 && cc >= 80 && m.HeadDim <= 256 {
		c2 := c
		c2.Attention, c2.Kernel = AttnFlash2, KernelFlash2
		try("--attention flash_attention_2 (pip install flash-attn)", c2, gs)
	}
	if c.Recipe == RecipeHFPeft {
		c2 := c
		c2.Recipe = RecipeLean
		if c2.Attention == AttnSDPA {
			c2.Kernel = Kernel(m.kernelFor(AttnSDPA, c2, cc).Value)
		}
		try("--recipe lean (keep 16-bit parameters instead of casting them to float32)", c2, gs)
	}
	if c.Rank > 4 {
		c2 := c
		c2.Rank = max(4, c.Rank/2)
		try(fmt.Sprintf("--lora-rank %d", c2.Rank), c2, gs)
	}
	if c.Batch > 1 {
		c2 := c
		c2.Batch = 1
		try("--batch-size 1 (with gradient accumulation)", c2, gs)
	}
	// The longest sequence, in steps of 256 tokens, that fits as configured.
	for _, frac := range []int64{2, 4, 8} {
		c2 := c
		c2.SeqLen = max(256, c.SeqLen/frac/256*256)
		if c2.SeqLen >= c.SeqLen {
			break
		}
		try(fmt.Sprintf("--seq-len %d", c2.SeqLen), c2, gs)
		if _, fits := m.peakOf(c2, gs, s.Strategy); fits {
			break
		}
	}
	more := append(append([]gpus.GPU(nil), gs...), gs[len(gs)-1])
	for i := range more {
		more[i].Index = i
	}
	try(fmt.Sprintf("%d GPUs like the last one", len(more)), c, more)
	if bigger, ok := largerGPU(gs); ok {
		big := make([]gpus.GPU, len(gs))
		for i := range big {
			big[i] = gpus.GPU{Index: i, Name: bigger.Full, TotalBytes: bigger.Bytes, Major: bigger.Major, Minor: bigger.Minor, Source: "preset"}
		}
		c2 := c
		try(fmt.Sprintf("%d x %s (--gpus %s)", len(gs), bigger.Full, bigger.Name), c2, big)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Fits != out[j].Fits {
			return out[i].Fits
		}
		return out[i].PeakBytes < out[j].PeakBytes
	})
	return out
}

// largerGPU is the smallest preset with more memory than the smallest GPU given.
func largerGPU(gs []gpus.GPU) (gpus.Preset, bool) {
	small := int64(math.MaxInt64)
	for _, g := range gs {
		small = min(small, g.Capacity())
	}
	var best gpus.Preset
	found := false
	for _, p := range gpus.Presets {
		if p.Bytes > small && p.Major >= 8 && (!found || p.Bytes < best.Bytes) {
			best, found = p, true
		}
	}
	return best, found
}

// deviceMap is the device_map for from_pretrained: whole modules, as
// accelerate names them.
func (m *Model) deviceMap(pl Placement) map[string]string {
	dm := map[string]string{}
	for _, t := range m.Tensors {
		dm[moduleOf(t)] = strconv.Itoa(pl.DeviceOf(t))
	}
	return dm
}

// moduleOf is the module a tensor belongs to at device-map granularity.
func moduleOf(t Tensor) string {
	name := strings.TrimSuffix(strings.TrimSuffix(t.Name, ".weight"), ".bias")
	if t.Part != arch.PartText {
		parts := strings.Split(name, ".")
		if parts[0] == "model" && len(parts) > 1 {
			return parts[0] + "." + parts[1]
		}
		return parts[0]
	}
	if t.Layer >= 0 {
		key := "layers." + strconv.Itoa(t.Layer)
		if i := strings.Index(name, key+"."); i >= 0 {
			return name[:i+len(key)]
		}
	}
	return name
}

// presentTargets lists the target roles the model actually has.
func (m *Model) presentTargets(c Config) []string {
	set := c.targets()
	seen := map[string]bool{}
	var out []string
	for _, t := range m.Tensors {
		if c.isTarget(t, set) && !seen[t.Role] {
			seen[t.Role] = true
			out = append(out, t.Role)
		}
	}
	return out
}
