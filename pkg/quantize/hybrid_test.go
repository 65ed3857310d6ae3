package quantize

import (
	"errors"
	"math"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// fakeGPU is a GPU backend that quantizes on one CPU thread (so its bytes
// are the CPU's) and counts what it was given; fail, when set, is returned
// instead of any work.
type fakeGPU struct {
	calls, values atomic.Int64
	fail          error
}

func (g *fakeGPU) Name() string { return "cuda:0" }

func (g *fakeGPU) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	if g.fail != nil {
		return g.fail
	}
	g.calls.Add(1)
	g.values.Add(int64(len(src) / dt.Size()))
	return quant.CPU(1).QuantizeBlocks(packed, absmax, src, dt, p, first)
}

// slowOpener returns an opener that waits for gate before it opens gpu (or
// fails with err), and a count of the closes of what it opened.
func slowOpener(gate <-chan struct{}, gpu quant.Backend, err error) (gpuOpener, *atomic.Int32) {
	var closed atomic.Int32
	return func() (quant.Backend, func(), error) {
		<-gate
		if err != nil {
			return nil, nil, err
		}
		return gpu, func() { closed.Add(1) }, nil
	}, &closed
}

// bigStream has tensors large enough to be shared (several MiB each) and
// a small one.
func bigStream(t *testing.T) []byte {
	return makeStream(t,
		spec{name: "a.weight", dt: tensorstream.BF16, shape: []int64{2048, 2048}, quantize: true},
		spec{name: "b.weight", dt: tensorstream.BF16, shape: []int64{1024, 5632}, quantize: true},
		spec{name: "norm", dt: tensorstream.BF16, shape: []int64{2048}},
		spec{name: "c.weight", dt: tensorstream.F32, shape: []int64{1000, 1031}, quantize: true},
		spec{name: "d.weight", dt: tensorstream.F16, shape: []int64{3, 65}, quantize: true})
}

// TestHybridCPUUntilGPUReady: while the GPU opens every block goes to the
// CPU; once it is open, under gpuAlone every block goes to the GPU and under
// shared the large runs are split. The bytes are the CPU's every time.
func TestHybridCPUUntilGPUReady(t *testing.T) {
	in := bigStream(t)
	want, _ := mustRun(t, in, cpuOptions())
	for _, mode := range []hybridMode{gpuAlone, shared} {
		g := &fakeGPU{}
		gate := make(chan struct{})
		open, closed := slowOpener(gate, g, nil)
		h := newHybrid(quant.CPU(2), "cuda:0", mode, open)
		o := cpuOptions()
		o.Backends = []quant.Backend{h}
		o.ChunkSize = 4 << 20

		got, sum := mustRun(t, in, o)
		if g.calls.Load() != 0 {
			t.Errorf("mode %d: the GPU got %d runs before it was open", mode, g.calls.Load())
		}
		if !sameAfterHeader(t, got, want) {
			t.Errorf("mode %d, GPU opening: output differs from the CPU's", mode)
		}
		wantName := map[hybridMode]string{gpuAlone: "cuda:0", shared: "cpu"}[mode]
		if sum.Device != wantName {
			t.Errorf("mode %d, GPU opening: device %q, want %q", mode, sum.Device, wantName)
		}

		close(gate)
		<-h.ready
		got, sum = mustRun(t, in, o)
		if !sameAfterHeader(t, got, want) {
			t.Errorf("mode %d, GPU open: output differs from the CPU's", mode)
		}
		var total int64
		for _, s := range []spec{{shape: []int64{2048, 2048}}, {shape: []int64{1024, 5632}}, {shape: []int64{1000, 1031}}, {shape: []int64{3, 65}}} {
			total += s.elements()
		}
		switch mode {
		case gpuAlone:
			if g.values.Load() != total {
				t.Errorf("gpuAlone: the GPU quantized %d of %d values", g.values.Load(), total)
			}
			if sum.Device != "cuda:0" {
				t.Errorf("gpuAlone: device %q", sum.Device)
			}
		case shared:
			if v := g.values.Load(); v == 0 || v >= total {
				t.Errorf("shared: the GPU quantized %d of %d values, want a part", v, total)
			}
			if sum.Device != "cpu+cuda:0" {
				t.Errorf("shared: device %q, want cpu+cuda:0", sum.Device)
			}
		}
		h.release()
		h.release()
		if closed.Load() != 1 {
			t.Errorf("mode %d: the GPU was closed %d times, want once", mode, closed.Load())
		}
	}
}

