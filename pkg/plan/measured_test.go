package plan

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// measuredRow is one line of testdata/plan/*.jsonl: a real QLoRA run through
// transformers' Trainer with bf16 autocast (harness scripts/real-stack/trainer_rows.py).
type measuredRow struct {
	Model   string `json:"model"`
	Seq     int64  `json:"seq"`
	Batch   int64  `json:"batch"`
	GC      bool   `json:"gc"`
	Opt     string `json:"opt"`
	Rank    int64  `json:"rank"`
	Recipe  string `json:"recipe"`
	Harness string `json:"harness"`
	Attn    string `json:"attn"`
	// Images per sample (scripts/real-stack/vl_rows.py): the row is planned
	// with --images N at the family's default tokens per image, seq being
	// the text as --seq-len is.
	Images int64 `json:"images"`
	// Targets are the harness's target_modules: the leaf names of every
	// Linear4bit (trainer_rows.py).
	Targets      []string `json:"targets"`
	Trainable    int64    `json:"trainable_params"`
	AfterLoad    int64    `json:"after_load_bytes"`
	PeakAlloc    int64    `json:"peak_alloc_bytes"`
	PeakReserved int64    `json:"peak_reserved_bytes"`
	Error        *string  `json:"error"`
	file         string
}

// measuredConfigs maps the harness's model names to configs in testdata/configs.
var measuredConfigs = map[string]string{
	"tinyllama-1.1b":      "TinyLlama__TinyLlama-1.1B-Chat-v1.0.json",
	"llama3-8b":           "meta-llama__Llama-3.1-8B.json",
	"llama2-7b":           "meta-llama__Llama-2-7b-chat-hf.json",
	"llama3.2-1b":         "meta-llama__Llama-3.2-1B-Instruct.json",
	"qwen2-7b":            "Qwen__Qwen2.5-7B-Instruct.json",
	"qwen2.5-7b":          "Qwen__Qwen2.5-7B-Instruct.json",
	"qwen3-8b":            "Qwen__Qwen3-8B.json",
	"qwen3-30b-a3b":       "Qwen__Qwen3-30B-A3B.json",
	"qwen3-moe":           "Qwen__Qwen3-30B-A3B.json",
	"gemma2-9b":           "google__gemma-2-9b-it.json",
	"gemma3-1b":           "google__gemma-3-1b-it.json",
	"gemma3-4b":           "google__gemma-3-4b-it.json",
	"gemma-3-4b":          "google__gemma-3-4b-it.json",
	"phi3-mini":           "microsoft__Phi-3-mini-4k-instruct.json",
	"phi3":                "microsoft__Phi-3-mini-4k-instruct.json",
	"mistral-7b":          "mistralai__Mistral-7B-v0.1.json",
	"mixtral-8x7b":        "mistralai__Mixtral-8x7B-v0.1.json",
	"qwen2.5-vl-7b":       "Qwen__Qwen2.5-VL-7B-Instruct.json",
	"llava-1.5-7b":        "llava-hf__llava-1.5-7b-hf.json",
	"llama3.2-11b-vision": "meta-llama__Llama-3.2-11B-Vision-Instruct.json",
	// MoE models at their real layer dimensions with fewer layers
	// (testdata/configs/SOURCES.md).
	"deepseek-v2-lite-8l": "derived/deepseek-v2-lite-8l.json",
	"qwen3-30b-a3b-8l":    "derived/qwen3-30b-a3b-8l.json",
	"mixtral-8x7b-4l":     "derived/mixtral-8x7b-4l.json",
}

// configFor finds the config of a measured model: the map above, else a
// config whose file name contains the model name.
func configFor(t *testing.T, name string) (string, bool) {
	if c, ok := measuredConfigs[name]; ok {
		return c, true
	}
	entries, err := os.ReadDir(fixtures.Path(t, "configs"))
	if err != nil {
		t.Fatal(err)
	}
	want := strings.ToLower(strings.ReplaceAll(name, "/", "__"))
	for _, e := range entries {
		if strings.Contains(strings.ToLower(e.Name()), want) {
			return e.Name(), true
		}
	}
	return "", false
}

func readMeasured(t *testing.T) []measuredRow {
	t.Helper()
	return readMeasuredDir(t, fixtures.Path(t, "plan"))
}

