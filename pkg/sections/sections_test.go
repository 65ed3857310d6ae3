package sections

import (
	"errors"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

func TestRoundTrip(t *testing.T) {
	h := &tensorstream.Header{}
	src := &Source{Path: "/m", Dir: "/m", Config: []byte(`{"model_type":"llama"}`), Files: 1}
	if err := SetSource(h, src); err != nil {
		t.Fatal(err)
	}
	m := &Model{Family: "llama", Tensors: 12, Bytes: Bytes{Source: 1 << 20}}
	if err := SetModel(h, m); err != nil {
		t.Fatal(err)
	}
	gs, err := GetSource(h)
	if err != nil || gs.Path != src.Path || string(gs.Config) != string(src.Config) || gs.Files != 1 {
		t.Errorf("source: %+v, %v", gs, err)
	}
	gm, err := GetModel(h)
	if err != nil || gm.Tensors != 12 || gm.Bytes.Source != 1<<20 {
		t.Errorf("model: %+v, %v", gm, err)
	}
	if q, err := GetQuantize(h); q != nil || err != nil {
		t.Errorf("absent quantize section: %+v, %v", q, err)
	}
	if p, err := GetPlan(h); p != nil || err != nil {
		t.Errorf("absent plan section: %+v, %v", p, err)
	}
}

// TestRenamedKeyFails is the reason for the package: a section whose writer
// renamed a key that readers need is an error, not a zero.
func TestRenamedKeyFails(t *testing.T) {
	h := &tensorstream.Header{}
	if err := h.Set(tensorstream.SectionModel, map[string]any{"n_tensors": 12, "bytes": map[string]any{"source": 1}}); err != nil {
		t.Fatal(err)
	}
	if _, err := GetModel(h); !errors.Is(err, ErrSection) {
		t.Errorf("model without \"tensors\": %v, want ErrSection", err)
	}
	if err := h.Set(tensorstream.SectionPlan, map[string]any{"compute_dtype": map[string]any{"value": "bfloat16"}, "gpus": []any{}}); err != nil {
		t.Fatal(err)
	}
	if _, err := GetPlan(h); !errors.Is(err, ErrSection) {
		t.Errorf("plan without \"devices\": %v, want ErrSection", err)
	}
	if err := h.Set(tensorstream.SectionSource, []int{1, 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := GetSource(h); !errors.Is(err, ErrSection) {
		t.Errorf("source that is not a map: %v, want ErrSection", err)
	}
}

// TestPlanNumbersAsFloats: plan writes its section through JSON, so its
// integers may be encoded as floats.
func TestPlanNumbersAsFloats(t *testing.T) {
	h := &tensorstream.Header{}
	plan := map[string]any{"compute_dtype": map[string]any{"value": "float16", "reason": "T4"},
		"devices": []any{map[string]any{"index": 1.0, "name": "T4", "total_bytes": 3.5e9,
			"items": []any{map[string]any{"name": "4-bit weights", "bytes": 1.25e9}}}}}
	if err := h.Set(tensorstream.SectionPlan, plan); err != nil {
		t.Fatal(err)
	}
	p, err := GetPlan(h)
	if err != nil {
		t.Fatal(err)
	}
	if p.ComputeDType.Value != "float16" || len(p.Devices) != 1 || p.Devices[0].Index != 1 ||
		p.Devices[0].Total != 3.5e9 || p.Devices[0].Items[0].Bytes != 1.25e9 {
		t.Errorf("%+v", p)
	}
}
