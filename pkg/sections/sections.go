// Package sections defines the typed sections of a tensor stream's header:
// one Go type for each section, owned here and used by the stage that writes
// it and by every stage that reads it, and functions that decode a section
// with its errors reported, so that no stage re-declares a partial copy whose
// field a renamed key would silently zero.
//
//	section     written by   type
//	"source"    detect       Source
//	"model"     detect       Model
//	"plan"      plan         Plan (the part later stages read)
//	"quantize"  quantize     Quantize
//	"tensors"   detect,      Tensors
//	            quantize
//
// A stage passes on the sections it does not know untouched
// (tensorstream.Header keeps them encoded). docs/tensorstream.md lists the
// keys; docs/ARCHITECTURE.md says how to add a section.
package sections

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// ErrSection marks a header section that does not decode into its type or
// lacks a key its readers need.
var ErrSection = errors.New("sections: bad header section")

// Source is detect's "source" section: where the model came from.
type Source struct {
	Path string `msgpack:"path" json:"path"`
	Dir  string `msgpack:"dir" json:"dir"` // the model directory, for tokenizer files
	// ID and Revision name the model when it was found in the Hugging Face
	// cache by id (Path is then its snapshot there).
	ID       string `msgpack:"id,omitempty" json:"id,omitempty"`
	Revision string `msgpack:"revision,omitempty" json:"revision,omitempty"`
	Config   []byte `msgpack:"config" json:"-"`      // raw config.json bytes, nil when absent
	Files    int    `msgpack:"files" json:"files"`   // safetensors files read; 0 for a config alone
	NoData   bool   `msgpack:"nodata" json:"nodata"` // config alone: descriptors without payloads
}

// Quantize is quantize's "quantize" section: the settings it used.
type Quantize struct {
	Type            string   `msgpack:"type" json:"type"`
	BlockSize       int      `msgpack:"blocksize" json:"blocksize"`
	DoubleQuant     bool     `msgpack:"double_quant" json:"double_quant"`
	NestedBlockSize int      `msgpack:"nested_blocksize,omitempty" json:"nested_blocksize,omitempty"`
	AllowNonFinite  bool     `msgpack:"allow_nonfinite" json:"allow_nonfinite"`
	Device          string   `msgpack:"device" json:"device"` // where the work ran: cpu, cuda:0, ...
	Only            []string `msgpack:"only,omitempty" json:"only,omitempty"`
	Skip            []string `msgpack:"skip,omitempty" json:"skip,omitempty"`
	Cast            string   `msgpack:"cast,omitempty" json:"cast,omitempty"`
}

// Plan is the part of plan's "plan" section that later stages read. plan
// writes the section from its plan.Plan through JSON (so numbers may arrive as
// floats), with these JSON names; a test in pkg/plan decodes a section plan
// wrote into this type and compares, so a renamed key fails it.
type Plan struct {
	ComputeDType PlanDecision `json:"compute_dtype"`
	Devices      []PlanDevice `json:"devices"`
}

// PlanDecision is one decision of a plan and why.
type PlanDecision struct {
	Value  string `json:"value"`
	Reason string `json:"reason"`
}

// PlanDevice is what a plan predicts for one device.
type PlanDevice struct {
	Index int        `json:"index"`
	Name  string     `json:"name"`
	Items []PlanItem `json:"items"`
	Total int64      `json:"total_bytes"`
}

// PlanItem is one part of a device's predicted memory.
type PlanItem struct {
	Name  string `json:"name"`
	Bytes int64  `json:"bytes"`
}

// Tensors is the "tensors" section: the descriptors of the tensors to come,
// in stream order, as the stage that set it writes them, with only the
// annotations a later stage's decisions read (quantize, store). A stage that
// changes descriptors sets it anew; one that does not know the section passes
// it on as it is, so it is an announcement, never trusted for content: a
// reader compares each descriptor that arrives with it. place uses it to
// write payloads straight to their final places in the files.
type Tensors struct {
	Tensors []*tensorstream.Tensor `msgpack:"tensors"`
}

// MaxTensorsSection bounds the "tensors" section's encoding (the reader's
// header record limit is 16 MiB): SetTensors leaves out a longer one.
const MaxTensorsSection = 8 << 20