// readMeasuredDir reads every *.jsonl in dir, keeping the Trainer rows that
// ran.
func readMeasuredDir(t *testing.T, dir string) []measuredRow {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no measured rows in %s: %v", dir, err)
	}
	var rows []measuredRow
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var r measuredRow
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			r.file = filepath.Base(name)
			if r.Error == nil && strings.HasPrefix(r.Harness, "trainer") {
				rows = append(rows, r)
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
	}
	return rows
}

// rowConfig is the Config the harness ran for row r.
func rowConfig(m *Model, r measuredRow) Config {
	c := Config{SeqLen: r.Seq, Batch: r.Batch, Rank: r.Rank, Recipe: Recipe(r.Recipe),
		Optimizer: Optimizer(r.Opt), Checkpointing: CkptOff, Attention: AttnSDPA, ComputeDType: "bf16",
		Images: r.Images}
	if c.Rank == 0 {
		c.Rank = 16
	}
	if c.Recipe == "" {
		c.Recipe = RecipeHFPeft
	}
	if r.GC {
		c.Checkpointing = CkptOn
	}
	if r.Attn != "" {
		c.Attention = Attention(r.Attn)
	}
	// Names of MLP projections on a model with routed experts: peft puts
	// those adapters on the fused experts (Config.ExpertLoRA).
	for _, n := range r.Targets {
		if m.Experts > 0 && (n == "gate_proj" || n == "up_proj" || n == "down_proj") {
			c.ExpertLoRA = true
		}
	}
	c.Kernel = Kernel(m.kernelFor(c.Attention, c, 90).Value)
	return c
}

type rowResult struct {
	row                 measuredRow
	pred, alloc         int64
	errRes, errAlloc    float64
	trainable, expTrain int64
	moe                 bool
	kernel              Kernel
}

func predictRows(t *testing.T, rows []measuredRow) []rowResult {
	var out []rowResult
	models := map[string]*Model{}
	for _, r := range rows {
		cfg, ok := configFor(t, r.Model)
		if !ok {
			t.Errorf("%s: no config for model %q in testdata/configs", r.file, r.Model)
			continue
		}
		m := models[cfg]
		if m == nil {
			m = loadConfig(t, cfg)
			models[cfg] = m
		}
		c := rowConfig(m, r)
		dm := m.Estimate(c, SinglePlacement(m))[0]
		out = append(out, rowResult{row: r, pred: dm.PeakReserved, alloc: dm.PeakAllocated,
			errRes:    float64(dm.PeakReserved)/float64(r.PeakReserved) - 1,
			errAlloc:  float64(dm.PeakAllocated)/float64(r.PeakAlloc) - 1,
			trainable: m.LoRAParams(c), expTrain: r.Trainable, moe: m.Experts > 0, kernel: c.Kernel})
	}
	return out
}

// knownMisses are rows outside the bounds, each with what is known of why.
// The test fails when one comes back inside them (delete it then) as well as
// when any other row leaves them.
var knownMisses = map[string]string{}

