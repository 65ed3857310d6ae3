package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoPipeline runs make demo's pipeline as five processes over pipes,
// planned for a T4, and checks that the weights are the ones transformers +
// bitsandbytes wrote. A T4 has no bfloat16 tensor cores, so the plan (and so
// config.json) says float16 compute; the weights do not depend on it.
func TestDemoPipeline(t *testing.T) {
	model := path("testdata", "models", "llama")
	out := filepath.Join(t.TempDir(), "llama-nf4")
	var report bytes.Buffer
	res := run{dir: root, stdout: &report, stages: [][]string{
		{"detect", model},
		{"plan", "--gpus", "t4"},
		{"quantize"},
		{"place", "--out", out},
		{"verify", "--reference", model},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
		if strings.Contains(r.stderr, "panic") {
			t.Errorf("%s: stderr:\n%s", r.name, r.stderr)
		}
	}
	if !strings.HasSuffix(report.String(), "\nOK\n") {
		t.Errorf("verify's report does not end in OK:\n%s", report.String())
	}
	checkCheckpoint(t, out, "float16")
}

// TestDemoScript runs scripts/demo.sh, what `make demo` runs after building,
// with the tools TestMain built.
func TestDemoScript(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: TestDemoPipeline runs the same pipeline")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("scripts/demo.sh needs bash")
	}
	out := filepath.Join(t.TempDir(), "out", "llama-nf4")
	cmd := exec.Command(path("scripts", "demo.sh"))
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "MODEL=testdata/models/llama", "OUT="+out, "BIN="+bin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	if !strings.HasSuffix(stdout.String(), "\nOK\n") || !strings.Contains(stderr.String(), "checkpoint written to "+out+"\n") ||
		strings.Contains(stderr.String(), " differs ") {
		t.Errorf("demo output:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	// The demo plans for an A10G (bfloat16 compute, as the reference
	// checkpoint has), so config.json is the reference's byte for byte too.
	checkCheckpoint(t, out, "bfloat16")
	got, err := os.ReadFile(filepath.Join(out, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if want, err := os.ReadFile(path("testdata", "models", "llama-bnb-nf4", "config.json")); err != nil || !bytes.Equal(got, want) {
		t.Errorf("%s/config.json differs from testdata/models/llama-bnb-nf4's (%v)", out, err)
	}
}

// checkCheckpoint compares dir with testdata/models/llama-bnb-nf4: the same
// model.safetensors byte for byte, a config.json with the quantization config
// and the compute dtype the plan chose.
func checkCheckpoint(t *testing.T, dir, computeDType string) {
	t.Helper()
	want, err := os.ReadFile(path("testdata", "models", "llama-bnb-nf4", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s/model.safetensors (%d bytes) differs from testdata/models/llama-bnb-nf4's (%d bytes)", dir, len(got), len(want))
	}
	b, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Q struct {
			Method       string `json:"quant_method"`
			Type         string `json:"bnb_4bit_quant_type"`
			DoubleQuant  bool   `json:"bnb_4bit_use_double_quant"`
			ComputeDType string `json:"bnb_4bit_compute_dtype"`
		} `json:"quantization_config"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatalf("%s/config.json: %v", dir, err)
	}
	if cfg.Q.Method != "bitsandbytes" || cfg.Q.Type != "nf4" || !cfg.Q.DoubleQuant || cfg.Q.ComputeDType != computeDType {
		t.Errorf("%s/config.json quantization_config %+v, want bitsandbytes nf4 double quant, compute %s", dir, cfg.Q, computeDType)
	}
}

// TestCastPipeline: kept tensors cast by quantize --cast still verify, as
// processes over pipes, for every float target.
func TestCastPipeline(t *testing.T) {
	model := path("testdata", "models", "llama")
	for _, to := range []string{"f32", "f16", "bf16"} {
		t.Run(to, func(t *testing.T) {
			var report bytes.Buffer
			res := run{dir: root, stdout: &report, stages: [][]string{
				{"detect", model},
				{"quantize", "--cast", to},
				{"place", "--out", filepath.Join(t.TempDir(), "llama-nf4")},
				{"verify", "--reference", model},
			}}.exec(t)
			for _, r := range res {
				if r.code != 0 {
					t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
				}
			}
			if !strings.HasSuffix(report.String(), "\nOK\n") {
				t.Errorf("verify's report does not end in OK:\n%s", report.String())
			}
			if to != "bf16" && !strings.Contains(report.String(), "cast BF16→") {
				t.Errorf("verify's report names no cast:\n%s", report.String())
			}
		})
	}
}
