package plan

import (
	"bytes"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/stretchr/testify/assert"
)

func mustGPUs(t *testing.T, spec string) []gpus.GPU {
	t.Helper()
	gs, err := gpus.Parse(spec)
	if err != nil {
		t.Fatal(err)
	}
	return gs
}

func mustPlan(t *testing.T, cfg, spec string, s Settings) (*Model, *Plan) {
	t.Helper()
	m := loadConfig(t, cfg)
	p, err := Make(m, mustGPUs(t, spec), s)
	if err != nil {
		t.Fatal(err)
	}
	return m, p
}

func TestLlama8BOnT4(t *testing.T) {
	_, p := mustPlan(t, "meta-llama__Llama-3.1-8B.json", "t4", DefaultSettings())
	if p.ComputeDType.Value != "fp16" {
		t.Errorf("compute dtype %q on cc 7.5, want fp16", p.ComputeDType.Value)
	}
	if p.Attention.Value != string(AttnSDPA) {
		t.Errorf("attention %q on a T4, want sdpa (no flash-attention 2 below cc 8.0)", p.Attention.Value)
	}
	// No SDPA flash kernel below cc 8.0, and Llama 3.1 uses GQA, which the
	// memory-efficient kernel does not take: SDPA's math kernel.
	if p.AttentionKernel.Value != string(KernelMath) {
		t.Errorf("kernel %q, want %q", p.AttentionKernel.Value, KernelMath)
	}
	// With checkpointing on it is past the T4's 15 GiB; offloading the layer
	// inputs brings it within (fits, or tight: the headroom is within the
	// model's error, since the math kernel's slack is extrapolated).
	if p.Verdict == VerdictNoFit || p.GradientCheckpointing.Value != "offload" {
		t.Errorf("verdict %q with checkpointing %q; want fits or tight with offload", p.Verdict, p.GradientCheckpointing.Value)
	}
	// Without checkpointing it must not fit: 32 layers of float32 attention probabilities.
	s := DefaultSettings()
	s.Checkpointing = CkptOff
	_, off := mustPlan(t, "meta-llama__Llama-3.1-8B.json", "t4", s)
	if off.Fits || len(off.Advice) == 0 {
		t.Errorf("checkpointing off: fits %v, advice %d; want no fit with advice", off.Fits, len(off.Advice))
	}
	var offload, on bool
	for _, a := range off.Advice {
		offload = offload || (a.Change == "--gradient-checkpointing offload" && a.Verdict != VerdictNoFit && a.PeakBytes > 0)
		on = on || (a.Change == "--gradient-checkpointing on" && a.Verdict != VerdictFits)
	}
	if !offload || !on {
		t.Errorf("advice lacks a fitting offload (%v) or a checkpointing on without margin (%v): %+v", offload, on, off.Advice)
	}
}

func TestAttentionDecisions(t *testing.T) {
	_, p := mustPlan(t, "meta-llama__Llama-3.1-8B.json", "a100-80", DefaultSettings())
	if p.Attention.Value != string(AttnFlash2) || p.ComputeDType.Value != "bf16" {
		t.Errorf("A100: attention %q dtype %q, want flash_attention_2 and bf16", p.Attention.Value, p.ComputeDType.Value)
	}
	// Gemma 2 soft-caps attention logits: eager where flash-attention 2 cannot run.
	_, g := mustPlan(t, "google__gemma-2-9b-it.json", "t4", DefaultSettings())
	if g.Attention.Value != string(AttnEager) {
		t.Errorf("gemma2 on T4: attention %q, want eager", g.Attention.Value)
	}
	_, g2 := mustPlan(t, "google__gemma-2-9b-it.json", "h100", DefaultSettings())
	if g2.Attention.Value != string(AttnFlash2) || !bytes.Contains([]byte(g2.Attention.Reason), []byte("2.6")) {
		t.Errorf("gemma2 on H100: %+v, want flash_attention_2 naming flash-attn >= 2.6", g2.Attention)
	}
	// Llama 2 has no GQA: float32 SDPA runs the memory-efficient kernel.
	s := DefaultSettings()
	s.Attention = AttnSDPA
	_, l2 := mustPlan(t, "meta-llama__Llama-2-7b-chat-hf.json", "t4", s)
	if l2.AttentionKernel.Value != string(KernelEfficient) {
		t.Errorf("llama2 sdpa kernel %q, want %q", l2.AttentionKernel.Value, KernelEfficient)
	}
}

func TestCheckpointingAutoOnlyWhenNeeded(t *testing.T) {
	s := DefaultSettings()
	s.SeqLen = 512
	_, p := mustPlan(t, "TinyLlama__TinyLlama-1.1B-Chat-v1.0.json", "h200", s)
	if p.GradientCheckpointing.Value != "off" || !p.Fits || p.MaxBatchSize < 8 {
		t.Errorf("TinyLlama on H200: checkpointing %q fits %v max batch %d", p.GradientCheckpointing.Value, p.Fits, p.MaxBatchSize)
	}
}

