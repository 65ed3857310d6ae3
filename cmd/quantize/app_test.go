package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

type result struct {
	code           int
	stdout, stderr []byte
}

// runApp runs the command in-process on stdin.
func runApp(t *testing.T, stdin []byte, out interface{ Write([]byte) (int, error) }, args ...string) result {
	t.Helper()
	app := newApp()
	var o, e bytes.Buffer
	app.Reader = bytes.NewReader(stdin)
	app.Writer = &o
	if out != nil {
		app.Writer = out
	}
	app.ErrWriter = &e
	code := cli.Run(app, exitTable, append([]string{"quantize"}, args...))
	return result{code, o.Bytes(), e.Bytes()}
}

func llamaStream(t *testing.T) []byte {
	t.Helper()
	m, err := detect.Open(fixtures.Path(t, "models", "llama"), arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var b bytes.Buffer
	if err := m.Stream(&b, tensorstream.Stage{Name: "detect", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// oneTensor is a stream of a single tensor marked for quantization.
func oneTensor(t *testing.T, dt tensorstream.DType, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := tensorstream.NewWriter(&b)
	h := &tensorstream.Header{}
	h.AddStage("detect", "test", nil)
	tt := &tensorstream.Tensor{Name: "model.layers.0.mlp.up_proj.weight", DType: dt, Shape: []int64{2, int64(len(payload) / dt.Size() / 2)},
		Encoding: tensorstream.Raw, Size: int64(len(payload))}
	if err := tt.SetAnn(tensorstream.AnnQuantize, true); err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{w.WriteHeader(h), w.WriteTensor(tt)} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.Write(payload); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func oneLine(t *testing.T, r result, code int, contains string) {
	t.Helper()
	msg := string(r.stderr)
	if r.code != code || !strings.Contains(msg, contains) || strings.Count(msg, "\n") != 1 || !strings.HasPrefix(msg, "quantize: ") {
		t.Errorf("status %d, stderr %q; want status %d and one line with %q", r.code, msg, code, contains)
	}
	if strings.HasPrefix(msg, "quantize: quantize:") {
		t.Errorf("doubled prefix: %q", msg)
	}
}

func TestQuantizeLlama(t *testing.T) {
	in := llamaStream(t)
	r := runApp(t, in, nil, "--blocksize", "128", "--skip", "*.q_proj.weight")
	oneLine(t, r, 0, "12 tensors quantized, 9 kept")
	rd := tensorstream.NewReader(bytes.NewReader(r.stdout))
	h, err := rd.Header()
	if err != nil {
		t.Fatal(err)
	}
	last := h.Stages[len(h.Stages)-1]
	if last.Name != "quantize" || last.Version != cli.Version || !slices.Equal(last.Args, []string{"--blocksize=128", "--skip=*.q_proj.weight"}) {
		t.Errorf("stage %+v", last)
	}
	var set quantize.Settings
	if ok, err := h.Get(tensorstream.SectionQuantize, &set); !ok || err != nil || set.BlockSize != 128 || set.Type != "nf4" || !set.DoubleQuant {
		t.Errorf("settings %+v %v", set, err)
	}

	r = runApp(t, in, nil, "--json")
	var sum map[string]any
	if err := json.Unmarshal(r.stderr, &sum); r.code != 0 || err != nil || sum["quantized"] != 14.0 || sum["device"] != "cpu" {
		t.Errorf("--json: %d %q %v", r.code, r.stderr, err)
	}
	r = runApp(t, in, nil, "-q", "--double-quant=false", "--type", "fp4", "--threads", "1")
	if r.code != 0 || len(r.stderr) != 0 || len(r.stdout) == 0 {
		t.Errorf("--quiet: %d %q", r.code, r.stderr)
	}
	r = runApp(t, in, nil, "--cast", "f32", "--only", "*.mlp.*")
	oneLine(t, r, 0, "6 tensors quantized, 15 kept (15 cast)")
}

func TestFiles(t *testing.T) {
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in.stream"), filepath.Join(dir, "out.stream")
	stream := llamaStream(t)
	if err := os.WriteFile(in, stream, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runApp(t, nil, nil, "-i", in, "-o", out)
	if r.code != 0 || len(r.stdout) != 0 {
		t.Fatalf("status %d %s", r.code, r.stderr)
	}
	if b, err := os.ReadFile(out); err != nil || len(b) == 0 {
		t.Errorf("output file: %v", err)
	}
	// A failure leaves nothing under the output name.
	bad := filepath.Join(dir, "bad.stream")
	if err := os.WriteFile(in, stream[:len(stream)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	r = runApp(t, nil, nil, "-i", in, "-o", bad)
	oneLine(t, r, cli.ExitInput, "unexpected EOF")
	if _, err := os.Stat(bad); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("failed run left %s: %v", bad, err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("temporary files left: %v", ents)
	}
	r = runApp(t, nil, nil, "-i", filepath.Join(dir, "missing"))
	if r.code != cli.ExitInput {
		t.Errorf("missing input: %d %s", r.code, r.stderr)
	}
}

func TestUsageErrors(t *testing.T) {
	in := llamaStream(t)
	cases := []struct {
		args     []string
		contains string
	}{
		{[]string{"--blocksize", "48"}, "--blocksize 48"},
		{[]string{"--blocksize", "8192"}, "power of two"},
		{[]string{"--blocksize", "abc"}, "see quantize --help"},
		{[]string{"--type", "nf5"}, `--type "nf5"`},
		{[]string{"--cast", "f8"}, `--cast "f8"`},
		{[]string{"--device", "tpu"}, "--device"},
		{[]string{"--only", "[x"}, "pattern"},
		{[]string{"--threads", "-2"}, "--threads"},
		{[]string{"--nope"}, "nope"},
		{[]string{"model.stream"}, "unexpected argument"},
	}
	for _, c := range cases {
		oneLine(t, runApp(t, in, nil, c.args...), cli.ExitUsage, c.contains)
	}
	if !quantize.CUDABuilt {
		oneLine(t, runApp(t, in, nil, "--device", "cuda:0"), cli.ExitUsage, "built without CUDA; rebuild with make cuda")
	}
}

func TestInputErrors(t *testing.T) {
	in := llamaStream(t)
	oneLine(t, runApp(t, in[:len(in)-3], nil), cli.ExitInput, "unexpected EOF")
	oneLine(t, runApp(t, in[:len(in)/2], nil), cli.ExitInput, "unexpected EOF")
	oneLine(t, runApp(t, oneTensor(t, tensorstream.F8E4M3, make([]byte, 256)), nil), cli.ExitInput, "or keep it as it is with --skip NAME")
	oneLine(t, runApp(t, oneTensor(t, tensorstream.I32, make([]byte, 512)), nil), cli.ExitInput, "I32")

	nan := make([]byte, 512)
	nan[2*70], nan[2*70+1] = 0xC0, 0x7F // BF16 NaN at element 70
	nanStream := oneTensor(t, tensorstream.BF16, nan)
	oneLine(t, runApp(t, nanStream, nil), cli.ExitInput, "at element 70 (--allow-nonfinite quantizes it")
	oneLine(t, runApp(t, nanStream, nil, "--allow-nonfinite"), 0, "1 tensors quantized")

	dir := t.TempDir()
	cfg, err := os.ReadFile(fixtures.Path(t, "models", "llama", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644)
	m, err := detect.Open(filepath.Join(dir, "config.json"), arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := m.Stream(&b, tensorstream.Stage{Name: "detect"}); err != nil {
		t.Fatal(err)
	}
	oneLine(t, runApp(t, b.Bytes(), nil), cli.ExitInput, "nothing to quantize")
}

type failingWriter struct{}

func (failingWriter) Write(p []byte) (int, error) { return 0, errors.New("device full") }

func TestOutputError(t *testing.T) {
	oneLine(t, runApp(t, llamaStream(t), failingWriter{}), cli.ExitOutput, "writing the output: device full")
}

func TestHelpAndVersion(t *testing.T) {
	r := runApp(t, nil, nil, "--help")
	if r.code != 0 || !strings.Contains(string(r.stdout), "detect testdata/models/llama | quantize | place") {
		t.Errorf("--help: %d %s", r.code, r.stdout)
	}
	r = runApp(t, nil, nil, "--version")
	if r.code != 0 || !strings.Contains(string(r.stdout), cli.Version) {
		t.Errorf("--version: %d %s", r.code, r.stdout)
	}
}

func TestOffsetGeometry(t *testing.T) {
	for name, want := range map[string]quant.ReduceGPU{
		"a100-80": {SMs: 108, ThreadsPerSM: 2048}, "H200": quant.DefaultReduceGPU, "80x1536": {SMs: 80, ThreadsPerSM: 1536},
		"": {}, // the local GPU's, asked of the driver only when it matters (quantize.Options.LocalOffsetGPU)
	} {
		got, err := offsetGeometry(name)
		if err != nil || got != want {
			t.Errorf("offsetGeometry(%q) = %+v, %v; want %+v", name, got, err, want)
		}
	}
	if _, err := offsetGeometry("gtx480"); err == nil || !strings.Contains(err.Error(), "a100-80") {
		t.Errorf("offsetGeometry(gtx480): %v; want an error listing the presets", err)
	}
}

// --offset-gpu: a preset and SMSxTHREADS are taken; "local" needs the CUDA
// build (usage error here), a name that is neither fails the same way.
func TestOffsetGPUFlag(t *testing.T) {
	in := llamaStream(t)
	for _, v := range []string{"a100-80", "108x2048"} {
		if r := runApp(t, in, nil, "-q", "--offset-gpu", v); r.code != 0 {
			t.Errorf("--offset-gpu %s: status %d: %s", v, r.code, r.stderr)
		}
	}
	bad := []string{"nonsense"}
	if !quantize.CUDABuilt {
		bad = append(bad, "local")
	}
	for _, v := range bad {
		r := runApp(t, in, nil, "-q", "--offset-gpu", v)
		if r.code != cli.ExitUsage || len(r.stdout) != 0 || bytes.Count(r.stderr, []byte("\n")) != 1 || !bytes.Contains(r.stderr, []byte("--offset-gpu")) {
			t.Errorf("--offset-gpu %s: status %d, %d bytes out, stderr %q", v, r.code, len(r.stdout), r.stderr)
		}
	}
}
