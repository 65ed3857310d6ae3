package plan

import (
	"bytes"
	"os"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// TestPlanSectionDecodes checks that the "plan" section Stream writes decodes
// into sections.Plan with every value later stages read, so that renaming one
// of plan's JSON keys fails here instead of zeroing a field in place.
func TestPlanSectionDecodes(t *testing.T) {
	config, err := os.ReadFile("../../testdata/models/llama/config.json")
	if err != nil {
		t.Fatal(err)
	}
	h := &tensorstream.Header{}
	if err := sections.SetSource(h, &sections.Source{Config: config}); err != nil {
		t.Fatal(err)
	}
	var in, out bytes.Buffer
	w := tensorstream.NewWriter(&in)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	gs, err := gpus.Parse("t4,t4")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Stream(&in, &out, gs, DefaultSettings(), tensorstream.Stage{Name: "plan"})
	if err != nil {
		t.Fatal(err)
	}
	oh, err := tensorstream.NewReader(&out).Header()
	if err != nil {
		t.Fatal(err)
	}
	got, err := sections.GetPlan(oh)
	if err != nil || got == nil {
		t.Fatalf("GetPlan: %v, %v", got, err)
	}
	if got.ComputeDType.Value == "" || got.ComputeDType.Value != p.ComputeDType.Value || got.ComputeDType.Reason != p.ComputeDType.Reason {
		t.Errorf("compute dtype %+v, want %+v", got.ComputeDType, p.ComputeDType)
	}
	if len(got.Devices) != len(p.Devices) || len(p.Devices) != 2 {
		t.Fatalf("%d devices, want %d (2)", len(got.Devices), len(p.Devices))
	}
	for i, d := range p.Devices {
		g := got.Devices[i]
		if g.Index != d.Index || g.Name != d.Name || g.Total != d.Total || (i == 0 && g.Total == 0) || len(g.Items) != len(d.Items) {
			t.Errorf("device %d: %+v, want index %d name %q total %d, %d items", i, g, d.Index, d.Name, d.Total, len(d.Items))
			continue
		}
		for k, it := range d.Items {
			if g.Items[k].Name != it.Name || g.Items[k].Bytes != it.Bytes {
				t.Errorf("device %d item %d: %+v, want %s %d", i, k, g.Items[k], it.Name, it.Bytes)
			}
		}
	}
}