// checkPlacement asserts the device-map properties: whole layers, in order,
// embeddings on the first device and lm_head on the last.
func checkPlacement(t *testing.T, m *Model, p *Plan) {
	t.Helper()
	pl := p.placement
	for l := 1; l < len(pl.Layer); l++ {
		if pl.Layer[l] < pl.Layer[l-1] {
			t.Errorf("layer %d on %d after layer %d on %d: not in order", l, pl.Layer[l], l-1, pl.Layer[l-1])
		}
	}
	byLayer := map[int]string{}
	for _, tn := range m.Tensors {
		dev := p.DeviceOf(tn)
		switch {
		case tn.Layer >= 0:
			if d, ok := byLayer[tn.Layer]; ok && d != dev {
				t.Errorf("layer %d split across %s and %s", tn.Layer, d, dev)
			}
			byLayer[tn.Layer] = dev
		case tn.Role == arch.RoleEmbedding && dev != "cuda:0":
			t.Errorf("embedding on %s", dev)
		case tn.Role == arch.RoleLMHead && dev != p.DeviceOf(Tensor{Role: arch.RoleLMHead, Layer: -1}):
			t.Errorf("lm_head on %s", dev)
		}
	}
	last := pl.Layer[len(pl.Layer)-1]
	if pl.Last < last {
		t.Errorf("lm_head on device %d before the last layer's device %d", pl.Last, last)
	}
}

func Test70BOnTwo24GiB(t *testing.T) {
	m, p := mustPlan(t, "meta-llama__Llama-3.1-70B.json", "24GiB,24GiB", DefaultSettings())
	checkPlacement(t, m, p)
	if len(p.Devices) != 2 || len(p.Devices[0].Layers) != 2 || len(p.Devices[1].Layers) != 2 {
		t.Fatalf("want layers on both devices: %+v", p.Devices)
	}
	if p.Fits {
		t.Errorf("70B under hf-peft on 2x24GiB predicted to fit; the float32 embeddings and lm_head alone take 8 GiB")
	}
	// lean alone is within the model's error; lean with one more change fits.
	var lean, leanPlus bool
	for _, a := range p.Advice {
		lean = lean || (a.Change == "--recipe lean" && a.Verdict == VerdictTight)
		leanPlus = leanPlus || (a.Verdict == VerdictFits && len(a.Changes) == 2 && a.Changes[0] == "--recipe lean")
	}
	if !lean || !leanPlus {
		t.Errorf("advice should say lean alone is tight (%v) and lean with one more change fits (%v): %+v", lean, leanPlus, p.Advice)
	}
	s := DefaultSettings()
	s.Recipe, s.Strategy = RecipeLean, Balanced
	m, b := mustPlan(t, "meta-llama__Llama-3.1-70B.json", "24GiB,24GiB", s)
	checkPlacement(t, m, b)
	if !b.Fits {
		t.Errorf("lean, balanced: does not fit")
	}
	d0, d1 := b.Devices[0], b.Devices[1]
	if diff := d0.Total - d1.Total; diff > 3*gpus.GiB || diff < -3*gpus.GiB {
		t.Errorf("balanced totals %d and %d differ by more than 3 GiB", d0.Total, d1.Total)
	}
}