// sameAfterHeader compares two outputs tensor by tensor (the headers name
// different devices).
func sameAfterHeader(t *testing.T, a, b []byte) bool {
	t.Helper()
	_, x := readAll(t, a)
	_, y := readAll(t, b)
	if len(x) != len(y) {
		return false
	}
	for i := range x {
		if x[i].t.Name != y[i].t.Name || string(x[i].payload) != string(y[i].payload) {
			return false
		}
		if (x[i].t.Quant == nil) != (y[i].t.Quant == nil) ||
			x[i].t.Quant != nil && math.Float32bits(x[i].t.Quant.NestedOffset) != math.Float32bits(y[i].t.Quant.NestedOffset) {
			return false
		}
	}
	return true
}

// TestHybridReleaseWhileOpening: a run that ends before the GPU is open
// does not wait for it; the GPU is closed once its opening returns.
func TestHybridReleaseWhileOpening(t *testing.T) {
	gate := make(chan struct{})
	open, closed := slowOpener(gate, &fakeGPU{}, nil)
	h := newHybrid(quant.CPU(1), "cuda:0", shared, open)
	h.release() // returns at once: the gate is shut
	close(gate)
	<-h.ready
	for deadline := time.Now().Add(10 * time.Second); closed.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if closed.Load() != 1 {
		t.Errorf("closed %d times, want once", closed.Load())
	}
}

// openNow returns a hybrid whose opening has returned.
func openNow(t *testing.T, mode hybridMode, gpu quant.Backend, err error) *hybrid {
	t.Helper()
	gate := make(chan struct{})
	close(gate)
	open, _ := slowOpener(gate, gpu, err)
	h := newHybrid(quant.CPU(2), "cuda:0", mode, open)
	<-h.ready
	return h
}

