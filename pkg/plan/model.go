package plan

import (
	"errors"
	"fmt"
	"sync"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
)

// Sentinel errors of the planner; callers test them with errors.Is.
var (
	ErrModel    = errors.New("plan: bad model description")
	ErrSettings = errors.New("plan: bad training settings")
	ErrNoFit    = errors.New("plan: does not fit")
)

// Model is what the planner needs to know about a model: the decoder's
// dimensions (for activations) and every tensor with its role, layer and
// whether it is quantized (for weights, LoRA and the device map).
type Model struct {
	Family       string
	Hidden       int64
	Intermediate int64
	Layers       int64
	Heads        int64
	KVHeads      int64
	HeadDim      int64
	Vocab        int64
	Tied         bool

	// SandwichNorm: four norms a layer (gemma2/3) instead of two.
	SandwichNorm bool
	QKNorm       bool
	// GeluMLP: the MLP activation is a GELU (gemma); SiLU otherwise. Both save
	// their input, so the figure is the same; it matters for the report only.
	GeluMLP bool

	Experts            int64
	ExpertsPerToken    int64
	MoEIntermediate    int64
	SharedIntermediate int64
	SparseLayers       []bool

	SlidingWindow int64
	AttnSoftcap   float64
	FinalSoftcap  float64
	// VisionParams counts the vision tower and projector parameters.
	VisionParams int64
	// Vision is the vision tower and what an image costs; nil for a text model.
	Vision *Vision
	// CrossAttnLayers marks the decoder layers that cross-attend to the
	// image tokens (mllama).
	CrossAttnLayers []bool
	// SourceDType is the checkpoint's float dtype (BF16, F16, F32).
	SourceDType string

	Tensors []Tensor

	mu    sync.Mutex
	cache map[string]*groups
}

// Vision is what the planner needs of a vision tower: its dimensions, for its
// activations, and how many tokens one image makes.
type Vision struct {
	Kind         string // clip, siglip, qwen2_vl, qwen2_5_vl, mllama
	Hidden       int64
	Intermediate int64
	Layers       int64 // every encoder layer (mllama: local and global)
	Heads        int64
	// GatedMLP: gate, up and down projections (qwen2.5-vl); fc1, fc2 otherwise.
	GatedMLP bool
	// PatchesPerImage: the tokens one image is inside the tower, at the
	// family's default resolution (mllama: every tile, class token included).
	PatchesPerImage int64
	// TokensPerImage: the tokens one image adds to the language model's
	// sequence by default; 0 for mllama, whose images enter by cross-attention.
	TokensPerImage int64
	// CrossTokensPerImage: the image tokens each cross-attention layer attends
	// to (mllama); 0 otherwise.
	CrossTokensPerImage int64
	// Merge is how many patches the projector merges into one token (qwen vl:
	// spatial_merge_size squared); 1 otherwise.
	Merge int64
	// AllHiddenStates: the family's forward asks the tower for every layer's
	// output (llava's vision_feature_layer), held until the projector ran.
	AllHiddenStates bool

	TowerParams, ProjectorParams int64
}

// QwenDefaultImageSide is the image side in pixels the planner assumes for
// qwen2-vl and qwen2.5-vl, whose tokens per image follow the image's
// resolution: 448x448 makes (448/14)^2 = 1024 patches, merged 2x2 into 256
// tokens. --image-tokens sets another count.
const QwenDefaultImageSide = 448

// Tensor is one tensor of the checkpoint as the planner sees it.
type Tensor struct {
	Name     string
	Role     string // arch.Role*
	Layer    int    // decoder layer, -1 for none
	Part     string // arch.PartText, PartVision, PartProjector
	Shape    []int64
	DType    string
	Quantize bool
}

// Elements returns the number of elements.
func (t Tensor) Elements() int64 {
	n := int64(1)
	for _, s := range t.Shape {
		n *= s
	}
	return n
}

