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
	// SourceDType is the checkpoint's float dtype (BF16, F16, F32).
	SourceDType string

	Tensors []Tensor

	mu    sync.Mutex
	cache map[string]*groups
}

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
	for _, at := range arch.Annotate(m.Tensors(), arch.Policy{}) {
		pt := Tensor{Name: at.Name, Role: at.Role, Layer: at.Layer, Part: at.Part,
			Shape: at.Shape, DType: at.DType, Quantize: at.Quantize}
		if at.Part != arch.PartText {
			pm.VisionParams += pt.Elements()
		}
		pm.Tensors = append(pm.Tensors, pt)
	}
	return pm, pm.Validate()
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