// TestHybridOpenFails: under shared, any failure leaves the CPU, silently;
// under gpuAlone, errFallBack leaves the CPU (the opener warned) and any
// other error fails the runs.
func TestHybridOpenFails(t *testing.T) {
	in := bigStream(t)
	want, _ := mustRun(t, in, cpuOptions())
	errOpen := errors.New("no context")
	for _, c := range []struct {
		mode    hybridMode
		err     error
		wantErr bool
	}{
		{shared, errOpen, false},
		{shared, errFallBack, false},
		{gpuAlone, errFallBack, false},
		{gpuAlone, errOpen, true},
	} {
		h := openNow(t, c.mode, &fakeGPU{}, c.err)
		o := cpuOptions()
		o.Backends = []quant.Backend{h}
		got, sum, err := run(t, in, o)
		if c.wantErr {
			if !errors.Is(err, errOpen) {
				t.Errorf("mode %d, %v: error %v", c.mode, c.err, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("mode %d, %v: %v", c.mode, c.err, err)
			continue
		}
		if !sameAfterHeader(t, got, want) {
			t.Errorf("mode %d, %v: output differs from the CPU's", c.mode, c.err)
		}
		if sum.Device != "cpu" {
			t.Errorf("mode %d, %v: device %q, want cpu", c.mode, c.err, sum.Device)
		}
	}
}

// TestHybridGPUFailsShared: a GPU that fails while sharing has its part
// done again on the CPU and gets no more work.
func TestHybridGPUFailsShared(t *testing.T) {
	in := bigStream(t)
	want, _ := mustRun(t, in, cpuOptions())
	g := &fakeGPU{fail: quant.ErrBackend}
	h := openNow(t, shared, g, nil)
	o := cpuOptions()
	o.Backends = []quant.Backend{h}
	got, sum := mustRun(t, in, o)
	if !sameAfterHeader(t, got, want) {
		t.Error("output differs from the CPU's")
	}
	if !h.r.off || sum.Device != "cpu" {
		t.Errorf("router off %v, device %q: want the GPU off and cpu", h.r.off, sum.Device)
	}
}

// TestHybridNonFiniteFirst: with a NaN in both the GPU's and the CPU's part
// of a shared run, the error names the first; with one in the CPU's part
// only, that one, at its index in the tensor.
func TestHybridNonFiniteFirst(t *testing.T) {
	const n = 4 << 20 // 8 MiB of bf16: shared
	p := quant.DefaultParams()
	for _, at := range [][]int{{1000, 3 << 20}, {3 << 20}} {
		h := openNow(t, shared, &fakeGPU{}, nil)
		src := randomPayload(newRand(), tensorstream.BF16, n)
		for _, i := range at {
			putF32(src, tensorstream.BF16, i, float32(math.NaN()))
		}
		err := h.QuantizeBlocks(make([]byte, n/2), make([]float32, n/p.BlockSize), src, quant.BF16, p, 7)
		var nf *quant.NonFiniteError
		if !errors.As(err, &nf) || nf.Index != int64(at[0])+7 {
			t.Errorf("NaN at %v: %v, want index %d", at, err, at[0]+7)
		}
	}
}

// TestHybridGPUFailsNonFiniteFirst: when the GPU fails (not on the data)
// while the CPU's part holds a NaN, the GPU's part is redone on the CPU first,
// so a NaN there is still the one named.
func TestHybridGPUFailsNonFiniteFirst(t *testing.T) {
	const n = 4 << 20
	p := quant.DefaultParams()
	h := openNow(t, shared, &fakeGPU{fail: quant.ErrBackend}, nil)
	src := randomPayload(newRand(), tensorstream.BF16, n)
	putF32(src, tensorstream.BF16, 1000, float32(math.NaN()))
	putF32(src, tensorstream.BF16, 3<<20, float32(math.NaN()))
	err := h.QuantizeBlocks(make([]byte, n/2), make([]float32, n/p.BlockSize), src, quant.BF16, p, 7)
	var nf *quant.NonFiniteError
	if !errors.As(err, &nf) || nf.Index != 1007 {
		t.Errorf("%v, want the NaN at index 1007", err)
	}
}

func TestRouterShares(t *testing.T) {
	const bb = 128 // bf16 blocks of 64
	var r router
	if got := r.gpuBlocks(1<<15, bb); got != 1<<13 {
		t.Errorf("first share %d blocks of %d, want probeShare", got, 1<<15)
	}
	if got := r.gpuBlocks(1<<13, bb); got != 0 {
		t.Errorf("a 1 MiB run: the GPU got %d blocks, want 0 (its part under minShareBytes)", got)
	}
	// The GPU measured three times as fast as the CPU while sharing.
	r.sharedRun(3<<20, 1<<20, 10*time.Millisecond, 10*time.Millisecond, 10*time.Millisecond)
	if got := r.gpuBlocks(1<<16, bb); got != 3<<14 {
		t.Errorf("GPU 3x the CPU: %d of %d blocks, want 3/4", got, 1<<16)
	}
	// Never all: the CPU's rate stays measured.
	r.gpuRate, r.cpuRate = 1e12, 1
	if got := r.gpuBlocks(1<<16, bb); got != 1<<16-1 {
		t.Errorf("GPU far faster: %d of %d blocks", got, 1<<16)
	}
}

// TestRouterJudges: sharing that measures slower than the CPU alone turns
// the GPU off; faster sharing keeps it on.
func TestRouterJudges(t *testing.T) {
	for _, c := range []struct {
		sharedMs int
		off      bool
	}{{5, false}, {20, true}} {
		var r router
		for range judgeRuns {
			r.cpuAlone(8<<20, 10*time.Millisecond) // 0.84 GB/s
		}
		for i := range judgeRuns {
			if r.off {
				t.Errorf("shared %d ms: off after %d shared runs, before judging", c.sharedMs, i)
			}
			d := time.Duration(c.sharedMs) * time.Millisecond
			r.sharedRun(4<<20, 4<<20, d, d, d)
		}
		if r.off != c.off {
			t.Errorf("shared runs of 8 MiB in %d ms against the CPU alone in 10: off %v, want %v (%s)", c.sharedMs, r.off, c.off, &r)
		}
		if c.off && r.gpuBlocks(1<<20, 128) != 0 {
			t.Error("the GPU still gets work once off")
		}
	}
	var r router
	r.cpuAlone(4<<10, time.Nanosecond) // too small to count
	if r.alone != 0 {
		t.Error("a 4 KiB run counted")
	}
}