// NF4Bytes is the exact device footprint of a 4-bit tensor as bitsandbytes
// holds it after from_pretrained: the packed codes (two a byte), one 8-bit
// absmax code per 64-element block (double quantization), one float32 nested
// absmax per 256 blocks, and the two code tables (16 and 256 float32).
func NF4Bytes(n int64) int64 {
	return qtype.SizesFor(n, qtype.DefaultBlockSize, qtype.NestedBlockSize).Total() + 16*4 + 256*4
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// FromArch builds the planner's model from a resolved architecture, with the
// default quantization policy (what transformers 5 quantizes).
func FromArch(m *arch.Model) (*Model, error) {
	if m == nil {
		return nil, fmt.Errorf("%w: no architecture", ErrModel)
	}
	t := m.Text
	pm := &Model{
		Family: m.Family.Name, Hidden: t.Hidden, Intermediate: t.Intermediate, Layers: t.Layers,
		Heads: t.Heads, KVHeads: t.KVHeads, HeadDim: t.HeadDim, Vocab: t.Vocab, Tied: t.Tied,
		SandwichNorm: m.Family.Norm == arch.NormSandwich, QKNorm: t.QKNorm,
		GeluMLP: m.Family.GeluMLP,
		Experts: t.Experts, ExpertsPerToken: t.ExpertsPerToken, MoEIntermediate: t.MoEIntermediate,
		SharedIntermediate: t.SharedIntermediate, SparseLayers: t.SparseLayers,
		SlidingWindow: t.SlidingWindow, AttnSoftcap: t.AttnSoftcap, FinalSoftcap: t.FinalSoftcap,
		SourceDType: m.DType,
	}
	if len(t.CrossAttnLayers) > 0 {
		pm.CrossAttnLayers = make([]bool, t.Layers)
		for _, l := range t.CrossAttnLayers {
			if l >= 0 && l < t.Layers {
				pm.CrossAttnLayers[l] = true
			}
		}
	}
	pm.Vision = visionOf(m.Vision)
	for _, at := range arch.Annotate(m.Tensors(), arch.Policy{}) {
		pt := Tensor{Name: at.Name, Role: at.Role, Layer: at.Layer, Part: at.Part,
			Shape: at.Shape, DType: at.DType, Quantize: at.Quantize}
		if at.Part != arch.PartText {
			pm.VisionParams += pt.Elements()
			if pm.Vision != nil && at.Part == arch.PartProjector {
				pm.Vision.ProjectorParams += pt.Elements()
			} else if pm.Vision != nil {
				pm.Vision.TowerParams += pt.Elements()
			}
		}
		pm.Tensors = append(pm.Tensors, pt)
	}
	return pm, pm.Validate()
}

// visionOf takes from a resolved vision tower what the planner needs.
func visionOf(v *arch.Vision) *Vision {
	if v == nil || v.Hidden <= 0 || v.Layers <= 0 {
		return nil
	}
	pv := &Vision{Hidden: v.Hidden, Intermediate: v.Intermediate, Layers: v.Layers + v.GlobalLayers,
		Heads: v.Heads, Merge: 1, TokensPerImage: v.TokensPerImage}
	side := int64(0)
	if v.PatchSize > 0 {
		side = v.ImageSize / v.PatchSize
	}
	switch v.Kind {
	case arch.VisionCLIP:
		pv.Kind, pv.PatchesPerImage, pv.AllHiddenStates = "clip", side*side+1, true
	case arch.VisionSiglip:
		pv.Kind, pv.PatchesPerImage = "siglip", side*side
	case arch.VisionQwen2VL, arch.VisionQwen25VL:
		pv.Kind, pv.GatedMLP = "qwen2_vl", v.Kind == arch.VisionQwen25VL
		if pv.GatedMLP {
			pv.Kind = "qwen2_5_vl"
		}
		pv.Merge = max(1, v.SpatialMerge*v.SpatialMerge)
		q := int64(QwenDefaultImageSide) / max(1, v.PatchSize)
		pv.PatchesPerImage = q * q
		pv.TokensPerImage = pv.PatchesPerImage / pv.Merge
	case arch.VisionMllama:
		pv.Kind = "mllama"
		pv.PatchesPerImage = (side*side + 1) * max(1, v.MaxTiles)
		pv.TokensPerImage, pv.CrossTokensPerImage = 0, pv.PatchesPerImage
	}
	return pv
}

// FromConfig builds the planner's model from config.json bytes.
func FromConfig(data []byte) (*Model, error) {
	cfg, err := arch.ParseConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	m, err := arch.Resolve(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	pm, err := FromArch(m)
	if err != nil {
		return nil, err
	}
	// A checkpoint already in 4 bits keeps the modules its
	// quantization_config lists in llm_int8_skip_modules 16-bit.
	if pq := arch.PrequantizedFromConfig(data); pq != nil {
		for i, t := range pm.Tensors {
			if _, ok := arch.InSkipModules(t.Name, pq.SkipModules); ok && t.Quantize {
				pm.Tensors[i].Quantize = false
			}
		}
	}
	return pm, nil
}

// Validate checks the dimensions the memory model divides or multiplies by.
func (m *Model) Validate() error {
	switch {
	case m.Hidden <= 0, m.Layers <= 0, m.Heads <= 0, m.KVHeads <= 0, m.HeadDim <= 0, m.Vocab <= 0:
		return fmt.Errorf("%w: hidden %d, layers %d, heads %d, kv heads %d, head dim %d, vocab %d must all be positive",
			ErrModel, m.Hidden, m.Layers, m.Heads, m.KVHeads, m.HeadDim, m.Vocab)
	case m.Layers > 1<<16, m.Hidden > 1<<20, m.Vocab > 1<<24:
		return fmt.Errorf("%w: implausible dimensions (layers %d, hidden %d, vocab %d)", ErrModel, m.Layers, m.Hidden, m.Vocab)
	case len(m.Tensors) == 0:
		return fmt.Errorf("%w: no tensors", ErrModel)
	}
	for _, t := range m.Tensors {
		if t.Layer >= int(m.Layers) {
			return fmt.Errorf("%w: tensor %q: layer %d of %d", ErrModel, t.Name, t.Layer, m.Layers)
		}
	}
	return nil
}

// sparse reports whether layer l has a mixture-of-experts MLP.
func (m *Model) sparse(l int) bool {
	return m.Experts > 0 && l < len(m.SparseLayers) && m.SparseLayers[l]
}
