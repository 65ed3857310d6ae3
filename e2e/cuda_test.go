//go:build cuda

package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCUDANoUsableGPU builds quantize with the cuda tag (as make cuda does)
// and runs `quantize --device cuda` with CUDA_VISIBLE_DEVICES="", so the driver
// finds no device, on the tiny llama's stream: it must say so in one line on
// stderr, starting "quantize: ", write nothing to stdout (the next stage's
// input) and exit with status 1. `quantize --device cpu`, which never
// initializes the driver, must work there and write the CPU build's bytes.
// It needs cuda.h to build and the driver's libcuda.so.1 to start (a machine
// with the toolkit's driver libraries and no GPU will do); without
// libcuda.so.1 the dynamic loader refuses to start a CUDA build at all, which
// no code of ours can change.
func TestCUDANoUsableGPU(t *testing.T) {
	if _, err := os.Stat("/usr/include/cuda.h"); err != nil {
		t.Skip("needs /usr/include/cuda.h to build with -tags cuda (make cuda installs the toolkit)")
	}
	exe := filepath.Join(t.TempDir(), "quantize")
	build := exec.Command("go", "build", "-tags", "cuda", "-o", exe, "./cmd/quantize")
	build.Dir = root
	build.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -tags cuda ./cmd/quantize: %v\n%s", err, out)
	}
	t.Setenv("CUDA_VISIBLE_DEVICES", "")
	var stdout bytes.Buffer
	r := run{dir: root, stdin: filepath.Join(gen, "llama.stream"), stdout: &stdout,
		stages: [][]string{{exe, "--device", "cuda"}}}.exec(t)[0]
	if r.code == 127 && strings.Contains(r.stderr, "libcuda.so.1") {
		t.Skipf("no libcuda.so.1 here, so a CUDA build cannot start: %s", strings.TrimSpace(r.stderr))
	}
	if r.code != 1 {
		t.Errorf("status %s, want 1", r.status())
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout (the stream) got %q", stdout.String())
	}
	checkOneLine(t, r)
	if !strings.HasPrefix(r.stderr, "quantize: ") || !strings.Contains(strings.ToLower(r.stderr), "gpu") {
		t.Errorf("stderr %q: want \"quantize: ...\" saying that no usable GPU was found", r.stderr)
	}

	var got, want bytes.Buffer
	stdin := filepath.Join(gen, "llama.stream")
	r = run{dir: root, stdin: stdin, stdout: &got, stages: [][]string{{exe, "--device", "cpu", "-q"}}}.exec(t)[0]
	if r.code != 0 {
		t.Fatalf("--device cpu: status %s, stderr %q", r.status(), r.stderr)
	}
	run{dir: root, stdin: stdin, stdout: &want, stages: [][]string{{"quantize", "--device", "cpu", "-q"}}}.exec(t)
	if !bytes.Equal(got.Bytes(), want.Bytes()) {
		t.Error("--device cpu: the CUDA build's stream differs from the CPU build's")
	}
}
