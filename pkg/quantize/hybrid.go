package quantize

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// A GPU takes a context, a module load (and on a machine's first run the
// driver's JIT compile of the PTX) and its pinned staging buffers before its
// first block: about 0.45 s on an H200 host, longer than the CPU takes for a
// 1.1B model. So the stage does not wait for it. A hybrid backend opens the
// GPU on a goroutine of its own and quantizes on the CPU until the GPU is
// ready; then, as its mode says, it hands the work to the GPU (--device cuda)
// or splits each run of blocks between the two (--device auto). Blocks are
// independent and both backends give the same bytes (quant.Backend), so where
// a block is quantized never shows in the output.

// gpuOpener opens a GPU backend; close releases it. It runs on a goroutine
// of its own, once. An error wrapping errFallBack means "use the CPU": the
// opener has said what it had to (a warning), and the run goes on.
type gpuOpener func() (b quant.Backend, close func(), err error)

// errFallBack marks an opening that failed in a way the run survives on the
// CPU (no device under auto, no device memory for a context).
var errFallBack = errors.New("quantize: GPU not used")

type hybridMode int

const (
	// gpuAlone: the CPU until the GPU is ready, then the GPU alone. An
	// opening that fails (other than errFallBack) fails the run.
	gpuAlone hybridMode = iota
	// shared: the CPU until the GPU is ready, then both on each run of
	// blocks, in proportion to their measured throughput (router). The GPU
	// failing to open or to work only leaves the CPU.
	shared
)

// testWaitGPU, when a test sets it, makes a hybrid wait for its GPU's
// opening before its first run of blocks, so that the GPU does the work
// even of a model smaller than its start-up.
var testWaitGPU bool

// hybrid is a quant.Backend over the CPU and a GPU being opened.
type hybrid struct {
	cpu  quant.Backend
	mode hybridMode
	name string // the GPU as asked, e.g. "cuda:0"

	ready    chan struct{} // closed once the opening returned
	gpu      quant.Backend // set before ready is closed; nil if it failed
	closeGPU func()
	openErr  error
	openTime time.Duration // how long the opening took

	mu       sync.Mutex
	released bool
	gpuUsed  bool // under shared, the GPU quantized some blocks
	r        router
}

// newHybrid starts opening the GPU and returns the backend at once.
func newHybrid(cpu quant.Backend, name string, mode hybridMode, open gpuOpener) *hybrid {
	h := &hybrid{cpu: cpu, name: name, mode: mode, ready: make(chan struct{})}
	t0 := time.Now()
	go func() {
		b, c, err := open()
		if err != nil {
			b, c = nil, nil
		}
		// ready closes under mu, so that release sees either the GPU
		// open or released still to be read here.
		h.mu.Lock()
		h.openTime = time.Since(t0)
		h.gpu, h.closeGPU, h.openErr = b, c, err
		close(h.ready)
		released := h.released
		h.mu.Unlock()
		if released && c != nil {
			c() // the run ended while the GPU opened
		}
	}()
	return h
}

// release closes the GPU if it is open. One still opening is closed by its
// opening goroutine once it is: a run shorter than the GPU's start-up does
// not wait for it.
func (h *hybrid) release() {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.released {
		return
	}
	h.released = true
	select {
	case <-h.ready:
		if h.closeGPU != nil {
			h.closeGPU()
		}
	default:
	}
}

// Name is where the work runs: the GPU as asked under gpuAlone (the CPU's
// share while it opens is start-up), "cpu" once it failed to open;
// under shared "cpu" until the GPU quantized some blocks, then "cpu+" the GPU.
func (h *hybrid) Name() string {
	g := h.opened()
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case h.mode == gpuAlone && !(g.done && g.b == nil):
		return h.name
	case h.mode == shared && h.gpuUsed:
		return "cpu+" + h.name
	}
	return "cpu"
}

type openState struct {
	done bool
	b    quant.Backend
	err  error
}