// TestMeasuredTrainerRows: every measured Trainer row within -5%..+10% of
// peak_reserved_bytes. The allocated peak is held within 3% for dense text
// models on the flash kernel (what autograd keeps, term by term, with one
// fitted constant), and within 10% for the rest (MoE, images, explicit
// masks), whose terms were written from how transformers 5 runs them and are
// off by more: mixtral's allocated +9.7% (its experts' 16-bit copies seem not
// all held at once, as qwen3_moe's are), gemma3 with images -5.5% (the SigLIP
// forward's working set), mistral's sliding-window mask +3.4%.
func TestMeasuredTrainerRows(t *testing.T) {
	res := predictRows(t, readMeasured(t))
	if len(res) == 0 {
		t.Fatal("no rows")
	}
	sort.SliceStable(res, func(i, j int) bool { return res[i].row.Model < res[j].row.Model })
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-16s %6s %3s %-3s %-16s %4s %-7s %10s %10s %7s %7s\n", "model", "seq", "b", "gc", "optimizer", "rank", "recipe", "predicted", "measured", "res", "alloc")
	worst := 0.0
	for _, x := range res {
		r := x.row
		fmt.Fprintf(&b, "%-16s %6d %3d %-3v %-16s %4d %-7s %7.2f GiB %7.2f GiB %+6.1f%% %+6.1f%%\n", r.Model, r.Seq, r.Batch, yesNo(r.GC), r.Opt, r.Rank, r.Recipe,
			float64(x.pred)/(1<<30), float64(r.PeakReserved)/(1<<30), 100*x.errRes, 100*x.errAlloc)
		worst = math.Max(worst, math.Abs(x.errRes))
		key := fmt.Sprintf("%s seq %d batch %d gc %v %s %s", r.Model, r.Seq, r.Batch, r.GC, r.Opt, r.Recipe)
		out := x.errRes > 0.10 || x.errRes < -0.05
		if why, known := knownMisses[key]; known {
			if !out {
				t.Errorf("%s: listed as a known miss (%s) but now within bounds (%+.1f%%): remove it", key, why, 100*x.errRes)
			}
			t.Logf("%s: known miss, %+.1f%%: %s", key, 100*x.errRes, why)
		} else if out {
			t.Errorf("%s rank %d: predicted reserved %d, measured %d (%+.1f%%; want -5%%..+10%%)",
				key, r.Rank, x.pred, r.PeakReserved, 100*x.errRes)
		}
		lo, hi := -0.03, 0.03
		if x.moe || r.Images > 0 || x.kernel != KernelFlash {
			lo, hi = -0.10, 0.10
		}
		if x.errAlloc < lo || x.errAlloc > hi {
			t.Errorf("%s: predicted allocated %d, measured %d (%+.1f%%; want %+.0f%%..%+.0f%%)",
				key, x.alloc, r.PeakAlloc, 100*x.errAlloc, 100*lo, 100*hi)
		}
		if x.expTrain > 0 && x.trainable != x.expTrain {
			t.Errorf("%s rank %d: %d trainable parameters, measured %d", r.Model, r.Rank, x.trainable, x.expTrain)
		}
	}
	fmt.Fprintf(&b, "%d rows, worst |error| on reserved %.1f%%\n", len(res), 100*worst)
	t.Log(b.String())
}

func yesNo(v bool) string {
	if v {
		return "on"
	}
	return "off"
}

func loadConfig(t *testing.T, name string) *Model {
	t.Helper()
	return loadConfigFile(t, fixtures.Path(t, "configs", name))
}

