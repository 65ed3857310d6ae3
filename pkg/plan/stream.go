package plan

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// ModelFromHeader builds the planner's model from the raw config.json that
// detect put in the stream header's "source" section.
func ModelFromHeader(h *tensorstream.Header) (*Model, error) {
	src, err := sections.GetSource(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	if src == nil || len(src.Config) == 0 {
		return nil, fmt.Errorf("%w: the stream header has no config.json in its %q section: run detect first", ErrModel, tensorstream.SectionSource)
	}
	return FromConfig(src.Config)
}

// Stream reads a tensor stream from in, plans with gs and s, and writes the
// stream to out with the plan in the header's "plan" section and a "device"
// annotation on every tensor; payloads and other annotations pass through
// untouched. The plan is returned even when it does not fit.
func Stream(in io.Reader, out io.Writer, gs []gpus.GPU, s Settings, stage tensorstream.Stage) (*Plan, error) {
	r := tensorstream.NewReader(in)
	h, err := r.Header()
	if err != nil {
		return nil, err
	}
	m, err := ModelFromHeader(h)
	if err != nil {
		return nil, err
	}
	p, err := Make(m, gs, s)
	if err != nil {
		return nil, err
	}
	if src, err := sections.GetSource(h); err == nil && src != nil {
		p.ModelID = src.ID
	}
	section, err := p.section()
	if err != nil {
		return nil, err
	}
	if err := h.Set(tensorstream.SectionPlan, section); err != nil {
		return nil, err
	}
	h.Stages = append(h.Stages, stage)
	w := tensorstream.NewWriter(out)
	if err := w.WriteHeader(h); err != nil {
		return nil, err
	}
	for {
		t, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		c := arch.Classify(t.Name, t.Shape)
		if l, ok := t.AnnInt("layer"); ok {
			c.Layer = int(l)
		}
		dev := p.DeviceOf(Tensor{Name: t.Name, Role: c.Role, Layer: c.Layer, Part: c.Part})
		if err := t.SetAnn("device", dev); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if err := w.WriteTensor(t); err != nil {
			return nil, err
		}
		if _, err := io.Copy(w, r); err != nil {
			return nil, err
		}
		// The trailer (checksum, nested offset) is known once the payload was read.
		if err := w.EndTensor(); err != nil {
			return nil, err
		}
	}
	return p, w.Close()
}

// section is the plan as a generic map with the JSON field names, so that the
// header section and --json agree.
func (p *Plan) section() (map[string]any, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	var v map[string]any
	err = json.Unmarshal(b, &v)
	return v, err
}