// routing describes the GPU's opening and, under shared, the router's
// measures.
func (h *hybrid) routing() string {
	g := h.opened()
	h.mu.Lock()
	defer h.mu.Unlock()
	var s string
	switch {
	case !g.done:
		s = h.name + " still opening at the end"
	case g.b == nil:
		s = fmt.Sprintf("%s not used (%.3f s): %v", h.name, h.openTime.Seconds(), g.err)
	default:
		s = fmt.Sprintf("%s open after %.3f s", h.name, h.openTime.Seconds())
	}
	if h.mode == shared {
		s += "; " + h.r.String()
	}
	return s
}

// opened says whether the opening has returned, and with what.
func (h *hybrid) opened() openState {
	select {
	case <-h.ready:
		return openState{done: true, b: h.gpu, err: h.openErr}
	default:
		return openState{}
	}
}

func (h *hybrid) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	if testWaitGPU {
		<-h.ready
	}
	g := h.opened()
	switch {
	case g.done && g.b == nil && h.mode == gpuAlone && !errors.Is(g.err, errFallBack):
		return g.err
	case !g.done || g.b == nil:
		return h.cpuAlone(packed, absmax, src, dt, p, first)
	case h.mode == gpuAlone:
		return g.b.QuantizeBlocks(packed, absmax, src, dt, p, first)
	}
	es := dt.Size()
	if es == 0 || p.BlockSize <= 0 || len(src)%es != 0 {
		return h.cpu.QuantizeBlocks(packed, absmax, src, dt, p, first)
	}
	n := len(src) / es
	blocks := (n + p.BlockSize - 1) / p.BlockSize
	h.mu.Lock()
	gb := h.r.gpuBlocks(blocks, p.BlockSize*es)
	h.mu.Unlock()
	if gb == 0 {
		return h.cpuAlone(packed, absmax, src, dt, p, first)
	}
	return h.split(g.b, gb, packed, absmax, src, dt, p, first)
}

// cpuAlone quantizes the whole run on the CPU and tells the router its rate.
func (h *hybrid) cpuAlone(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	t0 := time.Now()
	err := h.cpu.QuantizeBlocks(packed, absmax, src, dt, p, first)
	if err == nil {
		h.mu.Lock()
		h.r.cpuAlone(len(src), time.Since(t0))
		h.mu.Unlock()
	}
	return err
}

// split quantizes the first gb blocks on the GPU and the rest on the CPU, at
// the same time, and tells the router how long each part took.
func (h *hybrid) split(gpu quant.Backend, gb int, packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	es := dt.Size()
	e := min(gb*p.BlockSize, len(src)/es) // block sizes are even: packed splits on a byte
	var gErr error
	var gTime time.Duration
	t0 := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		gErr = gpu.QuantizeBlocks(packed[:e/2], absmax[:gb], src[:e*es], dt, p, first)
		gTime = time.Since(t0)
	}()
	cErr := h.cpu.QuantizeBlocks(packed[e/2:], absmax[gb:], src[e*es:], dt, p, first+int64(e))
	cTime := time.Since(t0)
	<-done
	wall := time.Since(t0)
	var nf *quant.NonFiniteError
	if gErr != nil && !errors.As(gErr, &nf) {
		// The GPU failed (not the data): auto carries on without it.
		h.mu.Lock()
		h.r.off = true
		h.mu.Unlock()
		// The GPU's part first: a non-finite value there comes before any
		// the CPU's part found.
		if err := h.cpu.QuantizeBlocks(packed[:e/2], absmax[:gb], src[:e*es], dt, p, first); err != nil {
			return err
		}
		return cErr
	}
	if gErr != nil { // the earlier part names the first bad value
		return gErr
	}
	if cErr != nil {
		return cErr
	}
	h.mu.Lock()
	h.gpuUsed = true
	h.r.sharedRun(e*es, len(src)-e*es, gTime, cTime, wall)
	h.mu.Unlock()
	return nil
}

