package detect

import (
	"fmt"
	"io"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/progress"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// storedFormat is how a quant state reads in a reason.
func storedFormat(q *tensorstream.QuantState) string {
	s := fmt.Sprintf("%s, blocksize %d", q.Type, q.BlockSize)
	if q.DoubleQuant {
		s += ", double quant"
	}
	return s
}

// openPrequantized reads the 4-bit checkpoint at weights: every 4-bit weight
// becomes one bnb4 tensor of its logical dtype and shape (so the counts are
// parameters, not packed bytes), every other entry a raw tensor. The stored
// format is the truth: bnb4 tensors are marked quantized, raw ones kept, and
// pq takes the format of the stored tensors.
func (m *Model) openPrequantized(weights string, pol arch.Policy, pq *arch.Prequantized) error {
	ck, err := checkpoint.Open(weights)
	if err != nil {
		return err
	}
	m.qck, m.qts = ck, ck.Tensors
	m.Source.Files = ck.Files()
	descs := make([]arch.Desc, len(m.qts))
	for i, t := range m.qts {
		descs[i] = arch.Desc{Name: t.Name, DType: string(t.DType), Shape: t.Shape}
	}
	m.Tensors = arch.Annotate(descs, pol)
	first := true
	for i, t := range m.qts {
		at := &m.Tensors[i]
		if t.Encoding == tensorstream.BNB4 {
			if first {
				pq.Type, pq.BlockSize, pq.DoubleQuant = t.Quant.Type, t.Quant.BlockSize, t.Quant.DoubleQuant
				first = false
			}
			at.Quantize, at.Reason = true, "stored "+storedFormat(t.Quant)+" in the checkpoint"
			continue
		}
		if !at.Quantize {
			continue
		}
		at.Quantize, at.Reason = false, "stored 16-bit in the 4-bit checkpoint"
		if s, ok := arch.InSkipModules(t.Name, pq.SkipModules); ok {
			at.Reason = "stored 16-bit: in the config's llm_int8_skip_modules (" + s + ")"
		}
	}
	return nil
}

// copyPrequantized writes tensor i's payload in the stream's layout (packed
// codes, absmax, nested absmax for bnb4) from the checkpoint's entries.
func (m *Model) copyPrequantized(sw *tensorstream.Writer, i int) error {
	r, err := m.qck.Payload(m.qts[i])
	if err != nil {
		return err
	}
	if _, err := io.Copy(sw, progress.Reader(m.Progress, r)); err != nil {
		return fmt.Errorf("%s: tensor %q: %w", m.qck.Dir, m.qts[i].Name, err)
	}
	return nil
}

// hasQuantState reports whether a checkpoint holds bitsandbytes 4-bit quant
// states, whatever its config.json says.
func hasQuantState(ck *safetensors.Checkpoint) bool {
	for _, ti := range ck.Tensors() {
		if strings.Contains(ti.Name, checkpoint.SuffixQuantState) {
			return true
		}
	}
	return false
}
