package quant

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// The double-quantization offset is the float32 mean of a tensor's absmax
// values as torch computes it on the GPU for bitsandbytes (absmax.mean() on a
// fresh, contiguous float32 CUDA tensor). Float addition does not associate,
// so the offset's last bit depends on the order of the adds; torch's order is
// that of its generic CUDA reduction (ATen's Reduce.cuh, as shipped in torch
// 2.11's headers) configured for one output:
//
//   - Threads: w = 2^floor(log2 d), at most 512, where d = n, or n/4 when
//     n >= 128 and the loads are vectorized by four.
//   - Without vectorization (n < 128) thread t keeps four running sums of the
//     values t, t+w, t+2w, t+3w, t+4w, ... (value t+kw into sum k mod 4).
//   - Vectorized, thread t of CTA c keeps one running sum per position in a
//     vector of four consecutive values, over the vectors t + c*w, t + c*w +
//     s, ... (s = w times the number of CTAs); the n mod 4 values past the last
//     whole vector go into the first sum of threads 0..n%4-1 of CTA 0.
//   - A thread's four sums are added in order: ((s0+s1)+s2)+s3.
//   - A block adds its threads' values as a halving tree: thread t adds
//     thread t+h for h = w/2, w/4, ..., 1 (through shared memory down to a
//     warp, then shfl_down with decreasing offsets).
//   - From ceil(n/w) >= 256 the input is split over C CTAs, C = max(min(T,
//     ceil(ceil(n/w)/16)), ceil(ceil(n/w)/256)), T = SMs * floor(threads per
//     SM / w); the last CTA to finish adds the partials (thread t takes
//     partials t, t+w, ...) and combines them in the same halving tree.
//   - The mean is sum * (float32(1) / float32(n)).
//
// Checked against torch 2.11 on an H200 for every n up to 70,000 and 300
// random n up to 2*10^7, on four value distributions (testdata/torchmean;
// scripts/real-stack/torch_mean_sweep.py). Only C depends on the GPU, and only
// once T < ceil(n/w/16): from about 16*T*512 values, i.e. 4.3 M absmax values
// (a 277 M-element tensor at block size 64) on an H100/H200.

// ReduceGPU is the geometry of the GPU whose torch reduction order the offset
// reproduces: its number of multiprocessors and the most resident threads per
// multiprocessor (cudaDeviceProp.multiProcessorCount and
// maxThreadsPerMultiProcessor).
type ReduceGPU struct {
	SMs          int
	ThreadsPerSM int
}

// DefaultReduceGPU is an H100 SXM or H200 (132 SMs of 2048 threads), the GPUs
// transformers + bitsandbytes were checked on.
var DefaultReduceGPU = ReduceGPU{SMs: 132, ThreadsPerSM: 2048}

// ParseReduceGPU reads a geometry written SMSxTHREADS, such as "108x2048".
// (Named cards are gpus.Presets: gpus.LookupPreset(name).ReduceGPU().)
func ParseReduceGPU(s string) (ReduceGPU, error) {
	if a, b, ok := strings.Cut(strings.ToLower(strings.TrimSpace(s)), "x"); ok {
		sms, err1 := strconv.Atoi(a)
		thr, err2 := strconv.Atoi(b)
		if err1 == nil && err2 == nil {
			g := ReduceGPU{SMs: sms, ThreadsPerSM: thr}
			return g, g.Validate()
		}
	}
	return ReduceGPU{}, fmt.Errorf("%w: GPU geometry %q (want SMSxTHREADS such as 108x2048)", ErrParams, s)
}

// Validate reports whether g can run torch's reduction.
func (g ReduceGPU) Validate() error {
	if g.SMs < 1 || g.SMs > 1<<16 || g.ThreadsPerSM < meanMaxThreads || g.ThreadsPerSM > 1<<16 {
		return fmt.Errorf("%w: GPU geometry %dx%d (want at least 1 SM and %d threads per SM)", ErrParams, g.SMs, g.ThreadsPerSM, meanMaxThreads)
	}
	return nil
}

func (g ReduceGPU) String() string { return fmt.Sprintf("%dx%d", g.SMs, g.ThreadsPerSM) }