// router decides how much of each run of blocks the GPU takes under auto,
// from throughputs it measures on the runs themselves: the CPU's alone
// (while the GPU opens, and on runs too small to share), and each side's
// while they share. The GPU's share is r_gpu / (r_gpu + r_cpu), both rates
// measured while sharing, so that both parts end together; the first shared
// run gives it probeShare to measure. Once it has a few shared runs, it
// compares their throughput (the whole run's bytes over its wall time) with
// the CPU alone: sharing that is not faster stops, and the GPU gets no more
// work. That comparison is what makes auto never slower than the CPU by more
// than the probing runs.
type router struct {
	cpuRate, gpuRate float64 // bytes/s while sharing, averaged
	aloneRate        float64 // bytes/s of the CPU alone, averaged
	sharedRate       float64 // bytes/s of shared runs, averaged
	alone, runs      int     // CPU-alone runs and shared runs measured
	judged           int     // shared runs in sharedRate
	off              bool    // the GPU gets no more work
}

const (
	// probeShare is the GPU's share of the first shared runs.
	probeShare = 0.25
	// minShareBytes is the least input the GPU is given: below it, a GPU's
	// fixed costs per call (a host round trip) outweigh its part.
	minShareBytes = 1 << 20
	// minJudgeBytes is the least input of a run whose rate counts: smaller
	// runs measure per-call costs more than throughput.
	minJudgeBytes = 1 << 20
	// judgeRuns is the shared runs (and CPU-alone runs) measured before
	// sharing is judged against the CPU alone.
	judgeRuns = 4
	// rateWeight is the weight of the newest measure in the averages.
	rateWeight = 0.25
)

// gpuBlocks is the blocks of a run of blocks (of blockBytes input each) the
// GPU takes; 0 leaves the run to the CPU.
func (r *router) gpuBlocks(blocks, blockBytes int) int {
	if r.off {
		return 0
	}
	share := probeShare
	if r.runs > 0 && r.gpuRate > 0 && r.cpuRate > 0 {
		share = r.gpuRate / (r.gpuRate + r.cpuRate)
	}
	gb := int(share * float64(blocks))
	if gb*blockBytes < minShareBytes {
		return 0
	}
	if gb >= blocks { // the CPU keeps some: its rate stays measured
		gb = blocks - 1
	}
	return gb
}

func average(avg *float64, v float64, n int) {
	if n == 0 {
		*avg = v
		return
	}
	*avg += rateWeight * (v - *avg)
}

// cpuAlone records a run of n input bytes the CPU quantized alone in d.
func (r *router) cpuAlone(n int, d time.Duration) {
	if n < minJudgeBytes || d <= 0 {
		return
	}
	average(&r.aloneRate, float64(n)/d.Seconds(), r.alone)
	r.alone++
	r.judge()
}

// sharedRun records a shared run: gn input bytes on the GPU in gd, cn on the
// CPU in cd, the whole run in wall.
func (r *router) sharedRun(gn, cn int, gd, cd, wall time.Duration) {
	if gd <= 0 || cd <= 0 || wall <= 0 {
		return
	}
	average(&r.gpuRate, float64(gn)/gd.Seconds(), r.runs)
	average(&r.cpuRate, float64(cn)/cd.Seconds(), r.runs)
	if gn+cn >= minJudgeBytes {
		average(&r.sharedRate, float64(gn+cn)/wall.Seconds(), r.judged)
		r.judged++
	}
	r.runs++
	r.judge()
}

// judge turns the GPU off when sharing has measured slower than the CPU
// alone.
func (r *router) judge() {
	if r.judged >= judgeRuns && r.alone >= judgeRuns && r.sharedRate > 0 && r.sharedRate < r.aloneRate {
		r.off = true
	}
}

// String describes the router's state, for benchmarks and reports.
func (r *router) String() string {
	return fmt.Sprintf("cpu alone %.2f GB/s (%d runs), shared %.2f GB/s (%d runs: gpu %.2f, cpu %.2f GB/s), gpu off %v",
		r.aloneRate/1e9, r.alone, r.sharedRate/1e9, r.judged, r.gpuRate/1e9, r.cpuRate/1e9, r.off)
}