// loadConfigFile loads the config.json at path.
func loadConfigFile(t *testing.T, path string) *Model {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	m, err := FromConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// slackFeatures is what the slack's two constants multiply for a row, and
// the prediction without the slack.
type slackFeatures struct {
	name             string
	model            string
	base, loss, lay  float64
	measured         float64
	fittedPrediction float64
}

func rowFeatures(t *testing.T) []slackFeatures {
	var out []slackFeatures
	for _, r := range readMeasured(t) {
		cfg, ok := configFor(t, r.Model)
		if !ok {
			continue
		}
		m := loadConfig(t, cfg)
		c := rowConfig(m, r)
		dm := m.Estimate(c, SinglePlacement(m))[0]
		s := float64(m.seqLen(c)) // text and image tokens, as Estimate counts them
		T := s * float64(c.Batch)
		// The largest layer's activations, as Estimate takes them (an MoE
		// model's first layers may be dense).
		g := m.groups(c)
		lay := 0.0
		for l := range int(m.Layers) {
			x := m.layerActs(l, c, g.loraByLayer[l])
			lay = math.Max(lay, x.lin*T+x.quad*T*s+x.fixed+g.copiesByLayer[l])
		}
		f := slackFeatures{name: fmt.Sprintf("%s seq %d batch %d gc %v %s %s", r.Model, r.Seq, r.Batch, r.GC, r.Opt, r.Recipe), model: r.Model,
			loss: 4 * float64(m.Vocab) * T, lay: lay, measured: float64(r.PeakReserved)}
		f.base = float64(dm.PeakReserved) - m.slack(c, true, lay)
		out = append(out, f)
	}
	return out
}

// fitSlack fits the two slack constants to rows on a grid of 0.05,
// minimizing the worst distance from the middle of the -5%..+10% band.
func fitSlack(rows []slackFeatures) (a, b float64) {
	best := math.Inf(1)
	for i := 0; i <= 50; i++ {
		for j := 0; j <= 50; j++ {
			ai, bj := float64(i)*0.05, float64(j)*0.05
			worst := 0.0
			for _, r := range rows {
				e := (r.base+ai*r.loss+bj*r.lay)/r.measured - 1
				worst = math.Max(worst, math.Abs(e-0.025))
			}
			if worst < best {
				best, a, b = worst, ai, bj
			}
		}
	}
	return a, b
}

// TestSlackGeneralizes: the slack's two constants, fitted without a row,
// still predict that row within the bounds; fitted without every row of a
// model, they still never under-predict it by more than 5% (over-prediction
// is allowed up to 15%: with few rows a model the fit without one is loose).
// The constants in the code are what the fit on all rows gives.
func TestSlackGeneralizes(t *testing.T) {
	rows := rowFeatures(t)
	a, b := fitSlack(rows)
	if math.Abs(a-slackLoss) > 0.051 || math.Abs(b-slackLayer) > 0.051 {
		t.Errorf("fit on all rows gives slackLoss %.2f slackLayer %.2f; the code has %.2f and %.2f", a, b, slackLoss, slackLayer)
	}
	check := func(held []slackFeatures, rest []slackFeatures, how string, over float64) {
		a, b := fitSlack(rest)
		for _, r := range held {
			e := (r.base+a*r.loss+b*r.lay)/r.measured - 1
			t.Logf("%-22s %-60s fit %.2f %.2f: %+5.1f%%", how, r.name, a, b, 100*e)
			if e > over || e < -0.05 {
				t.Errorf("%s: %s predicted %+.1f%% off", how, r.name, 100*e)
			}
		}
	}
	for i := range rows {
		rest := append(append([]slackFeatures(nil), rows[:i]...), rows[i+1:]...)
		check(rows[i:i+1], rest, "leave one out", 0.10)
	}
	models := map[string]bool{}
	for _, r := range rows {
		models[r.model] = true
	}
	if len(models) < 2 {
		return
	}
	for name := range models {
		var held, rest []slackFeatures
		for _, r := range rows {
			if r.model == name {
				held = append(held, r)
			} else {
				rest = append(rest, r)
			}
		}
		check(held, rest, "leave "+name+" out", 0.15)
	}
}

// TestMeasuredRowsImages: a row of vl_rows.py is planned with its images
// (--images N), and a row with an error is left out. The rows are made up,
// in a temporary directory: only the plumbing is under test, not the figures.
func TestMeasuredRowsImages(t *testing.T) {
	dir := t.TempDir()
	rows := `{"model": "gemma-3-4b", "seq": 1024, "batch": 1, "gc": true, "opt": "paged_adamw_8bit", "rank": 16, "recipe": "hf-peft", "images": 0, "harness": "trainer-bf16", "peak_alloc_bytes": 1, "peak_reserved_bytes": 1, "error": null}
{"model": "gemma-3-4b", "seq": 1024, "batch": 1, "gc": true, "opt": "paged_adamw_8bit", "rank": 16, "recipe": "hf-peft", "images": 2, "harness": "trainer-bf16", "peak_alloc_bytes": 1, "peak_reserved_bytes": 1, "error": null}
{"model": "qwen2.5-vl-7b", "seq": 512, "batch": 2, "gc": false, "opt": "adamw", "rank": 8, "recipe": "lean", "images": 1, "harness": "trainer-bf16", "peak_alloc_bytes": 1, "peak_reserved_bytes": 1, "error": null}
{"model": "qwen2.5-vl-7b", "seq": 512, "batch": 2, "gc": false, "opt": "adamw", "rank": 8, "recipe": "lean", "images": 1, "harness": "trainer-bf16", "error": "unsupported: made up"}
`
	if err := os.WriteFile(filepath.Join(dir, "vl.jsonl"), []byte(rows), 0o644); err != nil {
		t.Fatal(err)
	}
	got := predictRows(t, readMeasuredDir(t, dir))
	if len(got) != 3 {
		t.Fatalf("%d rows predicted, want 3 (the error row left out)", len(got))
	}
	for _, x := range got {
		r := x.row
		cfg, _ := configFor(t, r.Model)
		m := loadConfig(t, cfg)
		c := rowConfig(m, r)
		if c.Images != r.Images {
			t.Errorf("%s: planned with %d images, the row has %d", r.Model, c.Images, r.Images)
		}
		c.Images = 0
		text := m.Estimate(c, SinglePlacement(m))[0].PeakReserved
		if r.Images > 0 && x.pred <= text {
			t.Errorf("%s with %d images: predicted %d, no more than without images (%d)", r.Model, r.Images, x.pred, text)
		}
		if r.Images == 0 && x.pred != text {
			t.Errorf("%s without images: predicted %d, want %d", r.Model, x.pred, text)
		}
	}
	if got[1].pred <= got[0].pred {
		t.Errorf("gemma-3-4b: 2 images predicted %d, not above no image's %d", got[1].pred, got[0].pred)
	}
}