const (
	meanMaxThreads   = 512 // torch's threads per block for a float32 reduction
	meanWarp         = 32
	meanVec          = 4   // values per vectorized load, and running sums per thread
	meanVecFrom      = 128 // vectorized from this many values
	meanMinPerThread = 16
	meanMaxPerThread = 256
)

// MeanGeometry is how torch launches the reduction of n values: Threads per
// block, CTAs, and whether the loads are vectorized.
type MeanGeometry struct {
	Threads    int
	CTAs       int
	Vectorized bool
}

// MeanGeometryFor returns the launch for n values on gpu.
func MeanGeometryFor(n int64, gpu ReduceGPU) MeanGeometry {
	g := MeanGeometry{CTAs: 1, Vectorized: n >= meanVecFrom}
	d := n
	if g.Vectorized {
		d = n / meanVec
	}
	g.Threads = meanMaxThreads
	if d < meanMaxThreads {
		g.Threads = lastPow2(d)
	}
	perThread := ceilDiv64(n, int64(g.Threads))
	if perThread >= meanMaxPerThread {
		target := int64(gpu.SMs) * int64(gpu.ThreadsPerSM/g.Threads)
		g.CTAs = int(max(min(target, ceilDiv64(perThread, meanMinPerThread)), ceilDiv64(perThread, meanMaxPerThread)))
	}
	return g
}

// MeanF32 is the float32 mean of a in torch's order on DefaultReduceGPU.
func MeanF32(a []float32) float32 { return MeanF32On(a, DefaultReduceGPU) }

// MeanF32On is the float32 mean of a in the order of torch's CUDA reduction
// on gpu (see the top of this file). It is NaN for no values, as in torch.
func MeanF32On(a []float32, gpu ReduceGPU) float32 {
	n := int64(len(a))
	if n == 0 {
		return float32(math.NaN())
	}
	g := MeanGeometryFor(n, gpu)
	v := make([]float32, g.Threads)
	partials := make([]float32, g.CTAs)
	for c := range partials {
		for t := range v {
			v[t] = meanThreadSum(a, g, c, t)
		}
		partials[c] = meanBlockSum(v)
	}
	sum := partials[0]
	if g.CTAs > 1 {
		for t := range v {
			var s float32
			for i := t; i < g.CTAs; i += g.Threads {
				s += partials[i]
			}
			v[t] = s
		}
		sum = meanBlockSum(v)
	}
	return sum * (float32(1) / float32(n))
}

// meanThreadSum is thread t of CTA c's value: four running sums added in order.
func meanThreadSum(a []float32, g MeanGeometry, c, t int) float32 {
	var acc [meanVec]float32
	n := int64(len(a))
	w := int64(g.Threads)
	step := w * int64(g.CTAs)
	if g.Vectorized {
		for i := int64(c)*w + int64(t); i*meanVec+meanVec-1 < n; i += step {
			v := a[i*meanVec : i*meanVec+meanVec]
			acc[0] += v[0]
			acc[1] += v[1]
			acc[2] += v[2]
			acc[3] += v[3]
		}
		if tail := n - n%meanVec + int64(t); c == 0 && tail < n {
			acc[0] += a[tail]
		}
	} else { // one CTA: n < 128
		for k, i := 0, int64(t); i < n; k, i = k+1, i+w {
			acc[k%meanVec] += a[i]
		}
	}
	return ((acc[0] + acc[1]) + acc[2]) + acc[3]
}

// meanBlockSum adds one value per thread as a halving tree (thread t adds
// thread t+h for h = len/2, ..., 1) and returns thread 0's sum. It overwrites v.
func meanBlockSum(v []float32) float32 {
	for h := len(v) / 2; h > 0; h /= 2 {
		for t := 0; t < h; t++ {
			v[t] += v[t+h]
		}
	}
	return v[0]
}

// lastPow2 is the largest power of two <= n (1 for n < 2).
func lastPow2(n int64) int {
	p := 1
	for int64(p)*2 <= n {
		p *= 2
	}
	return p
}

func ceilDiv64(a, b int64) int64 { return (a + b - 1) / b }
