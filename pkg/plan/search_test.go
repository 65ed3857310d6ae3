package plan

import (
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
)

// sized is one GPU of capacity b with compute capability 8.9.
func sized(b int64) []gpus.GPU {
	return []gpus.GPU{{Name: "test", TotalBytes: b, Major: 8, Minor: 9, Source: "size"}}
}

// TestVerdictTiers: the same plan on a device a little larger than its total
// is tight, with the model's margin it fits, and below its total it does not.
func TestVerdictTiers(t *testing.T) {
	m := loadConfig(t, "meta-llama__Llama-3.1-8B.json")
	s := DefaultSettings()
	s.Checkpointing = CkptOn
	big, err := Make(m, sized(80*gpus.GiB), s)
	if err != nil {
		t.Fatal(err)
	}
	d := big.Devices[0]
	margin := int64(ModelError * float64(d.PeakReserved))
	for _, x := range []struct {
		capacity int64
		want     Verdict
	}{
		{d.Total + 2*margin, VerdictFits},
		{d.Total + margin/2, VerdictTight},
		{d.Total - margin/2, VerdictNoFit},
	} {
		p, err := Make(m, sized(x.capacity), s)
		if err != nil {
			t.Fatal(err)
		}
		if p.Verdict != x.want || p.Fits != (x.want != VerdictNoFit) {
			t.Errorf("capacity %d (total %d, margin %d): verdict %q fits %v, want %q", x.capacity, d.Total, margin, p.Verdict, p.Fits, x.want)
		}
		var b strings.Builder
		if err := p.WriteReport(&b); err != nil {
			t.Fatal(err)
		}
		if x.want == VerdictTight && !strings.Contains(b.String(), "TIGHT") {
			t.Errorf("report of a tight plan does not say so:\n%s", b.String())
		}
	}
}

// TestMaxSeqAndBatch: the longest sequence and the largest batch reported fit
// with margin, and one step more does not.
func TestMaxSeqAndBatch(t *testing.T) {
	for _, x := range []struct{ cfg, gpus string }{
		{"meta-llama__Llama-3.1-8B.json", "rtx4090"},
		{"Qwen__Qwen2.5-7B-Instruct.json", "a10g"},
		{"google__gemma-3-4b-it.json", "l4"},
	} {
		m := loadConfig(t, x.cfg)
		gs := mustGPUs(t, x.gpus)
		s := DefaultSettings()
		s.Checkpointing = CkptOn
		s.SeqLen = 1024
		p, err := Make(m, gs, s)
		if err != nil {
			t.Fatal(err)
		}
		if p.MaxSeqLen < 1024 || p.MaxBatchSize < 1 {
			t.Errorf("%s on %s: max seq %d, max batch %d; want at least 1024 and 1", x.cfg, x.gpus, p.MaxSeqLen, p.MaxBatchSize)
			continue
		}
		verdict := func(seq, batch int64) Verdict {
			s2 := s
			s2.SeqLen, s2.Batch = seq, batch
			q, err := Make(m, gs, s2)
			if err != nil {
				t.Fatal(err)
			}
			return q.Verdict
		}
		if v := verdict(p.MaxSeqLen, 1); v != VerdictFits {
			t.Errorf("%s on %s: max seq %d: %q", x.cfg, x.gpus, p.MaxSeqLen, v)
		}
		if v := verdict(p.MaxSeqLen+seqStep, 1); v == VerdictFits {
			t.Errorf("%s on %s: max seq %d, but %d fits too", x.cfg, x.gpus, p.MaxSeqLen, p.MaxSeqLen+seqStep)
		}
		if v := verdict(1024, p.MaxBatchSize); v != VerdictFits {
			t.Errorf("%s on %s: max batch %d: %q", x.cfg, x.gpus, p.MaxBatchSize, v)
		}
		if v := verdict(1024, p.MaxBatchSize+1); v == VerdictFits {
			t.Errorf("%s on %s: max batch %d, but %d fits too", x.cfg, x.gpus, p.MaxBatchSize, p.MaxBatchSize+1)
		}
	}
}

