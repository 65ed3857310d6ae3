package plan

import (
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// TestDeviceMapModuleNames: the device map names modules as transformers 5
// holds them in memory, which for a vision-language model are not the
// checkpoint's keys (language_model.model.layers.0 is loaded into
// model.language_model.layers.0), and covers a tied lm_head too.
// scripts/real-stack/device_map_check.py checks the same maps against the
// modules transformers builds.
func TestDeviceMapModuleNames(t *testing.T) {
	for _, x := range []struct {
		cfg    string // testdata/configs, or a path under testdata
		layers string // the decoder layers' prefix
		others []string
	}{
		{"meta-llama__Llama-3.1-8B.json", "model.layers.", []string{"lm_head", "model.embed_tokens", "model.norm"}},
		// tied: no lm_head tensor, but lm_head is a module all the same
		{"google__gemma-2-9b-it.json", "model.layers.", []string{"lm_head", "model.embed_tokens", "model.norm"}},
		{"google__gemma-3-4b-it.json", "model.language_model.layers.", []string{"lm_head",
			"model.language_model.embed_tokens", "model.language_model.norm", "model.multi_modal_projector", "model.vision_tower"}},
		{"llava-hf__llava-1.5-7b-hf.json", "model.language_model.layers.", []string{"lm_head",
			"model.language_model.embed_tokens", "model.language_model.norm", "model.multi_modal_projector", "model.vision_tower"}},
		{"Qwen__Qwen2.5-VL-7B-Instruct.json", "model.language_model.layers.", []string{"lm_head",
			"model.language_model.embed_tokens", "model.language_model.norm", "model.visual"}},
		{"models/qwen2_vl/config.json", "model.language_model.layers.", []string{"lm_head",
			"model.language_model.embed_tokens", "model.language_model.norm", "model.visual"}},
		{"meta-llama__Llama-3.2-11B-Vision-Instruct.json", "model.language_model.layers.", []string{"lm_head",
			"model.language_model.embed_tokens", "model.language_model.norm", "model.multi_modal_projector", "model.vision_model"}},
	} {
		m := loadConfigOrFixture(t, x.cfg)
		p, err := Make(m, mustGPUs(t, "h200"), DefaultSettings())
		if err != nil {
			t.Fatalf("%s: %v", x.cfg, err)
		}
		want := append([]string(nil), x.others...)
		for l := range m.Layers {
			want = append(want, x.layers+strconv.FormatInt(l, 10))
		}
		var got []string
		for k := range p.DeviceMap {
			got = append(got, k)
		}
		sort.Strings(got)
		sort.Strings(want)
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: device map keys\n%v\nwant\n%v", x.cfg, got, want)
		}
	}
}

// TestDeviceMapTiedHead: over two devices, a tied lm_head goes with the
// embedding whose weight it is; an untied one goes where the plan put it
// (the last layer's device or the next).
func TestDeviceMapTiedHead(t *testing.T) {
	for _, x := range []struct {
		cfg, gpus, embed string
		tied             bool
	}{
		{"google__gemma-2-9b-it.json", "12GiB,12GiB", "model.embed_tokens", true},
		{"google__gemma-3-4b-it.json", "6GiB,6GiB", "model.language_model.embed_tokens", true},
		{"meta-llama__Llama-3.1-8B.json", "12GiB,12GiB", "model.embed_tokens", false},
	} {
		m := loadConfig(t, x.cfg)
		s := DefaultSettings()
		s.SeqLen = 512
		p, err := Make(m, mustGPUs(t, x.gpus), s)
		if err != nil {
			t.Fatalf("%s: %v", x.cfg, err)
		}
		devs := map[string]bool{}
		for _, d := range p.DeviceMap {
			devs[d] = true
		}
		if len(devs) < 2 {
			t.Fatalf("%s on %s: the map uses %d device(s), want 2 for this test", x.cfg, x.gpus, len(devs))
		}
		head, embed := p.DeviceMap["lm_head"], p.DeviceMap[x.embed]
		want := embed
		if !x.tied {
			want = strconv.Itoa(p.placement.Last)
		}
		if head != want {
			t.Errorf("%s on %s: lm_head on %q, want %q (tied %v, embedding on %q)", x.cfg, x.gpus, head, want, x.tied, embed)
		}
	}
}

// loadConfigOrFixture loads testdata/configs/name, or testdata/name when name
// has a directory.
func loadConfigOrFixture(t *testing.T, name string) *Model {
	t.Helper()
	if !strings.Contains(name, "/") {
		return loadConfig(t, name)
	}
	return loadConfigFile(t, fixtures.Path(t, name))
}
