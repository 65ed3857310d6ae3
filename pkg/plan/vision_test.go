package plan

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
)

// The four published vision-language configs in testdata/configs.
var vlConfigs = []struct {
	cfg                      string
	seqTok, crossTok, tokens int64 // per image: in the sequence, cross-attended, in the tower
}{
	{"llava-hf__llava-1.5-7b-hf.json", 576, 0, 577},                   // (336/14)^2, + the class token in the tower
	{"Qwen__Qwen2.5-VL-7B-Instruct.json", 256, 0, 1024},               // a 448x448 image: (448/14)^2 patches merged 2x2
	{"google__gemma-3-4b-it.json", 256, 0, 4096},                      // mm_tokens_per_image; (896/14)^2 in the tower
	{"meta-llama__Llama-3.2-11B-Vision-Instruct.json", 0, 6404, 6404}, // 4 tiles x ((560/14)^2 + 1)
}

// TestVisionParamsCounted: the vision tower's and the projector's
// parameters are counted as the default policy stores them (4-bit where
// transformers quantizes, kept otherwise: float32 under hf-peft, 16-bit
// under lean), shown as their own lines, and the split changes no total.
func TestVisionParamsCounted(t *testing.T) {
	for _, x := range vlConfigs {
		for _, r := range []Recipe{RecipeHFPeft, RecipeLean} {
			s := DefaultSettings()
			s.Recipe, s.Checkpointing = r, CkptOn
			m, p := mustPlan(t, x.cfg, "h200", s)
			if m.Vision == nil || p.Vision == nil || !p.VisionLanguage {
				t.Fatalf("%s: no vision part", x.cfg)
			}
			var tower, proj, tower4, proj4, towerB, projB int64
			for _, tt := range m.Tensors {
				n := tt.Elements()
				b := n * 4
				if r == RecipeLean && tt.DType != "F32" {
					b = n * 2
				}
				if tt.Quantize {
					b = NF4Bytes(n)
				}
				switch tt.Part {
				case arch.PartVision:
					tower, towerB = tower+n, towerB+b
					if tt.Quantize {
						tower4 += n
					}
				case arch.PartProjector:
					proj, projB = proj+n, projB+b
					if tt.Quantize {
						proj4 += n
					}
				}
			}
			v := p.Vision
			if tower == 0 || proj == 0 || tower4 == 0 {
				t.Fatalf("%s: tower %d (%d 4-bit), projector %d parameters", x.cfg, tower, tower4, proj)
			}
			if v.TowerParams != tower || v.ProjectorParams != proj || v.TowerParams4bit != tower4 || v.ProjectorParams4bit != proj4 ||
				v.TowerBytes != towerB || v.ProjectorBytes != projB || m.VisionParams != tower+proj {
				t.Errorf("%s %s: plan says %+v; tensors give tower %d (%d 4-bit, %d B), projector %d (%d 4-bit, %d B)",
					x.cfg, r, v, tower, tower4, towerB, proj, proj4, projB)
			}
			items := map[string]int64{}
			for _, it := range p.Devices[0].Items {
				items[it.Name] = it.Bytes
			}
			if items["vision tower"] != towerB || items["projector"] != projB {
				t.Errorf("%s %s: items vision tower %d, projector %d; want %d, %d", x.cfg, r, items["vision tower"], items["projector"], towerB, projB)
			}
			// The lines add up to the allocated peak, as before the split.
			var sum int64
			for _, it := range p.Devices[0].Items {
				if it.Torch && it.Name != "allocator rounding and slack" {
					sum += it.Bytes
				}
			}
			if d := sum - p.Devices[0].PeakAllocated; d < -16 || d > 16 {
				t.Errorf("%s %s: items sum to %d, peak allocated %d", x.cfg, r, sum, p.Devices[0].PeakAllocated)
			}
		}
	}
}