// SetTensors announces the descriptors to come, replacing an earlier
// announcement. It leaves the section out when its encoding would be over
// MaxTensorsSection (models of about 50,000 tensors and more), and reports
// whether it set it.
func SetTensors(h *tensorstream.Header, ts []*tensorstream.Tensor) (bool, error) {
	slim := make([]*tensorstream.Tensor, len(ts))
	for i, t := range ts {
		c := *t
		c.Annotations = nil
		for _, k := range []string{tensorstream.AnnQuantize, tensorstream.AnnStore} {
			if v, ok := t.Annotations[k]; ok {
				if c.Annotations == nil {
					c.Annotations = tensorstream.RawMap{}
				}
				c.Annotations[k] = v
			}
		}
		slim[i] = &c
	}
	if err := h.Set(tensorstream.SectionTensors, &Tensors{Tensors: slim}); err != nil {
		return false, err
	}
	if len(h.Sections[tensorstream.SectionTensors]) > MaxTensorsSection {
		DropTensors(h)
		return false, nil
	}
	return true, nil
}

// DropTensors removes the "tensors" section, for a stage that changes the
// descriptors and cannot announce the new ones.
func DropTensors(h *tensorstream.Header) { delete(h.Sections, tensorstream.SectionTensors) }

// GetTensors returns the "tensors" section, nil when the header has none.
func GetTensors(h *tensorstream.Header) (*Tensors, error) {
	return get[Tensors](h, tensorstream.SectionTensors, "tensors")
}

// SetSource, SetModel and SetQuantize write a section, replacing an earlier one.
func SetSource(h *tensorstream.Header, s *Source) error { return h.Set(tensorstream.SectionSource, s) }

// SetModel writes the "model" section.
func SetModel(h *tensorstream.Header, m *Model) error { return h.Set(tensorstream.SectionModel, m) }

// SetQuantize writes the "quantize" section.
func SetQuantize(h *tensorstream.Header, q *Quantize) error {
	return h.Set(tensorstream.SectionQuantize, q)
}

// GetSource returns the "source" section, nil when the header has none.
func GetSource(h *tensorstream.Header) (*Source, error) {
	return get[Source](h, tensorstream.SectionSource)
}

// GetModel returns the "model" section, nil when the header has none. It
// requires the counts ("tensors", "bytes") that later stages read.
func GetModel(h *tensorstream.Header) (*Model, error) {
	return get[Model](h, tensorstream.SectionModel, "tensors", "bytes")
}

// GetQuantize returns the "quantize" section, nil when the header has none.
func GetQuantize(h *tensorstream.Header) (*Quantize, error) {
	return get[Quantize](h, tensorstream.SectionQuantize, "type", "blocksize")
}

// GetPlan returns the part of the "plan" section later stages read, nil when
// the header has none. It requires "compute_dtype" and "devices".
func GetPlan(h *tensorstream.Header) (*Plan, error) {
	var generic map[string]any
	ok, err := h.Get(tensorstream.SectionPlan, &generic)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSection, err)
	}
	if !ok {
		return nil, nil
	}
	if err := require(tensorstream.SectionPlan, generic, "compute_dtype", "devices"); err != nil {
		return nil, err
	}
	b, err := json.Marshal(tensorstream.JSONValue(generic))
	if err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrSection, tensorstream.SectionPlan, err)
	}
	p := new(Plan)
	if err := json.Unmarshal(b, p); err != nil {
		return nil, fmt.Errorf("%w %q: %v", ErrSection, tensorstream.SectionPlan, err)
	}
	return p, nil
}

// get decodes section key into a T after checking that the keys in required
// are there: a key renamed by a writer then fails instead of reading as zero.
func get[T any](h *tensorstream.Header, key string, required ...string) (*T, error) {
	if len(required) > 0 {
		var keys map[string]any
		ok, err := h.Get(key, &keys)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrSection, err)
		}
		if !ok {
			return nil, nil
		}
		if err := require(key, keys, required...); err != nil {
			return nil, err
		}
	}
	v := new(T)
	ok, err := h.Get(key, v)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrSection, err)
	}
	if !ok {
		return nil, nil
	}
	return v, nil
}

func require(key string, m map[string]any, keys ...string) error {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return fmt.Errorf("%w %q: no %q key", ErrSection, key, k)
		}
	}
	return nil
}
