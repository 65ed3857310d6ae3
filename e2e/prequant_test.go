package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestPrequantizedPipeline: transformers' 4-bit checkpoint as input. detect
// streams its 4-bit weights as they are stored, verify --checkpoint finds the
// stream identical to the checkpoint, plan plans it, quantize passes it
// through (place then rewrites the checkpoint byte for byte) and refuses
// another target format with one line and status 3.
func TestPrequantizedPipeline(t *testing.T) {
	model := path("testdata", "models", "llama-bnb-nf4")

	var report bytes.Buffer
	res := run{dir: root, stdout: &report, stages: [][]string{
		{"detect", model},
		{"verify", "--checkpoint", model},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if !strings.Contains(report.String(), "21 of 21 stream tensors read back identically") || !strings.HasSuffix(report.String(), "\nOK\n") {
		t.Errorf("verify --checkpoint:\n%s", report.String())
	}

	out := filepath.Join(t.TempDir(), "again")
	res = run{dir: root, stages: [][]string{
		{"detect", model},
		{"plan", "--gpus", "a10g"},
		{"quantize"},
		{"place", "--out", out},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	for _, f := range []string{"model.safetensors", "config.json", "generation_config.json"} {
		got, err1 := os.ReadFile(filepath.Join(out, f))
		want, err2 := os.ReadFile(filepath.Join(model, f))
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from the input checkpoint's (%v, %v)", f, err1, err2)
		}
	}

	for _, flags := range [][]string{{"--type", "fp4"}, {"--blocksize", "128"}, {"--double-quant=false"}} {
		res = run{dir: root, stages: [][]string{{"detect", model}, append([]string{"quantize"}, flags...)}}.exec(t)
		q := res[1]
		if q.code != 3 || !strings.Contains(q.stderr, "already 4-bit in another format") || !strings.Contains(q.stderr, "--type nf4 --blocksize 64 --double-quant=true") {
			t.Errorf("quantize %v on a 4-bit stream: status %s, stderr:\n%s", flags, q.status(), q.stderr)
		}
		checkOneLine(t, q)
	}
}

// TestPrequantizedConfigPlan: "does this 4-bit repository fit my GPU?" from
// its config.json alone.
func TestPrequantizedConfigPlan(t *testing.T) {
	var report bytes.Buffer
	res := run{dir: root, stdout: &report, stages: [][]string{
		{"detect", path("testdata", "configs", "unsloth__Llama-3.2-1B-Instruct-bnb-4bit.json")},
		{"plan", "--gpus", "t4", "--report"},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if !strings.Contains(report.String(), "FITS") {
		t.Errorf("plan report:\n%s", report.String())
	}
	if !strings.Contains(res[0].stderr, "already 4-bit: bitsandbytes nf4") || !strings.Contains(res[0].stderr, "1.24B total") {
		t.Errorf("detect report:\n%s", res[0].stderr)
	}
}
