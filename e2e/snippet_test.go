package e2e

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// TestEmittedSnippetsMeasured: the snippets plan --emit python printed were run
// as printed on an H200, with only the model path filled in, and printed their
// peak reserved memory (the records are in testdata/plan/snippets-*.jsonl;
// scripts/real-stack/plan_emit_check.sh repeats such a run).
// Today's plan must still predict each within -5%..+10% of that measurement.
func TestEmittedSnippetsMeasured(t *testing.T) {
	f, err := os.Open(path("testdata", "plan", "snippets-h200-2026-12-03.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pred := regexp.MustCompile(`max_memory_reserved \(largest device\): (\d+) bytes`)
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		var r struct {
			Snippet   string `json:"snippet"`
			Config    string `json:"config"`
			PlanFlags string `json:"plan_flags"`
			Measured  int64  `json:"measured_reserved"`
		}
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		out, errs, code := shell(t, root, "detect -q "+r.Config+" | plan "+r.PlanFlags+" --emit python")
		if code != 0 {
			t.Fatalf("%s: status %d: %s", r.Snippet, code, errs)
		}
		m := pred.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("%s: no predicted peak in the snippet:\n%.400s", r.Snippet, out)
		}
		p, _ := strconv.ParseInt(m[1], 10, 64)
		e := float64(p-r.Measured) / float64(r.Measured)
		t.Logf("%s: predicted %d, measured %d (%+.1f%%)", r.Snippet, p, r.Measured, 100*e)
		if e > 0.10 || e < -0.05 {
			t.Errorf("%s (%s): predicted %d bytes, measured %d: %+.1f%%, want -5%%..+10%%", r.Snippet, strings.TrimSpace(r.PlanFlags), p, r.Measured, 100*e)
		}
		n++
	}
	if n < 2 {
		t.Fatalf("%d snippet records", n)
	}
}