func TestMaxMemoryCap(t *testing.T) {
	m := loadConfig(t, "meta-llama__Llama-3.1-8B.json")
	gs := mustGPUs(t, "a100-40x2")
	if err := gpus.ApplyMaxMemory(gs, "0:6GiB"); err != nil {
		t.Fatal(err)
	}
	p, err := Make(m, gs, DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	checkPlacement(t, m, p)
	if p.Devices[0].CapacityBytes != 6*gpus.GiB || p.Devices[0].Total > 6*gpus.GiB || len(p.Devices[1].Layers) == 0 {
		t.Errorf("cap not honoured: %+v", p.Devices[0])
	}
}

func TestSettingsErrors(t *testing.T) {
	m := loadConfig(t, "TinyLlama__TinyLlama-1.1B-Chat-v1.0.json")
	for _, s := range []Settings{
		{SeqLen: 0, Batch: 1, Rank: 16, Checkpointing: CkptAuto, Optimizer: AdamW, Recipe: RecipeLean, Strategy: Sequential, Attention: AttnAuto},
		{SeqLen: 10, Batch: 1, Rank: 16, Checkpointing: "sometimes", Optimizer: AdamW, Recipe: RecipeLean, Strategy: Sequential, Attention: AttnAuto},
		{SeqLen: 10, Batch: 1, Rank: 16, Checkpointing: CkptOn, Optimizer: "sgd", Recipe: RecipeLean, Strategy: Sequential, Attention: AttnAuto},
		{SeqLen: 10, Batch: 1, Rank: 16, Checkpointing: CkptOn, Optimizer: AdamW, Recipe: RecipeLean, Strategy: Sequential, Attention: AttnAuto, Targets: []string{"nope"}},
	} {
		if _, err := Make(m, mustGPUs(t, "t4"), s); !errors.Is(err, ErrSettings) {
			t.Errorf("%+v: err %v, want ErrSettings", s, err)
		}
	}
}

// TestStreamConfigOnly runs detect's config-only stream through the stage.
func TestStreamConfigOnly(t *testing.T) {
	cfg := fixtures.Path(t, "configs", "meta-llama__Llama-3.1-8B.json")
	dm, err := detect.Open(cfg, arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	var in, out bytes.Buffer
	if err := dm.Stream(&in, tensorstream.Stage{Name: "detect"}); err != nil {
		t.Fatal(err)
	}
	p, err := Stream(bytes.NewReader(in.Bytes()), &out, mustGPUs(t, "t4"), DefaultSettings(), tensorstream.Stage{Name: "plan", Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	r := tensorstream.NewReader(&out)
	h, err := r.Header()
	if err != nil {
		t.Fatal(err)
	}
	var sec map[string]any
	if ok, err := h.Get(tensorstream.SectionPlan, &sec); !ok || err != nil {
		t.Fatalf("plan section: %v %v", ok, err)
	}
	if sec["fits"] != p.Fits || sec["max_batch_size"] == nil || sec["devices"] == nil {
		t.Errorf("plan section incomplete: %v", sec)
	}
	if _, ok := h.Sections[tensorstream.SectionModel]; !ok {
		t.Errorf("model section not passed through")
	}
	n := 0
	for {
		tn, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if tn.AnnString("device") != "cuda:0" || tn.AnnString("role") == "" {
			t.Errorf("%s: device %q role %q", tn.Name, tn.AnnString("device"), tn.AnnString("role"))
		}
		n++
	}
	if n != 291 {
		t.Errorf("%d tensors, want 291", n)
	}
}

// TestStreamPayloadPassThrough: a model with weights keeps every payload byte.
func TestStreamPayloadPassThrough(t *testing.T) {
	dir := fixtures.Shared(t, "models", "llama")
	dm, err := detect.Open(dir, arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer dm.Close()
	var in, out bytes.Buffer
	if err := dm.Stream(&in, tensorstream.Stage{Name: "detect"}); err != nil {
		t.Fatal(err)
	}
	if _, err := Stream(bytes.NewReader(in.Bytes()), &out, mustGPUs(t, "h100"), DefaultSettings(), tensorstream.Stage{Name: "plan"}); err != nil {
		t.Fatal(err)
	}
	payloads := func(b []byte) map[string][]byte {
		r := tensorstream.NewReader(bytes.NewReader(b))
		if _, err := r.Header(); err != nil {
			t.Fatal(err)
		}
		got := map[string][]byte{}
		for {
			tn, err := r.Next()
			if err == io.EOF {
				return got
			}
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			got[tn.Name] = data
		}
	}
	a, b := payloads(in.Bytes()), payloads(out.Bytes())
	if len(a) == 0 || len(a) != len(b) {
		t.Fatalf("%d tensors in, %d out", len(a), len(b))
	}
	for k, v := range a {
		if !bytes.Equal(v, b[k]) {
			t.Errorf("%s: payload changed", k)
		}
	}
}

func TestShowReports(t *testing.T) {
	if os.Getenv("PLAN_SHOW") == "" {
		t.Skip("set PLAN_SHOW=1 to print reports")
	}
	for _, x := range []struct{ cfg, gpus string }{
		{"meta-llama__Llama-3.1-8B.json", "t4"},
		{"meta-llama__Llama-3.1-70B.json", "24GiB,24GiB"},
		{"google__gemma-2-9b-it.json", "t4"},
		{"meta-llama__Llama-2-7b-chat-hf.json", "rtx4060"},
		{"Qwen__Qwen2.5-7B-Instruct.json", "rtx4060"},
	} {
		_, p := mustPlan(t, x.cfg, x.gpus, DefaultSettings())
		p.WriteReport(os.Stdout)
	}
}

// TestExpertLoRANote: on an MoE model whose routed experts transformers 5
// fuses, plan says what listing the MLP projections in target_modules does
// (adapters on the experts: the count peft gave on the H200 for these
// DeepSeek-V2-Lite layers), and says nothing of the kind on a dense model.
func TestExpertLoRANote(t *testing.T) {
	_, p := mustPlan(t, "derived/deepseek-v2-lite-8l.json", "h200", DefaultSettings())
	notes := strings.Join(p.Notes, "\n")
	assert.Contains(t, notes, "target_modules naming gate_proj/up_proj/down_proj")
	assert.Contains(t, notes, "96,608,256 trainable parameters")
	assert.EqualValues(t, 4_363_264, p.TrainableParams, "all-linear, as the snippet targets")
	_, d := mustPlan(t, "meta-llama__Llama-3.1-8B.json", "h200", DefaultSettings())
	assert.NotContains(t, strings.Join(d.Notes, "\n"), "target_modules naming")
}
