package place

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/plan"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// models: the families with a transformers-written 4-bit fixture, in the
// repository (never skipped) or in ../shared.
var models = append(append([]string(nil), fixtures.RepoModels...), fixtures.SharedModels...)

// referenceStream reads the transformers-written 4-bit checkpoint in refDir
// back into a stream whose "source" section names srcDir, as detect would.
func referenceStream(t *testing.T, refDir, srcDir string) []byte {
	t.Helper()
	c, err := checkpoint.Open(refDir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := &tensorstream.Header{}
	h.AddStage("test", "0", nil)
	var cfg []byte
	if srcDir != "" {
		cfg, _ = os.ReadFile(filepath.Join(srcDir, "config.json"))
	}
	if err := h.Set(tensorstream.SectionSource, checkpoint.Source{Path: srcDir, Dir: srcDir, Config: cfg}); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := c.WriteStream(tensorstream.NewWriter(&b), h); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pipelineStream is detect | quantize on the source model, the quantize
// stage done here with pkg/quant on the tensors the policy marks.
func pipelineStream(t *testing.T, srcDir string) []byte {
	t.Helper()
	m, err := detect.Open(srcDir, arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var det bytes.Buffer
	if err := m.Stream(&det, tensorstream.Stage{Name: "detect", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	r := tensorstream.NewReader(&det)
	h, err := r.Header()
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	w := tensorstream.NewWriter(&out)
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	for {
		ts, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		store := tensorstream.DType(ts.AnnString(tensorstream.AnnStore))
		if !ts.AnnBool(tensorstream.AnnQuantize) && (store == "" || store == ts.DType) {
			if err := tensorstream.CopyTensor(w, r, ts); err != nil {
				t.Fatal(err)
			}
			continue
		}
		raw, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		if !ts.AnnBool(tensorstream.AnnQuantize) { // kept, written in its store dtype as quantize does
			ct := ts.Clone()
			ct.DType, ct.Size = store, ts.NumElements()*int64(store.Size())
			if err := w.WriteTensor(ct); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(quantize.Cast(make([]byte, ct.Size), raw, ts.DType, store)); err != nil {
				t.Fatal(err)
			}
			continue
		}
		p := quant.DefaultParams()
		q, err := quant.Quantize(raw, quant.DType(ts.DType), p, nil)
		if err != nil {
			t.Fatal(err)
		}
		qt := ts.Clone()
		qt.Encoding = tensorstream.BNB4
		qt.Quant = &tensorstream.QuantState{Type: string(p.Type), BlockSize: p.BlockSize, DoubleQuant: true, NestedBlockSize: quant.NestedBlockSize}
		qt.Size = qt.ExpectedSize()
		if err := w.WriteTensor(qt); err != nil {
			t.Fatal(err)
		}
		for _, sec := range [][]byte{q.Packed, q.Absmax, q.Nested} {
			if _, err := w.Write(sec); err != nil {
				t.Fatal(err)
			}
		}
		qt.Quant.NestedOffset = q.NestedOffset
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func sameBytes(t *testing.T, what, want, got string) {
	t.Helper()
	a, err := os.ReadFile(want)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(got)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("%s: %s differs from %s (%d vs %d bytes)", what, got, want, len(b), len(a))
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

// TestPlaceMatchesFixtures: the reference checkpoint, streamed and placed,
// comes out byte for byte, with config.json and generation_config.json.
func TestPlaceMatchesFixtures(t *testing.T) {
	for _, m := range models {
		t.Run(m, func(t *testing.T) {
			src, ref := fixtures.Model(t, m), fixtures.Model(t, m+"-bnb-nf4")
			out := filepath.Join(t.TempDir(), m+"-nf4")
			rep, err := Place(context.Background(), bytes.NewReader(referenceStream(t, ref, src)), Options{Out: out})
			if err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			for _, f := range []string{"model.safetensors", "config.json", "generation_config.json"} {
				sameBytes(t, m, filepath.Join(ref, f), filepath.Join(out, f))
			}
			if got := dirNames(t, out); fmt.Sprint(got) != "[config.json generation_config.json model.safetensors "+PlanFile+"]" {
				t.Errorf("%s: files %v", m, got)
			}
			if rep.Shards != 1 || rep.Quantized == 0 || rep.Dir != out {
				t.Errorf("%s: report %+v", m, rep)
			}
		})
	}
}

// TestPipelineMatchesFixtures: detect | quantize (pkg/quant, and
// quantize.Cast for a kept tensor's store dtype) | place on the
// source model gives the checkpoint transformers wrote.
func TestPipelineMatchesFixtures(t *testing.T) {
	list := models
	if testing.Short() {
		list = fixtures.RepoModels
	}
	for _, m := range list {
		t.Run(m, func(t *testing.T) {
			src, ref := fixtures.Model(t, m), fixtures.Model(t, m+"-bnb-nf4")
			out := filepath.Join(t.TempDir(), m+"-nf4")
			if _, err := Place(context.Background(), bytes.NewReader(pipelineStream(t, src)), Options{Out: out}); err != nil {
				t.Fatalf("%s: %v", m, err)
			}
			for _, f := range []string{"model.safetensors", "config.json", "generation_config.json"} {
				sameBytes(t, m, filepath.Join(ref, f), filepath.Join(out, f))
			}
		})
	}
}

// TestPipelineRepoLlama runs on the llama pair in the repository's own
// testdata, so it runs without ../shared too.
func TestPipelineRepoLlama(t *testing.T) {
	src, ref := fixtures.Path(t, "models", "llama"), fixtures.Path(t, "models", "llama-bnb-nf4")
	out := filepath.Join(t.TempDir(), "llama-nf4")
	if _, err := Place(context.Background(), bytes.NewReader(pipelineStream(t, src)), Options{Out: out}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.safetensors", "config.json", "generation_config.json"} {
		sameBytes(t, "llama", filepath.Join(ref, f), filepath.Join(out, f))
	}
}

func llamaStream(t *testing.T) []byte {
	return referenceStream(t, fixtures.Path(t, "models", "llama-bnb-nf4"), fixtures.Path(t, "models", "llama"))
}

// noLeftovers fails if parent holds anything but the names given.
func noLeftovers(t *testing.T, parent string, keep ...string) {
	t.Helper()
	got := dirNames(t, parent)
	sort.Strings(keep)
	if fmt.Sprint(got) != fmt.Sprint(keep) {
		t.Errorf("%s holds %v, want %v", parent, got, keep)
	}
}

func TestTruncatedStreamLeavesNothing(t *testing.T) {
	stream := llamaStream(t)
	for _, cut := range []int{0, 10, 100, len(stream) / 3, len(stream) / 2, len(stream) - 20, len(stream) - 1} {
		parent := t.TempDir()
		_, err := Place(context.Background(), bytes.NewReader(stream[:cut]), Options{Out: filepath.Join(parent, "out")})
		if err == nil {
			t.Fatalf("cut at %d: no error", cut)
		}
		if cut > 8 && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d: %v, want io.ErrUnexpectedEOF", cut, err)
		}
		noLeftovers(t, parent)
	}
}

func TestCorruptStreamLeavesNothing(t *testing.T) {
	stream := bytes.Clone(llamaStream(t))
	stream[len(stream)/2] ^= 0x40
	parent := t.TempDir()
	_, err := Place(context.Background(), bytes.NewReader(stream), Options{Out: filepath.Join(parent, "out")})
	if !errors.Is(err, tensorstream.ErrChecksum) && !errors.Is(err, tensorstream.ErrCorrupt) {
		t.Errorf("err %v, want a checksum or corruption error", err)
	}
	noLeftovers(t, parent)
}

// failWriter fails after n bytes, as a full disk or a broken consumer would.
type failWriter struct {
	n   int
	err error
}

func (f *failWriter) Write(p []byte) (int, error) {
	if len(p) > f.n {
		return 0, f.err
	}
	f.n -= len(p)
	return len(p), nil
}

func TestFailingWritersLeaveNothing(t *testing.T) {
	stream := llamaStream(t)
	// A pass-through consumer that fails with a real error fails the run.
	parent := t.TempDir()
	_, err := Place(context.Background(), bytes.NewReader(stream), Options{Out: filepath.Join(parent, "out"), Emit: &failWriter{n: 200000, err: syscall.EIO}})
	if !errors.Is(err, syscall.EIO) {
		t.Errorf("err %v, want EIO", err)
	}
	noLeftovers(t, parent)

	// A tensor the checkpoint writer refuses (a reserved name) fails it too.
	h := &tensorstream.Header{}
	var b bytes.Buffer
	w := tensorstream.NewWriter(&b)
	w.WriteHeader(h)
	w.WriteTensor(&tensorstream.Tensor{Name: "ok", DType: tensorstream.F32, Shape: []int64{1}, Encoding: tensorstream.Raw, Size: 4})
	w.Write(make([]byte, 4))
	w.WriteTensor(&tensorstream.Tensor{Name: "__metadata__", DType: tensorstream.F32, Shape: []int64{1}, Encoding: tensorstream.Raw, Size: 4})
	w.Write(make([]byte, 4))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	parent = t.TempDir()
	if _, err := Place(context.Background(), &b, Options{Out: filepath.Join(parent, "out")}); !errors.Is(err, safetensors.ErrHeader) {
		t.Errorf("err %v, want safetensors.ErrHeader", err)
	}
	noLeftovers(t, parent)
}

func TestEPIPEStopsEmissionOnly(t *testing.T) {
	parent := t.TempDir()
	rep, err := Place(context.Background(), bytes.NewReader(llamaStream(t)), Options{Out: filepath.Join(parent, "out"), Emit: &failWriter{n: 5000, err: syscall.EPIPE}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.EmitClosed || rep.Emitted {
		t.Errorf("report %+v: want emit_closed_early", rep)
	}
	sameBytes(t, "llama", filepath.Join(fixtures.Path(t, "models", "llama-bnb-nf4"), "model.safetensors"), filepath.Join(parent, "out", "model.safetensors"))
}

func TestPassThrough(t *testing.T) {
	in := llamaStream(t)
	var emitted bytes.Buffer
	rep, err := Place(context.Background(), bytes.NewReader(in), Options{Out: filepath.Join(t.TempDir(), "out"), Emit: &emitted, Args: []string{"--out", "x"}})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.Emitted {
		t.Error("not emitted")
	}
	a, b := tensorstream.NewReader(bytes.NewReader(in)), tensorstream.NewReader(&emitted)
	ha, _ := a.Header()
	hb, err := b.Header()
	if err != nil {
		t.Fatal(err)
	}
	if len(hb.Stages) != len(ha.Stages)+1 || hb.Stages[len(hb.Stages)-1].Name != "place" {
		t.Errorf("stages %v", hb.Stages)
	}
	if !bytes.Equal(ha.Sections["source"], hb.Sections["source"]) {
		t.Error("source section changed")
	}
	for {
		ta, erra := a.Next()
		tb, errb := b.Next()
		if erra == io.EOF && errb == io.EOF {
			break
		}
		if erra != nil || errb != nil {
			t.Fatal(erra, errb)
		}
		pa, _ := io.ReadAll(a)
		pb, err := io.ReadAll(b)
		if err != nil {
			t.Fatal(err)
		}
		if ta.Name != tb.Name || !bytes.Equal(pa, pb) || ta.Checksum != tb.Checksum || (ta.Quant != nil && *ta.Quant != *tb.Quant) {
			t.Errorf("tensor %s differs after pass-through", ta.Name)
		}
	}
}

func TestExistingDir(t *testing.T) {
	stream := llamaStream(t)
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	// A directory place did not write is never replaced, even with Force.
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(out, "mine.txt"), []byte("not a checkpoint"), 0o644)
	if _, err := Place(context.Background(), bytes.NewReader(stream), Options{Out: out, Force: true}); !errors.Is(err, ErrReplace) {
		t.Fatalf("foreign directory: err %v, want ErrReplace", err)
	}
	os.Remove(filepath.Join(out, "mine.txt"))
	// An empty one is; then a checkpoint of place's, marked in its side file.
	if _, err := Place(context.Background(), bytes.NewReader(stream), Options{Out: out, Force: true}); err != nil {
		t.Fatalf("empty directory: %v", err)
	}
	os.WriteFile(filepath.Join(out, "stale.txt"), []byte("old"), 0o644)
	if _, err := Place(context.Background(), bytes.NewReader(stream), Options{Out: out}); !errors.Is(err, ErrExists) {
		t.Fatalf("err %v, want ErrExists", err)
	}
	if _, err := os.Stat(filepath.Join(out, "stale.txt")); err != nil {
		t.Error("refused run touched the existing directory")
	}
	// A failed forced run keeps the old directory.
	if _, err := Place(context.Background(), bytes.NewReader(stream[:len(stream)/2]), Options{Out: out, Force: true}); err == nil {
		t.Fatal("truncated stream accepted")
	}
	if _, err := os.Stat(filepath.Join(out, "stale.txt")); err != nil {
		t.Error("a failed --force run removed the old directory")
	}
	if _, err := Place(context.Background(), bytes.NewReader(stream), Options{Out: out, Force: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, "stale.txt")); err == nil {
		t.Error("--force kept the old content")
	}
	noLeftovers(t, parent, "out")
	sameBytes(t, "llama", filepath.Join(fixtures.Path(t, "models", "llama-bnb-nf4"), "model.safetensors"), filepath.Join(out, "model.safetensors"))
}

func TestShardedOutputReadsBack(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	rep, err := Place(context.Background(), bytes.NewReader(llamaStream(t)), Options{Out: out, MaxShardSize: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Shards < 3 {
		t.Fatalf("%d shards", rep.Shards)
	}
	if _, err := os.Stat(filepath.Join(out, safetensors.IndexFileName)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(out, fmt.Sprintf("model-00001-of-%05d.safetensors", rep.Shards))); err != nil {
		t.Fatal(err)
	}
	got, err := checkpoint.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	ref, err := checkpoint.Open(fixtures.Path(t, "models", "llama-bnb-nf4"))
	if err != nil {
		t.Fatal(err)
	}
	defer ref.Close()
	if len(got.Tensors) != len(ref.Tensors) {
		t.Fatalf("%d tensors, want %d", len(got.Tensors), len(ref.Tensors))
	}
	for i, a := range ref.Tensors {
		b := got.Tensors[i]
		pa, _ := ref.Payload(a)
		pb, _ := got.Payload(b)
		ba, _ := io.ReadAll(pa)
		bb, _ := io.ReadAll(pb)
		if a.Name != b.Name || !bytes.Equal(ba, bb) || (a.Quant != nil && *a.Quant != *b.Quant) {
			t.Errorf("tensor %s differs", a.Name)
		}
	}
	if got.QuantConfig == nil || got.QuantConfig.QuantType != "nf4" {
		t.Errorf("quantization config %+v", got.QuantConfig)
	}
}

func TestInterruptLeavesNothing(t *testing.T) {
	stream := llamaStream(t)
	pr, pw := io.Pipe()
	go pw.Write(stream[:len(stream)/2]) // then the producer stalls
	parent := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(50 * time.Millisecond); cancel() }()
	_, err := Place(ctx, pr, Options{Out: filepath.Join(parent, "out")})
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("err %v, want ErrInterrupted", err)
	}
	noLeftovers(t, parent)
	pw.CloseWithError(errors.New("done"))
}

func TestNoConfigAndPlanSideFile(t *testing.T) {
	c, err := checkpoint.Open(fixtures.Path(t, "models", "llama-bnb-nf4"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	h := &tensorstream.Header{}
	h.Set(tensorstream.SectionPlan, map[string]any{"compute_dtype": map[string]any{"value": "float16"}, "device_map": map[string]any{"": "cuda:0"}})
	var b bytes.Buffer
	if err := c.WriteStream(tensorstream.NewWriter(&b), h); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	rep, err := Place(context.Background(), &b, Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	if got := dirNames(t, out); fmt.Sprint(got) != "[model.safetensors "+PlanFile+"]" {
		t.Errorf("files %v", got)
	}
	if len(rep.Notes) == 0 {
		t.Error("no note about the missing config.json")
	}
	side, _ := os.ReadFile(filepath.Join(out, PlanFile))
	if !strings.Contains(string(side), `"device_map"`) || !strings.Contains(string(side), `"float16"`) {
		t.Errorf("plan side file:\n%s", side)
	}
}

func TestComputeDTypeFromPlan(t *testing.T) {
	src := fixtures.Path(t, "models", "llama")
	c, err := checkpoint.Open(fixtures.Path(t, "models", "llama-bnb-nf4"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg, _ := os.ReadFile(filepath.Join(src, "config.json"))
	h := &tensorstream.Header{}
	h.Set(tensorstream.SectionSource, checkpoint.Source{Dir: src, Config: cfg})
	h.Set(tensorstream.SectionPlan, map[string]any{"compute_dtype": map[string]any{"value": "fp16"}, "devices": []any{}})
	var b bytes.Buffer
	if err := c.WriteStream(tensorstream.NewWriter(&b), h); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Place(context.Background(), &b, Options{Out: out}); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(filepath.Join(out, "config.json"))
	qc, err := checkpoint.ParseQuantizationConfig(got)
	if err != nil || qc.ComputeDType != "float16" {
		t.Errorf("compute dtype %+v, %v", qc, err)
	}
}

func TestBadStreams(t *testing.T) {
	write := func(ts ...*tensorstream.Tensor) *bytes.Buffer {
		var b bytes.Buffer
		w := tensorstream.NewWriter(&b)
		w.WriteHeader(&tensorstream.Header{})
		for _, x := range ts {
			w.WriteTensor(x)
			if !x.NoData {
				w.Write(make([]byte, x.Size))
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return &b
	}
	q := func(name, typ string) *tensorstream.Tensor {
		x := &tensorstream.Tensor{Name: name, DType: tensorstream.BF16, Shape: []int64{64}, Encoding: tensorstream.BNB4,
			Quant: &tensorstream.QuantState{Type: typ, BlockSize: 64}}
		x.Size = x.ExpectedSize()
		return x
	}
	for name, in := range map[string]*bytes.Buffer{
		"nodata": write(&tensorstream.Tensor{Name: "a", DType: tensorstream.F32, Shape: []int64{2}, Encoding: tensorstream.Raw, Size: 8, NoData: true}),
		"mixed":  write(q("a", "nf4"), q("b", "fp4")),
	} {
		parent := t.TempDir()
		if _, err := Place(context.Background(), in, Options{Out: filepath.Join(parent, "out")}); !errors.Is(err, ErrStream) {
			t.Errorf("%s: err %v, want ErrStream", name, err)
		}
		noLeftovers(t, parent)
	}
}

func TestGPUWithoutCUDA(t *testing.T) {
	if err := gpuAvailable(); !errors.Is(err, ErrNoCUDA) {
		t.Skipf("a CUDA build (%v): the stub's message does not apply", err)
	}
	_, err := Place(context.Background(), bytes.NewReader(nil), Options{GPU: true})
	if !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "built without CUDA; rebuild with make cuda") {
		t.Errorf("err %v, want ErrNoCUDA", err)
	}
}

// TestPlanPredictionFromPlanStage reads the per-device prediction from a
// stream that cmd/plan's code wrote (numbers travel as floats there).
func TestPlanPredictionFromPlanStage(t *testing.T) {
	stream := llamaStream(t)
	var planned bytes.Buffer
	if _, err := plan.Stream(bytes.NewReader(stream), &planned, []gpus.GPU{{Name: "test", TotalBytes: 80 << 30, Major: 9}}, plan.DefaultSettings(), tensorstream.Stage{Name: "plan"}); err != nil {
		t.Fatal(err)
	}
	h, err := tensorstream.NewReader(&planned).Header()
	if err != nil {
		t.Fatal(err)
	}
	g, err := newGPUPlacer(h, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p := g.plan[0]; p.PlannedWeights <= 0 || p.PlannedTotal <= p.PlannedWeights {
		t.Errorf("plan prediction %+v", p)
	}
}

func TestOutputPermissions(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Place(context.Background(), bytes.NewReader(llamaStream(t)), Options{Out: out}); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{out, filepath.Join(out, "model.safetensors"), filepath.Join(out, "config.json")} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o044 != 0o044 {
			t.Errorf("%s has mode %v: not readable by others", p, st.Mode())
		}
	}
}

// TestOutputError: a write failure under the temporary (or replaced)
// directory is reported against OUT, its cause kept for the exit status;
// other errors pass unchanged.
func TestOutputError(t *testing.T) {
	j := &job{out: "/data/m-nf4", tmp: "/data/.m-nf4.tmp-123"}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("x: %w (1 of 2 bytes)", &os.PathError{Op: "write", Path: "/data/.m-nf4.tmp-123/..shard-00001.safetensors.partial.spool-9", Err: syscall.EFBIG}),
			"place: cannot write the output directory /data/m-nf4: file too large"},
		{&os.PathError{Op: "mkdirtemp", Path: "/data/.m-nf4.tmp-*", Err: syscall.ENOSPC}, "place: cannot write the output directory /data/m-nf4: no space left on device"},
		{&os.LinkError{Op: "rename", Old: "/data/.m-nf4.tmp-123", New: "/data/m-nf4", Err: syscall.EDQUOT}, "place: cannot write the output directory /data/m-nf4: disk quota exceeded"},
		{&os.PathError{Op: "open", Path: "/data/m-nf4x/config.json", Err: syscall.ENOSPC}, "open /data/m-nf4x/config.json: no space left on device"},
	} {
		got := j.outputError(c.err)
		if got.Error() != c.want {
			t.Errorf("%v:\n got %s\nwant %s", c.err, got, c.want)
		}
		var errno syscall.Errno
		if !errors.As(c.err, &errno) || !errors.Is(got, errno) {
			t.Errorf("%v: cause %v lost", got, errno)
		}
	}
}

// The stream's announcement of its tensors lets place write payloads straight
// to their places; one that does not hold (here detect's, passed on by a
// stage that quantized without announcing: a stale one), none, or one that
// does not decode changes nothing in the files, only how much was spooled.
func TestAnnouncement(t *testing.T) {
	src, ref := fixtures.Path(t, "models", "llama"), fixtures.Path(t, "models", "llama-bnb-nf4")
	stale := pipelineStream(t, src)
	// rewrite copies stale with its header edited, and returns the
	// descriptors that came in it.
	rewrite := func(edit func(h *tensorstream.Header)) ([]byte, []*tensorstream.Tensor) {
		r := tensorstream.NewReader(bytes.NewReader(stale))
		h, err := r.Header()
		if err != nil {
			t.Fatal(err)
		}
		edit(h)
		var b bytes.Buffer
		w := tensorstream.NewWriter(&b)
		if err := w.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		var came []*tensorstream.Tensor
		for {
			ts, err := r.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			came = append(came, ts.Clone())
			if err := tensorstream.CopyTensor(w, r, ts); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		return b.Bytes(), came
	}
	stream := func(edit func(h *tensorstream.Header)) []byte { b, _ := rewrite(edit); return b }
	// The right announcement: what came, as quantize would have said it.
	_, came := rewrite(func(*tensorstream.Header) {})
	for _, c := range came {
		if c.Quant != nil {
			c.Quant.NestedOffset = 0 // not known ahead
		}
	}
	want, err := os.ReadFile(filepath.Join(ref, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	payload := int64(len(want)) - 8 - int64(binary.LittleEndian.Uint64(want))
	cases := []struct {
		name    string
		stream  []byte
		inPlace func(n int64) bool
		note    bool
	}{
		{"right", stream(func(h *tensorstream.Header) { sections.SetTensors(h, came) }), func(n int64) bool { return n == payload }, false},
		{"stale", stale, func(n int64) bool { return n < payload }, false},
		{"none", stream(sections.DropTensors), func(n int64) bool { return n == 0 }, false},
		{"undecodable", stream(func(h *tensorstream.Header) { h.Set(tensorstream.SectionTensors, "no") }), func(n int64) bool { return n == 0 }, true},
	}
	for _, c := range cases {
		out := filepath.Join(t.TempDir(), "o")
		rep, err := Place(context.Background(), bytes.NewReader(c.stream), Options{Out: out})
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		sameBytes(t, c.name, filepath.Join(ref, "model.safetensors"), filepath.Join(out, "model.safetensors"))
		if !c.inPlace(rep.InPlace) {
			t.Errorf("%s: %d of %d bytes in place", c.name, rep.InPlace, payload)
		}
		if got := len(rep.Notes) > 0 && strings.Contains(strings.Join(rep.Notes, " "), "announcement"); got != c.note {
			t.Errorf("%s: notes %q", c.name, rep.Notes)
		}
	}
}
