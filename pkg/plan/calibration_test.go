package plan

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// calibrationRow is one line of ../shared/data/qlora_memory_tinyllama_h200.jsonl.
type calibrationRow struct {
	Seq          int64   `json:"seq"`
	Batch        int64   `json:"batch"`
	GC           bool    `json:"gc"`
	Opt          string  `json:"opt"`
	Rank         int64   `json:"rank"`
	Trainable    int64   `json:"trainable_params"`
	AfterLoad    int64   `json:"after_load_bytes"`
	PeakAlloc    int64   `json:"peak_alloc_bytes"`
	PeakReserved int64   `json:"peak_reserved_bytes"`
	Error        *string `json:"error"`
}

func readCalibration(t *testing.T) []calibrationRow {
	t.Helper()
	f, err := os.Open(fixtures.SharedData(t, "qlora_memory_tinyllama_h200.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []calibrationRow
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r calibrationRow
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		if r.Error == nil {
			rows = append(rows, r)
		}
	}
	if len(rows) == 0 {
		t.Fatal("no calibration rows")
	}
	return rows
}

func loadConfig(t *testing.T, name string) *Model {
	t.Helper()
	data, err := os.ReadFile(fixtures.Path(t, "configs", name))
	if err != nil {
		t.Fatal(err)
	}
	m, err := FromConfig(data)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// TestCalibration: every measured row within ±10% of peak_reserved_bytes.
func TestCalibration(t *testing.T) {
	m := loadConfig(t, "TinyLlama__TinyLlama-1.1B-Chat-v1.0.json")
	for _, r := range readCalibration(t) {
		c := Config{SeqLen: r.Seq, Batch: r.Batch, Rank: r.Rank, Recipe: RecipeHFPeft,
			Optimizer: Optimizer(r.Opt), Checkpointing: CkptOff, Attention: AttnSDPA, ComputeDType: "bf16"}
		if r.GC {
			c.Checkpointing = CkptOn
		}
		c.Kernel = m.SDPAKernel(c, 90)
		if lp := m.LoRAParams(c); lp != r.Trainable {
			t.Errorf("trainable params %d, measured %d", lp, r.Trainable)
		}
		dm := m.Estimate(c, SinglePlacement(m))[0]
		errRes := float64(dm.PeakReserved)/float64(r.PeakReserved) - 1
		errAlloc := float64(dm.PeakAllocated)/float64(r.PeakAlloc) - 1
		t.Logf("seq %4d batch %d gc %-5v %-16s reserved %6.0f MB measured %6.0f MB (%+5.1f%%)  allocated %+5.1f%%",
			r.Seq, r.Batch, r.GC, r.Opt, float64(dm.PeakReserved)/1e6, float64(r.PeakReserved)/1e6, 100*errRes, 100*errAlloc)
		if math.Abs(errRes) > 0.10 {
			t.Errorf("seq %d batch %d gc %v %s: predicted reserved %d, measured %d (%+.1f%%)",
				r.Seq, r.Batch, r.GC, r.Opt, dm.PeakReserved, r.PeakReserved, 100*errRes)
		}
	}
}