// TestImageTokens: each family's tokens per image, and the sequence they
// make.
func TestImageTokens(t *testing.T) {
	for _, x := range vlConfigs {
		s := DefaultSettings()
		s.Images = 2
		_, p := mustPlan(t, x.cfg, "h200", s)
		v := p.Vision
		if v.ImageTokens != x.seqTok || v.CrossAttentionTokens != x.crossTok || v.TowerTokens != x.tokens {
			t.Errorf("%s: per image %d in the sequence, %d cross-attended, %d in the tower; want %d, %d, %d",
				x.cfg, v.ImageTokens, v.CrossAttentionTokens, v.TowerTokens, x.seqTok, x.crossTok, x.tokens)
		}
		if want := s.SeqLen + 2*x.seqTok; v.LanguageSeqLen != want || v.ImagesPerSample != 2 {
			t.Errorf("%s: language model sequence %d with %d images, want %d", x.cfg, v.LanguageSeqLen, v.ImagesPerSample, want)
		}
		// Measured: the families with Trainer rows with images in testdata/plan.
		if measured := x.cfg != "llava-hf__llava-1.5-7b-hf.json" && x.cfg != "meta-llama__Llama-3.2-11B-Vision-Instruct.json"; v.Measured != measured ||
			strings.Contains(v.Note, "not measured") == measured {
			t.Errorf("%s: measured %v, note %q; want measured %v", x.cfg, v.Measured, v.Note, measured)
		}
	}
	// qwen vl: --image-tokens sets the resolution, so the tower's patches follow.
	s := DefaultSettings()
	s.Images, s.ImageTokens = 1, 1024
	_, p := mustPlan(t, "Qwen__Qwen2.5-VL-7B-Instruct.json", "h200", s)
	if p.Vision.ImageTokens != 1024 || p.Vision.TowerTokens != 4096 {
		t.Errorf("qwen2.5-vl --image-tokens 1024: %d tokens, %d in the tower; want 1024, 4096", p.Vision.ImageTokens, p.Vision.TowerTokens)
	}
}

// TestImagesRaisePrediction: more images, or more tokens an image, never
// lower the prediction, and do raise it, in every recipe and checkpointing
// mode.
func TestImagesRaisePrediction(t *testing.T) {
	for _, x := range vlConfigs {
		m := loadConfig(t, x.cfg)
		for _, r := range []Recipe{RecipeHFPeft, RecipeLean} {
			for _, ck := range []Checkpointing{CkptOff, CkptOn, CkptOffload} {
				c := Config{SeqLen: 1024, Batch: 2, Rank: 16, Recipe: r, Optimizer: PagedAdamW8bit,
					Checkpointing: ck, Attention: AttnSDPA, Kernel: KernelFlash, ComputeDType: "bf16"}
				peak := func(c Config) (int64, int64) {
					dm := m.Estimate(c, SinglePlacement(m))[0]
					return dm.PeakReserved, dm.PeakAllocated + dm.HostBytes
				}
				prevR, prevA := peak(c)
				for n := int64(1); n <= 4; n++ {
					c.Images = n
					res, alloc := peak(c)
					if res < prevR || alloc <= prevA {
						t.Errorf("%s %s %s: %d images: reserved %d, allocated+host %d; with %d: %d, %d",
							x.cfg, r, ck, n, res, alloc, n-1, prevR, prevA)
					}
					prevR, prevA = res, alloc
				}
				c.Images = 1
				prevR, prevA = peak(c)
				base := x.seqTok + x.crossTok // the default
				for _, tok := range []int64{base + 64, 2 * base, 4 * base} {
					c.ImageTokens = tok
					res, alloc := peak(c)
					if res < prevR || alloc <= prevA {
						t.Errorf("%s %s %s: %d tokens an image: reserved %d, allocated+host %d, below the previous %d, %d",
							x.cfg, r, ck, tok, res, alloc, prevR, prevA)
					}
					prevR, prevA = res, alloc
				}
			}
		}
	}
}