// TestAdviceFindsCombinations: Qwen2.5-7B on an 8 GB card fits with no
// single change short of more hardware, but with two (the lean recipe and a
// shorter sequence); each reported set fits and is minimal.
func TestAdviceFindsCombinations(t *testing.T) {
	m := loadConfig(t, "Qwen__Qwen2.5-7B-Instruct.json")
	gs := mustGPUs(t, "rtx4060")
	p, err := Make(m, gs, DefaultSettings())
	if err != nil {
		t.Fatal(err)
	}
	if p.Verdict != VerdictNoFit {
		t.Fatalf("verdict %q, want does not fit", p.Verdict)
	}
	var pair *Advice
	for i, a := range p.Advice {
		if a.Verdict == VerdictFits && len(a.Changes) == 1 && !strings.Contains(a.Change, "GPU") {
			t.Errorf("a single software change fits (%q): the case no longer tests combinations", a.Change)
		}
		if a.Verdict == VerdictFits && len(a.Changes) == 2 && a.Changes[0] == "--recipe lean" && strings.HasPrefix(a.Changes[1], "--seq-len ") {
			pair = &p.Advice[i]
		}
	}
	if pair == nil {
		t.Fatalf("no fitting --recipe lean + --seq-len among %+v", p.Advice)
	}
	seq, err := strconv.ParseInt(strings.TrimPrefix(pair.Changes[1], "--seq-len "), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	try := func(recipe Recipe, seq int64) Verdict {
		s := DefaultSettings()
		s.Recipe, s.SeqLen = recipe, seq
		q, err := Make(m, gs, s)
		if err != nil {
			t.Fatal(err)
		}
		return q.Verdict
	}
	if v := try(RecipeLean, seq); v != VerdictFits {
		t.Errorf("lean at seq %d: %q, want fits", seq, v)
	}
	if v := try(RecipeLean, 2048); v == VerdictFits {
		t.Errorf("lean alone fits: the pair is not minimal")
	}
	if v := try(RecipeHFPeft, seq); v == VerdictFits {
		t.Errorf("seq %d alone fits: the pair is not minimal", seq)
	}
}

// TestHeadlineTable keeps the README's table honest: the verdicts it states
// for 7B on 8 GB, 13B on 16 GB and 70B on 48 GB.
func TestHeadlineTable(t *testing.T) {
	for _, x := range []struct {
		cfg, gpus string
		recipe    Recipe
		want      Verdict
		ckpt      string
	}{
		{"meta-llama__Llama-2-7b-chat-hf.json", "rtx4060", RecipeHFPeft, VerdictFits, "offload"},
		{"meta-llama__Llama-2-7b-chat-hf.json", "rtx3070", RecipeHFPeft, VerdictFits, "offload"},
		{"meta-llama__Llama-3.1-8B.json", "rtx4060", RecipeHFPeft, VerdictNoFit, ""},
		{"meta-llama__Llama-2-13b-hf.json", "t4", RecipeHFPeft, VerdictFits, "on"},
		{"meta-llama__Llama-3.1-70B.json", "a6000", RecipeHFPeft, VerdictNoFit, ""},
		{"meta-llama__Llama-3.1-70B.json", "a6000", RecipeLean, VerdictFits, "offload"},
	} {
		s := DefaultSettings()
		s.Recipe = x.recipe
		_, p := mustPlan(t, x.cfg, x.gpus, s)
		if p.Verdict != x.want || (x.ckpt != "" && p.GradientCheckpointing.Value != x.ckpt) {
			t.Errorf("%s on %s, %s: %q with checkpointing %q; the README says %q with %q",
				x.cfg, x.gpus, x.recipe, p.Verdict, p.GradientCheckpointing.Value, x.want, x.ckpt)
		}
	}
}

// TestEveryConfigMonotone: on every real config (dense, MoE, vision-language,
// sliding window, soft-capping), the prediction grows with the sequence, the
// batch and the rank, shrinks with checkpointing and with the lean recipe,
// and fits the way the verdict says.
func TestEveryConfigMonotone(t *testing.T) {
	entries, err := os.ReadDir(fixtures.Path(t, "configs"))
	if err != nil {
		t.Fatal(err)
	}
	gs := mustGPUs(t, "h200")
	n := 0
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), ".json") {
			continue
		}
		data, err := os.ReadFile(fixtures.Path(t, "configs", e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m, err := FromConfig(data)
		if err != nil {
			t.Logf("%s: %v (not a model the planner takes)", e.Name(), err)
			continue
		}
		base := Config{SeqLen: 2048, Batch: 1, Rank: 16, Recipe: RecipeHFPeft, Optimizer: PagedAdamW8bit,
			Checkpointing: CkptOn, Attention: AttnSDPA, ComputeDType: "bf16"}
		if m.LoRAParams(base) == 0 {
			// FP8 checkpoints (DeepSeek-V3) are not quantized to 4 bits, so no
			// linear layer takes an adapter: nothing to train.
			t.Logf("%s: no LoRA target among its 4-bit layers", e.Name())
			continue
		}
		n++
		total := func(mod func(*Config)) int64 {
			c := base
			mod(&c)
			c.Kernel = Kernel(m.kernelFor(c.Attention, c, 90).Value)
			return m.Estimate(c, SinglePlacement(m))[0].Total
		}
		b := total(func(*Config) {})
		for _, x := range []struct {
			what string
			mod  func(*Config)
			more bool
		}{
			{"seq 8192", func(c *Config) { c.SeqLen = 8192 }, true},
			{"seq 32768", func(c *Config) { c.SeqLen = 32768 }, true},
			{"batch 4", func(c *Config) { c.Batch = 4 }, true},
			{"rank 64", func(c *Config) { c.Rank = 64 }, true},
			{"no checkpointing", func(c *Config) { c.Checkpointing = CkptOff }, true},
			{"adamw", func(c *Config) { c.Optimizer = AdamW }, true},
			{"lean", func(c *Config) { c.Recipe = RecipeLean }, false},
			{"offload", func(c *Config) { c.Checkpointing = CkptOffload }, false},
		} {
			got := total(x.mod)
			if (x.more && got <= b) || (!x.more && got > b) {
				t.Errorf("%s: %s: total %d against %d", e.Name(), x.what, got, b)
			}
		}
		p, err := Make(m, gs, DefaultSettings())
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range p.Devices {
			if p.Verdict == VerdictFits && d.Total+int64(ModelError*float64(d.PeakReserved)) > d.CapacityBytes {
				t.Errorf("%s: verdict fits with %d of %d", e.Name(), d.Total, d.CapacityBytes)
			}
		}
	}
	if n < 15 {
		t.Errorf("only %d configs planned", n)
	}
}
