package arch

import (
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/dtype"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Facts are the model facts detect puts in the stream header's "model"
// section; the section's types are defined in pkg/sections.
type (
	Facts       = sections.Model
	MLA         = sections.MLA
	Experts     = sections.Experts
	VisionFacts = sections.VisionFacts
	Params      = sections.Params
	Bytes       = sections.Bytes
	Linear      = sections.Linear

	Prequantized = sections.Prequantized
)

// Bitsandbytes defaults transformers writes: NF4, blocksize 64, nested 256.
const (
	BlockSize       = qtype.DefaultBlockSize
	NestedBlockSize = qtype.NestedBlockSize
	// NominalOffsetChars is the assumed length of the nested offset's repr in
	// the quant-state JSON, like "0.050658226013183594"; SlackPerTensor bounds
	// how far a real one is from it for offsets in [1e-4, 1e3).
	NominalOffsetChars = 20
	SlackPerTensor     = 4
)

// quantStateJSON returns the bytes transformers stores as
// <name>.quant_state.bitsandbytes__nf4 for an NF4 tensor with double
// quantization whose nested offset is offset (checkpoint.QuantStateJSON).
func quantStateJSON(dt string, shape []int64, offset float32) ([]byte, error) {
	return checkpoint.QuantStateJSON(&tensorstream.Tensor{DType: tensorstream.DType(dt), Shape: shape,
		Encoding: tensorstream.BNB4, Quant: &tensorstream.QuantState{Type: qtype.NF4.Name, BlockSize: BlockSize,
			DoubleQuant: true, NestedBlockSize: NestedBlockSize, NestedOffset: offset}})
}

// NF4Bytes returns the bytes of one quantized tensor in a transformers
// bitsandbytes checkpoint: packed codes, U8 absmax, F32 nested absmax,
// nested_quant_map (256 F32), quant_map (16 F32) and the quant-state JSON,
// whose length is given by jsonLen.
func NF4Bytes(elements int64, jsonLen int64) int64 {
	return qtype.SizesFor(elements, BlockSize, NestedBlockSize).Total() + 256*4 + 16*4 + jsonLen
}

// NominalQuantStateLen is the quant-state JSON length assuming a nested offset
// of NominalOffsetChars characters.
// A dtype bitsandbytes does not quantize (Decide quantizes none) counts as BF16.
func NominalQuantStateLen(dt string, shape []int64) int64 {
	js, err := quantStateJSON(dt, shape, 0)
	if err != nil {
		js, _ = quantStateJSON("BF16", shape, 0)
	}
	return int64(len(js)) - 3 + NominalOffsetChars // "0.0" is 3 chars
}

// Summarize computes the facts of a model from its annotated tensors. m may be
// nil (weights without config.json): dimensions are then left zero.
func Summarize(m *Model, ts []Tensor) *Facts {
	f := &Facts{Family: Generic.Name, Fallback: true}
	if m != nil {
		fillFacts(f, m)
	}
	f.Tensors = len(ts)
	linears := map[Linear]int64{}
	var order []Linear
	layers := int64(0)
	for _, t := range ts {
		if t.Layer >= 0 && int64(t.Layer)+1 > layers {
			layers = int64(t.Layer) + 1
		}
	}
	if m == nil {
		f.Layers = layers
	}
	f.LayerParams = make([]int64, layers)
	f.LayerBytes = make([]int64, layers)
	p := &f.Params
	for _, t := range ts {
		n := t.Elements()
		src := n * int64(dtype.DType(t.DType).Size())
		f.Bytes.Source += src
		out := src
		if t.Store != "" {
			out = n * int64(dtype.DType(t.Store).Size())
		}
		if t.Quantize {
			out = NF4Bytes(n, NominalQuantStateLen(t.DType, t.Shape))
			f.Bytes.NF4Slack += SlackPerTensor
			f.QuantizedTensors++
		}
		f.Bytes.NF4 += out
		if t.Role == RoleScale {
			continue
		}
		p.Total += n
		if t.Quantize {
			p.Quantized += n
		} else {
			p.Kept += n
		}
		if t.Layer >= 0 {
			f.LayerParams[t.Layer] += n
			f.LayerBytes[t.Layer] += out
		}
		switch t.Role {
		case RoleEmbedding:
			p.Embedding += n
		case RoleLMHead:
			p.LMHead += n
		case RoleAttnQ, RoleAttnK, RoleAttnV, RoleAttnO, RoleAttnQKV, RoleAttnQA, RoleAttnQB, RoleAttnKVA, RoleAttnKVB:
			p.Attention += n
		case RoleMLPGate, RoleMLPUp, RoleMLPDown, RoleMLPGateUp, RoleSharedExpert:
			p.MLP += n
		case RoleExpert:
			p.Experts += n
		case RoleRouter:
			p.Router += n
		case RoleNorm:
			p.Norm += n
		case RoleBias:
			p.Bias += n
		case RoleVision:
			p.Vision += n
		case RoleProjector:
			p.Projector += n
		default:
			p.Other += n
		}
		if len(t.Shape) == 2 && (t.Linear || t.Role == RoleExpert) {
			k := Linear{Role: t.Role, Part: t.Part, Out: t.Shape[0], In: t.Shape[1], Quantize: t.Quantize}
			if linears[k] == 0 {
				order = append(order, k)
			}
			linears[k]++
		}
	}
	for _, k := range order {
		k.Count = linears[k]
		f.Linears = append(f.Linears, k)
	}
	return f
}

func fillFacts(f *Facts, m *Model) {
	t := &m.Text
	f.ModelType, f.Family, f.Fallback = m.ModelType, m.Family.Name, m.Family.Fallback
	f.PolicyVerifiedOn = m.Family.Checked
	f.Architectures = m.Architectures
	f.SourceDType = m.DType
	f.Hidden, f.Intermediate, f.Layers = t.Hidden, t.Intermediate, t.Layers
	f.Heads, f.KVHeads, f.HeadDim, f.Vocab = t.Heads, t.KVHeads, t.HeadDim, t.Vocab
	f.MaxPosition = t.MaxPosition
	f.TiedEmbeddings = t.Tied
	f.SlidingWindow = t.SlidingWindow
	f.AttnSoftcap, f.FinalSoftcap = t.AttnSoftcap, t.FinalSoftcap
	f.QKNorm = t.QKNorm
	f.FusedQKV = m.Family.Attn == AttnFusedQKV
	f.FusedGateUp = m.Family.MLP == MLPFusedGated
	f.CrossAttn = t.CrossAttnLayers
	f.FP8 = t.FP8
	if m.Family.Attn == AttnMLA {
		f.VHeadDim = t.VHeadDim
		f.MLA = &MLA{QLoraRank: t.QLoraRank, KVLoraRank: t.KVLoraRank, QKNopeDim: t.QKNopeDim,
			QKRopeDim: t.QKRopeDim, VHeadDim: t.VHeadDim}
	}
	if t.Experts > 0 {
		f.MoEIntermediate, f.SharedIntermediate = t.MoEIntermediate, t.SharedIntermediate
		e := &Experts{Count: t.Experts, PerToken: t.ExpertsPerToken, Shared: t.SharedExperts}
		for l, sparse := range t.SparseLayers {
			if sparse {
				e.SparseLayers++
			} else {
				e.DenseLayers = append(e.DenseLayers, int64(l))
			}
		}
		f.Experts = e
	}
	if v := m.Vision; v != nil {
		f.Vision = &VisionFacts{Hidden: v.Hidden, Intermediate: v.Intermediate, Layers: v.Layers,
			GlobalLayers: v.GlobalLayers, Heads: v.Heads, ImageSize: v.ImageSize, PatchSize: v.PatchSize}
	}
}

func parseFloat(s string) (float64, error) { return strconv.ParseFloat(strings.TrimSpace(s), 64) }
