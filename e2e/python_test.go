package e2e

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

// python returns a Python 3 with msgpack and numpy (Debian's python3-msgpack
// and python3-numpy, which .ci/run installs). Outside CI a machine without
// them skips; under CI (CI=true) their absence fails the test.
func python(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"python3", "/usr/bin/python3"} {
		if err := exec.Command(p, "-c", "import msgpack, numpy").Run(); err == nil {
			return p
		}
	}
	if os.Getenv("CI") == "true" {
		t.Fatal("CI=true and no python3 with msgpack and numpy: .ci/run installs python3-msgpack and python3-numpy")
	}
	t.Skip("no python3 with msgpack and numpy (apt-get install python3-msgpack python3-numpy)")
	return ""
}

// afterHeader is a stream's bytes after its magic and header frame.
func afterHeader(t *testing.T, b []byte) []byte {
	t.Helper()
	if len(b) < 17 || string(b[:4]) != "NF4S" || b[8] != 'H' {
		t.Fatalf("not a stream (%d bytes)", len(b))
	}
	return b[17+int(binary.LittleEndian.Uint32(b[9:13])):]
}

// TestPythonPassThrough: examples/python/keep16.py with no pattern, a stage
// in Python, writes every tensor record byte for byte as detect wrote it, and
// in a real pipeline the checkpoint is transformers' byte for byte.
func TestPythonPassThrough(t *testing.T) {
	py := python(t)
	stage := path("examples", "python", "keep16.py")
	model := path("testdata", "models", "llama")
	tmp := t.TempDir()
	a, b := filepath.Join(tmp, "a.stream"), filepath.Join(tmp, "b.stream")
	if r := (run{dir: root, stages: [][]string{{"detect", "-q", "-o", a, model}}}.exec(t)); r[0].code != 0 {
		t.Fatalf("detect: %s", r[0].stderr)
	}
	var out bytes.Buffer
	res := run{dir: root, stdin: a, stdout: &out, stages: [][]string{{py, stage}}}.exec(t)
	if res[0].code != 0 {
		t.Fatalf("keep16.py: status %s: %s", res[0].status(), res[0].stderr)
	}
	if err := os.WriteFile(b, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(a)
	if !bytes.Equal(afterHeader(t, out.Bytes()), afterHeader(t, want)) {
		t.Errorf("the Python pass-through changed the tensor records")
	}
	// the header gained the Python stage and still reads in Go
	var list bytes.Buffer
	if r := (run{dir: root, stdout: &list, stages: [][]string{{"verify", "--list", "-i", b}}}.exec(t)); r[0].code != 0 || !strings.Contains(list.String(), "stage keep16.py 0.1.0") {
		t.Errorf("verify --list of the Python stream: %s\n%s", r[0].stderr, list.String())
	}

	ck := filepath.Join(tmp, "llama-nf4")
	res = run{dir: root, stages: [][]string{
		{"detect", model}, {py, stage}, {"quantize"}, {"place", "--out", ck},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	checkCheckpoint(t, ck, "bfloat16")
}

// TestPythonKeep16: keep16.py between detect and quantize keeps the tensors
// it matches 16-bit: in the checkpoint they are the source's bf16 bytes, and
// every other entry is transformers' 4-bit checkpoint's, byte for byte.
func TestPythonKeep16(t *testing.T) {
	py := python(t)
	model := path("testdata", "models", "llama")
	ck := filepath.Join(t.TempDir(), "llama-nf4")
	var report bytes.Buffer
	res := run{dir: root, stdout: &report, stages: [][]string{
		{"detect", model},
		{py, path("examples", "python", "keep16.py"), "model.layers.0.mlp.*", "*.self_attn.k_proj.weight"},
		{"quantize"},
		{"place", "--out", ck},
		{"verify", "--reference", model},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if !strings.Contains(res[1].stderr, "21 tensors, 5 kept 16-bit") || !strings.HasSuffix(report.String(), "\nOK\n") {
		t.Errorf("keep16.py: %s\nverify:\n%s", res[1].stderr, report.String())
	}

	src := openST(t, model)
	ref := openST(t, path("testdata", "models", "llama-bnb-nf4"))
	got := openST(t, ck)
	kept := func(name string) bool {
		return strings.HasPrefix(name, "model.layers.0.mlp.") || strings.HasSuffix(name, ".self_attn.k_proj.weight")
	}
	n := 0
	for _, e := range got.TensorsByName() {
		from := ref
		if kept(e.Name) {
			from, n = src, n+1
			if e.DType != safetensors.BF16 {
				t.Errorf("%s is %s, want BF16", e.Name, e.DType)
			}
		}
		w, ok := from.Tensor(e.Name)
		if !ok {
			t.Errorf("%s: not in the expected source", e.Name)
			continue
		}
		if !bytes.Equal(readEntry(t, got, e), readEntry(t, from, w)) {
			t.Errorf("%s differs from the expected source's bytes", e.Name)
		}
	}
	if n != 5 {
		t.Errorf("%d entries kept 16-bit, want 5", n)
	}
	for _, e := range ref.TensorsByName() {
		base := e.Name
		if i := strings.Index(base, ".weight"); i >= 0 {
			base = base[:i+len(".weight")]
		}
		if _, ok := got.Tensor(e.Name); !ok && !kept(base) {
			t.Errorf("%s: missing from the checkpoint", e.Name)
		}
	}
}

func openST(t *testing.T, p string) *safetensors.Checkpoint {
	t.Helper()
	c, err := safetensors.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func readEntry(t *testing.T, c *safetensors.Checkpoint, e safetensors.TensorInfo) []byte {
	t.Helper()
	b, err := io.ReadAll(c.Section(e))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPythonBadInput: the Python reader checks what the format asks a reader
// to check: a flipped payload byte (chunk checksum) and a stream cut short
// are each one line and status 3; and its CRC-32C, numpy lanes and all, gives
// the standard check value and agrees with the byte-at-a-time loop.
func TestPythonBadInput(t *testing.T) {
	py := python(t)
	stage := path("examples", "python", "keep16.py")
	tmp := t.TempDir()
	a := filepath.Join(tmp, "a.stream")
	if r := (run{dir: root, stages: [][]string{{"detect", "-q", "-o", a, path("testdata", "models", "llama")}}}.exec(t)); r[0].code != 0 {
		t.Fatalf("detect: %s", r[0].stderr)
	}
	good, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	flipped := append([]byte(nil), good...)
	flipped[len(flipped)/2] ^= 0x10
	for name, tc := range map[string]struct {
		data    []byte
		mention string
	}{
		"flipped":   {flipped, "checksum mismatch"},
		"truncated": {good[:len(good)-20], "unexpected end of stream"},
	} {
		in := filepath.Join(tmp, name)
		if err := os.WriteFile(in, tc.data, 0o644); err != nil {
			t.Fatal(err)
		}
		r := run{dir: root, stdin: in, stages: [][]string{{py, stage}}}.exec(t)[0]
		if r.code != 3 || !strings.Contains(r.stderr, tc.mention) {
			t.Errorf("%s: status %s, stderr %q; want 3 and %q", name, r.status(), r.stderr, tc.mention)
		}
		checkOneLine(t, r)
	}

	cmd := exec.Command(py, "-c", `
import os, nf4stream
assert nf4stream.crc32c(b"123456789") == 0xE3069283
data = os.urandom(300007)
c = nf4stream.CRC32C(); c.update(data[:70001]); c.update(data[70001:])
assert c.value() == nf4stream._update_py(0xFFFFFFFF, data) ^ 0xFFFFFFFF
print("ok")`)
	cmd.Dir = path("examples", "python")
	if out, err := cmd.CombinedOutput(); err != nil || string(out) != "ok\n" {
		t.Errorf("CRC-32C check: %v\n%s", err, out)
	}
}

// TestPythonPassThroughQuantized: a 4-bit stream (quant states with float32
// nested offsets in descriptors and trailers) crosses the Python stage and
// place rewrites transformers' checkpoint byte for byte.
func TestPythonPassThroughQuantized(t *testing.T) {
	py := python(t)
	model := path("testdata", "models", "llama-bnb-nf4")
	ck := filepath.Join(t.TempDir(), "again")
	res := run{dir: root, stages: [][]string{
		{"detect", model}, {py, path("examples", "python", "keep16.py")}, {"quantize"}, {"place", "--out", ck},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	checkCheckpoint(t, ck, "bfloat16")
}

// TestPythonConfigAlone: a stream of descriptors without data (detect on a
// config.json) crosses the Python stage, which rewrites the annotations.
func TestPythonConfigAlone(t *testing.T) {
	py := python(t)
	var list bytes.Buffer
	res := run{dir: root, stdout: &list, stages: [][]string{
		{"detect", path("testdata", "configs", "tiny-llama.json")},
		{py, path("examples", "python", "keep16.py"), "*.mlp.*"},
		{"verify", "--list"},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Errorf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	if n := strings.Count(list.String(), "reason=kept 16-bit by keep16.py"); n != 6 {
		t.Errorf("%d tensors kept by keep16.py in the listing, want 6:\n%s", n, list.String())
	}
}
