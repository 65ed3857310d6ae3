package plan

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/internal/units"
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
	// Images per sample (vision-language models; 0: text-only fine-tuning)
	// and, when not 0, the tokens one image makes instead of the family's
	// default (mllama: the tokens its cross-attention attends to).
	Images      int64
	ImageTokens int64
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
	switch {
	case s.Images < 0 || s.Images > 1024:
		return fmt.Errorf("%w: images per sample %d (want 0..1024)", ErrSettings, s.Images)
	case s.ImageTokens < 0 || s.ImageTokens > 1<<20:
		return fmt.Errorf("%w: tokens per image %d (want 0..1048576, 0 for the family's default)", ErrSettings, s.ImageTokens)
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
	HeadroomBytes int64   `json:"headroom_bytes"`
	Fits          bool    `json:"fits"`
	Verdict       Verdict `json:"verdict"`
}

// Verdict is a plan's answer, with the model's error taken into account.
type Verdict string

// Verdicts.
const (
	// VerdictFits: the predicted total plus the model's error margin fits.
	VerdictFits Verdict = "fits"
	// VerdictTight: the predicted total fits, but the headroom is within the
	// model's error: it may or may not run.
	VerdictTight Verdict = "tight"
	// VerdictNoFit: the predicted total is over capacity.
	VerdictNoFit Verdict = "does not fit"
)

// ModelError is the margin of the memory model on torch's reserved figure:
// on the measured rows (testdata/plan) it predicts within -3.7..+8.7%, and
// leaving each row out of the fit, within -4.5..+9.9%; a run may need up to
// this fraction more than predicted.
const ModelError = 0.06

// verdictOf judges a device's total against its capacity.
func verdictOf(dm DeviceMemory, capacity int64) Verdict {
	switch {
	case dm.Total > capacity:
		return VerdictNoFit
	case dm.Total+int64(ModelError*float64(dm.PeakReserved)) > capacity:
		return VerdictTight
	}
	return VerdictFits
}

func rankOf(v Verdict) int {
	switch v {
	case VerdictFits:
		return 0
	case VerdictTight:
		return 1
	}
	return 2
}

// worse is the worse of two verdicts.
func worse(a, b Verdict) Verdict {
	if rankOf(b) > rankOf(a) {
		return b
	}
	return a
}

// Advice is one change that would make a plan fit (or fit better), with the
// figure it would reach.
type Advice struct {
	// Change is the flags of the change, or of a set of changes joined by " + ".
	Change  string   `json:"change"`
	Changes []string `json:"changes"`
	// PeakBytes is the largest device total under the change.
	PeakBytes int64   `json:"peak_bytes"`
	Fits      bool    `json:"fits"`
	Verdict   Verdict `json:"verdict"`
}

// Plan is the planner's answer.
type Plan struct {
	Fits    bool    `json:"fits"`
	Verdict Verdict `json:"verdict"`
	Model   string  `json:"model"`
	// ModelID is the Hugging Face id detect found the model by in the local
	// cache ("" for a local path): the snippet loads it by that id.
	ModelID               string            `json:"model_id,omitempty"`
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
	MaxSeqLen             int64             `json:"max_seq_len"`
	Devices               []Device          `json:"devices"`
	DeviceMap             map[string]string `json:"device_map"`
	Advice                []Advice          `json:"advice,omitempty"`
	// VisionLanguage: the model has a vision tower (loaded with
	// AutoModelForImageTextToText).
	VisionLanguage bool `json:"vision_language,omitempty"`
	// Vision is the vision part of the plan; nil for a text model.
	Vision *VisionPlan `json:"vision,omitempty"`
	Notes  []string    `json:"notes,omitempty"`

	placement Placement
	config    Config
}