// TestTextOnlyUnchanged: with no images the predictions are today's (these
// figures were printed by plan before images were modelled, at f869410), and
// --images changes nothing for a text model.
func TestTextOnlyUnchanged(t *testing.T) {
	for _, x := range []struct {
		cfg, gpus string
		lean      bool
		reserved  int64
	}{
		{"TinyLlama__TinyLlama-1.1B-Chat-v1.0.json", "h200", false, 3085365433},
		{"TinyLlama__TinyLlama-1.1B-Chat-v1.0.json", "a10g", true, 3459203257},
		{"meta-llama__Llama-3.1-8B.json", "h200", false, 15143324293},
		{"meta-llama__Llama-3.1-8B.json", "a10g", true, 14650116741},
		{"google__gemma-2-9b-it.json", "h200", false, 21774981275},
		{"google__gemma-2-9b-it.json", "a10g", true, 21156369240},
		{"Qwen__Qwen3-30B-A3B.json", "h200", false, 126888239104},
		{"Qwen__Qwen3-30B-A3B.json", "a10g", true, 71008694272},
		{"llava-hf__llava-1.5-7b-hf.json", "h200", false, 8332547105},
		{"llava-hf__llava-1.5-7b-hf.json", "a10g", true, 11260350918},
		{"Qwen__Qwen2.5-VL-7B-Instruct.json", "h200", false, 16072618810},
		{"Qwen__Qwen2.5-VL-7B-Instruct.json", "a10g", true, 15269537705},
		{"google__gemma-3-4b-it.json", "h200", false, 15745173516},
		{"google__gemma-3-4b-it.json", "a10g", true, 13532770723},
		{"meta-llama__Llama-3.2-11B-Vision-Instruct.json", "h200", false, 17241138407},
		{"meta-llama__Llama-3.2-11B-Vision-Instruct.json", "a10g", true, 17857123992},
	} {
		s := DefaultSettings()
		s.Checkpointing = CkptOn
		if x.lean {
			s.Checkpointing, s.Recipe, s.SeqLen = CkptOff, RecipeLean, 1024
		}
		m, p := mustPlan(t, x.cfg, x.gpus, s)
		if got := p.Devices[0].PeakReserved; got != x.reserved {
			t.Errorf("%s on %s: predicted reserved %d, was %d", x.cfg, x.gpus, got, x.reserved)
		}
		if m.Vision != nil {
			continue
		}
		s.Images = 3
		_, p2 := mustPlan(t, x.cfg, x.gpus, s)
		if p2.Devices[0].PeakReserved != x.reserved || p2.Vision != nil || !strings.Contains(strings.Join(p2.Notes, "\n"), "--images 3 ignored") {
			t.Errorf("%s: --images changed a text model's plan (%d) or went unremarked", x.cfg, p2.Devices[0].PeakReserved)
		}
	}
}

// TestVisionReportJSONAndSnippet: the report and --json show the vision
// part; the snippet loads AutoModelForImageTextToText, keeps LoRA out of the
// vision tower and projector, and says how to feed images.
func TestVisionReportJSONAndSnippet(t *testing.T) {
	for _, x := range vlConfigs {
		s := DefaultSettings()
		s.Images = 1
		_, p := mustPlan(t, x.cfg, "h100", s)
		var rep, js, py bytes.Buffer
		if err := p.WriteReport(&rep); err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"vision tower", "projector", "image tokens", "1 a sample"} {
			if !strings.Contains(rep.String(), w) {
				t.Errorf("%s: report lacks %q", x.cfg, w)
			}
		}
		if err := p.WriteJSON(&js); err != nil {
			t.Fatal(err)
		}
		var v struct {
			Vision map[string]any `json:"vision"`
		}
		if err := json.Unmarshal(js.Bytes(), &v); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"vision_tower_params", "projector_params", "vision_tower_bytes", "images_per_sample", "image_tokens_per_image", "language_model_seq_len"} {
			if _, ok := v.Vision[k]; !ok {
				t.Errorf("%s: --json vision lacks %q: %v", x.cfg, k, v.Vision)
			}
		}
		if err := p.WritePython(&py, "/models/x"); err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{"AutoModelForImageTextToText", "exclude_modules=r\".*(vision_tower|visual|vision_model|multi_modal_projector).*\"", "AutoProcessor", "pixel_values"} {
			if !strings.Contains(py.String(), w) {
				t.Errorf("%s: snippet lacks %q", x.cfg, w)
			}
		}
	}
	_, p := mustPlan(t, "meta-llama__Llama-3.1-8B.json", "h100", DefaultSettings())
	var py bytes.Buffer
	if err := p.WritePython(&py, ""); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"exclude_modules", "AutoProcessor", "AutoModelForImageTextToText"} {
		if strings.Contains(py.String(), n) {
			t.Errorf("text snippet has %q", n)
		}
	}
}