// VisionPlan is what a plan says of the vision tower, the projector and the
// images.
type VisionPlan struct {
	// Parameters, and how the default policy stores them: 4-bit or kept
	// (float32 under hf-peft, which casts every parameter that is not 4-bit,
	// 16-bit under lean). All frozen: LoRA goes to the language model only.
	TowerParams         int64 `json:"vision_tower_params"`
	TowerParams4bit     int64 `json:"vision_tower_params_4bit"`
	ProjectorParams     int64 `json:"projector_params"`
	ProjectorParams4bit int64 `json:"projector_params_4bit"`
	TowerBytes          int64 `json:"vision_tower_bytes"`
	ProjectorBytes      int64 `json:"projector_bytes"`
	// ImagesPerSample is --images; the tokens are per image.
	ImagesPerSample int64 `json:"images_per_sample"`
	// ImageTokens: what one image adds to the language model's sequence.
	ImageTokens int64 `json:"image_tokens_per_image"`
	// CrossAttentionTokens: what each cross-attention layer attends to, per
	// image (mllama); its images do not enter the sequence.
	CrossAttentionTokens int64 `json:"cross_attention_tokens_per_image,omitempty"`
	// TowerTokens: the tokens one image is inside the vision tower.
	TowerTokens int64 `json:"vision_tower_tokens_per_image"`
	// LanguageSeqLen is the language model's sequence: text and image tokens.
	LanguageSeqLen int64 `json:"language_model_seq_len"`
	// KeepsActivations: autograd records the frozen tower (see
	// Config.visionGraph), so it keeps activations for backward.
	KeepsActivations bool   `json:"vision_tower_keeps_activations"`
	Measured         bool   `json:"measured"`
	Note             string `json:"note"`
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
	if m.SlidingWindow > 0 && m.seqLen(c) > m.SlidingWindow {
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
	p.VisionLanguage = m.VisionParams > 0
	p.ComputeDType = decideDType(gs)
	p.Attention, p.Notes = decideAttention(m, gs, s.Attention)
	c := Config{SeqLen: s.SeqLen, Batch: s.Batch, Rank: s.Rank, Targets: roles, Recipe: s.Recipe,
		Optimizer: s.Optimizer, Attention: Attention(p.Attention.Value), ComputeDType: p.ComputeDType.Value,
		Images: s.Images, ImageTokens: s.ImageTokens}
	cc, _ := minCC(gs)
	p.AttentionKernel = m.kernelFor(c.Attention, c, cc)
	c.Kernel = Kernel(p.AttentionKernel.Value)
	p.TrainableParams = m.LoRAParams(c)
	p.LoRATargets = m.presentTargets(c)

	modes := []Checkpointing{s.Checkpointing}
	if s.Checkpointing == CkptAuto {
		modes = []Checkpointing{CkptOff, CkptOn, CkptOffload}
	}
	// The first mode that fits with margin; else the first that is tight;
	// else the most frugal.
	var chosen *modeResult
	for _, mode := range modes {
		c.Checkpointing = mode
		pl, devs, v := m.place(c, gs, s.Strategy)
		r := &modeResult{mode, pl, devs, v}
		if chosen == nil || rankOf(v) < rankOf(chosen.verdict) || (v == VerdictNoFit && chosen.verdict == VerdictNoFit) {
			chosen = r
		}
		if v == VerdictFits {
			break
		}
	}
	c.Checkpointing = chosen.mode
	p.placement = chosen.placement
	p.config = c
	p.Devices, p.Verdict, p.Fits = chosen.devs, chosen.verdict, chosen.verdict != VerdictNoFit
	p.GradientCheckpointing = ckptDecision(s.Checkpointing, c.Checkpointing, p.Verdict)
	p.Optimizer = optimizerDecision(s.Optimizer)
	p.MaxBatchSize = m.maxBatch(c, gs, s.Strategy)
	// The longest sequence: with checkpointing auto, in whichever mode
	// reaches furthest.
	for _, mode := range modes {
		c2 := c
		c2.Checkpointing = mode
		p.MaxSeqLen = max(p.MaxSeqLen, m.maxSeq(c2, gs, s.Strategy))
	}
	p.DeviceMap = m.deviceMap(p.placement)
	if c.Kernel == KernelMath || c.Kernel == KernelEager {
		p.Notes = append(p.Notes, "attention memory grows with the square of the sequence under this kernel; flash-attention 2 (compute capability >= 8.0) avoids it")
	}
	if p.TrainableParams == 0 {
		p.Notes = append(p.Notes, "no LoRA target is among the model's 4-bit linear layers (an FP8 or pre-quantized checkpoint?): nothing would train")
	}
	if m.Experts > 0 {
		p.Notes = append(p.Notes, "MoE experts stay 16-bit under transformers 5 (fused parameters bitsandbytes does not convert); hf-peft casts them to float32")
		if n := m.expertLoRANote(c, gs, s.Strategy); n != "" {
			p.Notes = append(p.Notes, n)
		}
	}
	if m.Vision != nil {
		p.Vision = m.visionPlan(c)
		p.Notes = append(p.Notes, m.visionNotes(c)...)
	} else if s.Images > 0 {
		p.Notes = append(p.Notes, fmt.Sprintf("--images %d ignored: %s has no vision tower", s.Images, m.Family))
	}
	if p.Verdict != VerdictFits {
		p.Advice = m.advise(c, gs, s)
	}
	return p, nil
}

// visionPlan sums the vision part of a plan under c.
func (m *Model) visionPlan(c Config) *VisionPlan {
	vp := &VisionPlan{ImagesPerSample: c.Images, LanguageSeqLen: m.seqLen(c),
		KeepsActivations: c.visionGraph() && c.Images > 0}
	one := c
	one.Images = 1
	vp.ImageTokens, vp.CrossAttentionTokens, vp.TowerTokens = m.images(one)
	for _, t := range m.Tensors {
		if t.Part == arch.PartText {
			continue
		}
		n, b := t.Elements(), t.Elements()*c.keptBytes(t.DType)
		if t.Quantize {
			b = NF4Bytes(n)
		}
		if t.Part == arch.PartProjector {
			vp.ProjectorParams += n
			vp.ProjectorBytes += b
			if t.Quantize {
				vp.ProjectorParams4bit += n
			}
		} else {
			vp.TowerParams += n
			vp.TowerBytes += b
			if t.Quantize {
				vp.TowerParams4bit += n
			}
		}
	}
	vp.Measured = measuredVision[m.Family]
	vp.Note = m.visionMeasureNote()
	return vp
}

// measuredVision are the vision-language families with Trainer rows measured
// on a GPU, images included (testdata/plan: gemma-3-4b and Qwen2.5-VL-7B, 0 to
// 2 images a sample, peak reserved within -1.6..+5.6% of the prediction).
var measuredVision = map[string]bool{"gemma3": true, "qwen2_5_vl": true}

func (m *Model) visionMeasureNote() string {
	if measuredVision[m.Family] {
		return "measured: Trainer rows of this family with 0 to 2 images a sample on an H200 came within -1.6..+5.6% of the predicted peak reserved (testdata/plan)"
	}
	return "modelled, not measured for this family: its vision part follows the accounting measured on gemma3 and qwen2_5_vl (within -1.6..+5.6%)"
}

// visionNotes says what the plan assumed about images.
func (m *Model) visionNotes(c Config) []string {
	v := m.Vision
	one := c
	one.Images = 1
	seq, cross, patches := m.images(one)
	var out []string
	per := fmt.Sprintf("%d tokens per image in the sequence", seq)
	if cross > 0 {
		per = fmt.Sprintf("%d image tokens per image that every cross-attention layer attends to", cross)
	}
	if c.Images == 0 {
		out = append(out, fmt.Sprintf("text-only: 0 images per sample, so the vision tower never runs; --images N plans N images a sample (%s, %d through the vision tower)", per, patches))
	} else {
		out = append(out, fmt.Sprintf("%d image(s) per sample: %s, %d through the vision tower; the language model's sequence is %d tokens", c.Images, per, patches, m.seqLen(c)))
	}
	switch v.Kind {
	case "qwen2_vl", "qwen2_5_vl":
		if c.ImageTokens == 0 {
			out = append(out, fmt.Sprintf("qwen vl's tokens follow the image's resolution: assumed %dx%d pixels, (%d/14)^2 = %d patches merged 2x2 into %d tokens; --image-tokens N for another (N x %d patches)", QwenDefaultImageSide, QwenDefaultImageSide, QwenDefaultImageSide, v.PatchesPerImage, v.PatchesPerImage/v.Merge, v.Merge))
		}
	case "mllama":
		out = append(out, "mllama's images enter by cross-attention, not the sequence: modelled as each cross-attention layer's k, v, k_norm input, adapters' inputs and mask over the image tokens (all tiles of an image, class tokens included), approximate")
	case "siglip":
		out = append(out, "gemma3: pan-and-scan crops are images of their own: count them in --images")
	}
	if c.Images > 0 {
		if c.visionGraph() {
			out = append(out, "the frozen vision tower keeps activations for backward under lean: its enable_input_require_grads hooks the tower's patch embedding too (transformers 5)")
		} else {
			out = append(out, "the frozen vision tower keeps no activations under hf-peft (no adapter in it, no input needing a gradient): only its forward's working set counts")
		}
	}
	out = append(out, "LoRA goes to the language model only: the snippet excludes the vision tower and projector (peft's all-linear and module names would match their q_proj, fc1, gate_proj... too)")
	return out
}

type modeResult struct {
	mode      Checkpointing
	placement Placement
	devs      []Device
	verdict   Verdict
}

func ckptDecision(asked, got Checkpointing, v Verdict) Decision {
	if asked != CkptAuto {
		return Decision{string(got), "given with --gradient-checkpointing"}
	}
	switch {
	case v == VerdictTight:
		return Decision{string(got), "no mode fits with the model's margin; this one fits only tightly"}
	case v == VerdictNoFit:
		return Decision{string(got), "does not fit in any mode; this is the most frugal one"}
	case got == CkptOff:
		return Decision{"off", "fits without it, and recomputation would cost about a third more compute"}
	case got == CkptOn:
		return Decision{"on", "does not fit with margin without it: only each layer's input is kept, and one layer is recomputed at a time in backward"}
	}
	return Decision{"offload", "does not fit with margin even with checkpointing on: layer inputs go to pinned host memory (torch.autograd.graph.save_on_cpu)"}
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
func (m *Model) evaluate(c Config, gs []gpus.GPU, pl Placement) ([]Device, Verdict) {
	mem := m.Estimate(c, pl)
	used := make([]bool, len(gs))
	for _, d := range pl.Layer {
		if d >= 0 {
			used[d] = true
		}
	}
	used[pl.First], used[pl.Last] = true, true
	devs := make([]Device, len(gs))
	verdict := VerdictFits
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
		d.Verdict = VerdictFits
		if used[i] {
			d.Verdict = verdictOf(d.DeviceMemory, d.CapacityBytes)
		}
		d.Fits = d.Verdict != VerdictNoFit
		verdict = worse(verdict, d.Verdict)
		devs[i] = d
	}
	return devs, verdict
}

// place assigns whole decoder layers to devices in order.
func (m *Model) place(c Config, gs []gpus.GPU, st Strategy) (Placement, []Device, Verdict) {
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
		devs, v := m.evaluate(c, gs, best)
		return best, devs, v
	}
	_ = L
	pl := m.sequential(c, gs)
	devs, v := m.evaluate(c, gs, pl)
	return pl, devs, v
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
	// A device is full when its total plus the model's error margin reaches
	// the budget, so that a plan that fits fits with margin.
	over := func(dm DeviceMemory, d int) bool {
		return dm.Total+int64(ModelError*float64(dm.PeakReserved)) > budget(d)
	}
	pl := Placement{Layer: make([]int, m.Layers), Devices: n, Last: -1} // no tail while filling
	for l := range pl.Layer {
		pl.Layer[l] = -1
	}
	d := 0
	for l := range pl.Layer {
		pl.Layer[l] = d
		if d+1 < n && over(m.Estimate(c, pl)[d], d) {
			d++
			pl.Layer[l] = d
		}
		if !overflow && over(m.Estimate(c, pl)[d], d) {
			return pl, false
		}
	}
	pl.Last = pl.Layer[len(pl.Layer)-1]
	if over(m.Estimate(c, pl)[pl.Last], pl.Last) && pl.Last+1 < n {
		pl.Last++
	}
	mem := m.Estimate(c, pl)
	for i := range mem {
		if over(mem[i], i) && (i == pl.First || i == pl.Last || contains(pl.Layer, i)) {
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

// expertLoRANote says what naming the MLP projections in target_modules does
// on this MoE model (Config.ExpertLoRA): the snippet targets all-linear, but
// code that lists the names gets adapters on the routed experts instead.
func (m *Model) expertLoRANote(c Config, gs []gpus.GPU, st Strategy) string {
	e := c
	e.ExpertLoRA = true
	n := m.LoRAParams(e)
	if n == m.LoRAParams(c) {
		return ""
	}
	peak, _ := m.peakOf(e, gs, st)
	return fmt.Sprintf("target_modules naming gate_proj/up_proj/down_proj (instead of the snippet's all-linear) puts peft's adapters on the routed experts "+
		"and none on the shared or dense MLPs: %s trainable parameters, peak %s on the largest device (measured on DeepSeek-V2-Lite layers, peft 0.21)",
		groupDigits(n), units.Bytes(peak))
}

// peakOf is the largest total over devices, and the plan's verdict.
func (m *Model) peakOf(c Config, gs []gpus.GPU, st Strategy) (int64, Verdict) {
	_, devs, v := m.place(c, gs, st)
	var peak int64
	for _, d := range devs {
		peak = max(peak, d.Total)
	}
	return peak, v
}

// largest is the largest n in [lo, hi] for which ok holds, ok being
// monotone (true up to some n); lo-1 when none.
func largest(lo, hi int64, ok func(int64) bool) int64 {
	if !ok(lo) {
		return lo - 1
	}
	for lo < hi {
		mid := lo + (hi-lo+1)/2
		if ok(mid) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// maxBatch is the largest batch size that fits with margin under c, 0 when
// none does.
func (m *Model) maxBatch(c Config, gs []gpus.GPU, st Strategy) int64 {
	return largest(1, 4096, func(b int64) bool {
		c.Batch = b
		_, v := m.peakOf(c, gs, st)
		return v == VerdictFits
	})
}

// seqStep is the granularity of the longest-sequence answers.
const seqStep = 128

// maxSeq is the longest sequence, in steps of 128 tokens, that fits with
// margin under c (batch as given), 0 when none does.
func (m *Model) maxSeq(c Config, gs []gpus.GPU, st Strategy) int64 {
	n := largest(1, 1<<20/seqStep, func(k int64) bool {
		c.SeqLen = k * seqStep
		_, v := m.peakOf(c, gs, st)
		return v == VerdictFits
	})
	return max(0, n*seqStep)
}

// change is one thing a user can change, as a function of the settings it
// applies to; cost orders changes by what they take from the user (speed,
// quality, hardware).
type change struct {
	dim  string
	cost int
	// apply changes c and gs; it returns the flags to print, or "" when the
	// change cannot make anything fit.
	apply func(c *Config, gs *[]gpus.GPU) string
}

// changes lists, per dimension, the alternatives to what c and gs have.
func (m *Model) changes(c Config, gs []gpus.GPU, st Strategy) [][]change {
	cc, _ := minCC(gs)
	var dims [][]change
	if c.Attention != AttnFlash2 && cc >= 80 && m.HeadDim <= 256 {
		dims = append(dims, []change{{"attention", 1, func(c *Config, _ *[]gpus.GPU) string {
			c.Attention, c.Kernel = AttnFlash2, KernelFlash2
			return "--attention flash_attention_2"
		}}})
	}
	if c.Optimizer != PagedAdamW8bit {
		dims = append(dims, []change{{"optimizer", 1, func(c *Config, _ *[]gpus.GPU) string {
			c.Optimizer = PagedAdamW8bit
			return "--optimizer paged_adamw_8bit"
		}}})
	}
	if c.Recipe == RecipeHFPeft {
		dims = append(dims, []change{{"recipe", 2, func(c *Config, _ *[]gpus.GPU) string {
			c.Recipe = RecipeLean
			return "--recipe lean"
		}}})
	}
	if c.Batch > 1 {
		b := c.Batch
		dims = append(dims, []change{{"batch", 2, func(c *Config, _ *[]gpus.GPU) string {
			c.Batch, c.Accumulate = 1, true
			return fmt.Sprintf("--batch-size 1 (gradient_accumulation_steps=%d)", b)
		}}})
	}
	var ck []change
	if c.Checkpointing == CkptOff {
		ck = append(ck, change{"checkpointing", 3, func(c *Config, _ *[]gpus.GPU) string {
			c.Checkpointing = CkptOn
			return "--gradient-checkpointing on"
		}})
	}
	if c.Checkpointing != CkptOffload {
		ck = append(ck, change{"checkpointing", 5, func(c *Config, _ *[]gpus.GPU) string {
			c.Checkpointing = CkptOffload
			return "--gradient-checkpointing offload"
		}})
	}
	if len(ck) > 0 {
		dims = append(dims, ck)
	}
	var rk []change
	for _, div := range []int64{2, 4} {
		if r := c.Rank / div; r >= 4 {
			rk = append(rk, change{"rank", 3 + int(div)/2, func(c *Config, _ *[]gpus.GPU) string {
				c.Rank = r
				return fmt.Sprintf("--lora-rank %d", r)
			}})
		}
	}
	if len(rk) > 0 {
		dims = append(dims, rk)
	}
	var hw []change
	for k := 1; k <= 3 && len(gs)+k <= 8; k++ {
		hw = append(hw, change{"gpus", 7 + k, func(_ *Config, gs *[]gpus.GPU) string {
			more := append([]gpus.GPU(nil), *gs...)
			for i := 0; i < k; i++ {
				more = append(more, (*gs)[len(*gs)-1])
			}
			for i := range more {
				more[i].Index = i
			}
			*gs = more
			return fmt.Sprintf("%d GPUs like the last one", len(more))
		}})
	}
	if len(hw) > 0 {
		dims = append(dims, hw)
	}
	hw = nil
	if bigger, ok := largerGPU(gs); ok {
		hw = append(hw, change{"larger gpu", 9, func(_ *Config, gs *[]gpus.GPU) string {
			big := make([]gpus.GPU, len(*gs))
			for i := range big {
				big[i] = gpus.GPU{Index: i, Name: bigger.Full, TotalBytes: bigger.Bytes, Major: bigger.Major, Minor: bigger.Minor, Source: "preset"}
			}
			*gs = big
			if len(big) > 1 {
				return fmt.Sprintf("--gpus %sx%d (%s)", bigger.Name, len(big), bigger.Full)
			}
			return fmt.Sprintf("--gpus %s (%s)", bigger.Name, bigger.Full)
		}})
	}
	if len(hw) > 0 {
		dims = append(dims, hw)
	}
	// Last, so that it sees every other change of its set.
	if c.SeqLen > seqStep {
		// Shorten to the longest sequence that fits with the other changes.
		dims = append(dims, []change{{"seq", 6, func(c *Config, gs *[]gpus.GPU) string {
			c2 := *c
			c2.SeqLen = c.SeqLen - seqStep
			s := m.maxSeq(c2, *gs, st)
			if s <= 0 || s >= c.SeqLen {
				return ""
			}
			c.SeqLen = min(s, c.SeqLen-seqStep)
			return fmt.Sprintf("--seq-len %d", c.SeqLen)
		}}})
	}
	return dims
}

// maxAdvice caps the sets of changes reported.
const maxAdvice = 8

// advise searches combinations of changes (recipe, sequence, batch, rank,
// checkpointing or offload, optimizer, attention, GPUs) for the smallest sets
// that make the plan fit with margin: every set of one change, then of two,
// and so on, keeping only sets none of whose subsets already fits. It
// returns those sets (fewest changes first, then the cheapest), followed by
// each single change that does not suffice, with the total it reaches.
func (m *Model) advise(c Config, gs []gpus.GPU, s Settings) []Advice {
	dims := m.changes(c, gs, s.Strategy)
	type combo struct {
		pick []int // per dimension: -1 unchanged, else the alternative
		size int
		cost int
	}
	var found []combo
	var singles []Advice
	// Alternatives within a dimension go from mild to strong (checkpointing
	// on, then offload; rank halved, then quartered; one more GPU, then two):
	// a set is not minimal when a set already found has, in each of its
	// dimensions, this set's alternative or a milder one.
	subsetOfFound := func(pick []int) bool {
		for _, f := range found {
			sub := true
			for d, v := range f.pick {
				if v >= 0 && pick[d] < v {
					sub = false
					break
				}
			}
			if sub {
				return true
			}
		}
		return false
	}
	var fitting []Advice
	minSize := 0
	pick := make([]int, len(dims))
	var walk func(d, size, cost, want int)
	try := func(size, cost int) {
		if subsetOfFound(pick) {
			return
		}
		c2, gs2 := c, append([]gpus.GPU(nil), gs...)
		var flags []string
		for d, v := range pick {
			if v < 0 {
				continue
			}
			f := dims[d][v].apply(&c2, &gs2)
			if f == "" {
				return
			}
			flags = append(flags, f)
		}
		peak, v := m.peakOf(c2, gs2, s.Strategy)
		a := Advice{Change: strings.Join(flags, " + "), Changes: flags, PeakBytes: peak, Verdict: v, Fits: v == VerdictFits}
		if v == VerdictFits {
			found = append(found, combo{append([]int(nil), pick...), size, cost})
			fitting = append(fitting, a)
			if minSize == 0 {
				minSize = size
			}
		} else if size == 1 {
			singles = append(singles, a)
		}
	}
	walk = func(d, size, cost, want int) {
		if size == want {
			try(size, cost)
			return
		}
		if d == len(dims) || len(dims)-d < want-size {
			return
		}
		for v := range dims[d] {
			pick[d] = v
			walk(d+1, size+1, cost+dims[d][v].cost, want)
		}
		pick[d] = -1
		walk(d+1, size, cost, want)
	}
	for i := range pick {
		pick[i] = -1
	}
	for k := 1; k <= min(4, len(dims)); k++ {
		if minSize > 0 && k > minSize+1 {
			break
		}
		walk(0, 0, 0, k)
	}
	costOf := func(a Advice) (int, int) {
		for i, f := range fitting {
			if f.Change == a.Change {
				return found[i].size, found[i].cost
			}
		}
		return 0, 0
	}
	sort.SliceStable(fitting, func(i, j int) bool {
		si, ci := costOf(fitting[i])
		sj, cj := costOf(fitting[j])
		if si != sj {
			return si < sj
		}
		if ci != cj {
			return ci < cj
		}
		return fitting[i].PeakBytes < fitting[j].PeakBytes
	})
	if len(fitting) > maxAdvice {
		fitting = fitting[:maxAdvice]
	}
	sort.SliceStable(singles, func(i, j int) bool { return singles[i].PeakBytes < singles[j].PeakBytes })
	return append(fitting, singles...)
}

// largerGPU is the smallest preset with at least a fifth more memory than
// the smallest GPU given.
func largerGPU(gs []gpus.GPU) (gpus.Preset, bool) {
	small := int64(math.MaxInt64)
	for _, g := range gs {
		small = min(small, g.Capacity())
	}
	var best gpus.Preset
	found := false
	for _, p := range gpus.Presets {
		if p.Bytes > small*6/5 && p.Major >= 8 && (!found || p.Bytes < best.Bytes) {
			best, found = p, true
		}
	}
	return best, found
}

// deviceMap is the device_map for from_pretrained: whole modules (a decoder
// layer, the embedding, the vision tower), named as transformers 5 names them
// in memory (arch.Family.ModuleName), not as the checkpoint stores them: a
// vision-language checkpoint's language_model.model.layers.0 is the module
// model.language_model.layers.0. A tied lm_head stores no tensor but is still
// a module whose weight is in state_dict, and accelerate's dispatch_model
// (what from_pretrained calls for a map of more than one device) refuses a map
// that leaves any state_dict entry without a device: it goes with the
// embedding it shares its weight with, as accelerate's own
// infer_auto_device_map keeps tied modules together.
func (m *Model) deviceMap(pl Placement) map[string]string {
	f := arch.ByName(m.Family)
	if f == nil {
		f = arch.Generic
	}
	dm := map[string]string{}
	embed, head := -1, false
	for _, t := range m.Tensors {
		d := pl.DeviceOf(t)
		dm[moduleOf(f, t)] = strconv.Itoa(d)
		switch {
		case t.Role == arch.RoleLMHead:
			head = true
		case t.Role == arch.RoleEmbedding && t.Part == arch.PartText && embed < 0:
			embed = d
		}
	}
	if m.Tied && !head && embed >= 0 {
		dm[strings.TrimSuffix(f.ModuleName(f.LMHead), ".weight")] = strconv.Itoa(embed)
	}
	return dm
}

// moduleOf is the in-memory module a tensor belongs to at device-map
// granularity: a decoder layer, a top-level module of the text model, or the
// whole vision tower or projector (model.vision_tower, model.visual,
// model.multi_modal_projector).
func moduleOf(f *arch.Family, t Tensor) string {
	name := strings.TrimSuffix(strings.TrimSuffix(f.ModuleName(t.Name), ".weight"), ".bias")
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
