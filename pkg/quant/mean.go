package quant

import "math"

// The double-quantization offset is the float32 mean of a tensor's absmax
// values as torch computes it on the GPU for bitsandbytes (absmax.mean()):
// torch's reduction kernel adds in a fixed tree that depends only on the count,
// then multiplies by the float32 reciprocal of the count. MeanGeometry is that
// tree's shape; MeanF32 adds in the same order on the CPU, and internal/gpu's
// kernels do so on the device.

// The golden vectors (up to 2048 values) show torch 2.11 summing with one warp:
// lane t keeps four running sums of the values t, t+32, t+64, t+96, t+128, ...
// (value t+32k going to sum k mod 4), adds them in order, and the lanes are
// combined by shfl_down by 1, 2, 4, 8, 16. Past 8192 values (256 a lane) the
// order follows torch's reduction config for a 32x16 block split over CTAs
// sized for an H100/H200 (132 multiprocessors of 2048 threads); that part is
// fixed here so that CPU and GPU agree, and is not checked against torch.
const (
	meanWarp         = 32
	meanWarps        = 16
	meanNumSMs       = 132
	meanThreadsPerSM = 2048
	meanMinPerThread = 16
	meanMaxPerThread = 256
)

// MeanGeometry is the shape of the float32 sum of n values: Warps per CTA
// (each of 32 lanes) and CTAs.
type MeanGeometry struct {
	Lanes int // threads per warp that take part: min(32, largest power of two <= n)
	Warps int
	CTAs  int
}

// MeanGeometryFor returns the reduction shape for n values.
func MeanGeometryFor(n int64) MeanGeometry {
	if n < meanWarp {
		lanes := 1
		for int64(lanes*2) <= n {
			lanes *= 2
		}
		return MeanGeometry{Lanes: lanes, Warps: 1, CTAs: 1}
	}
	if ceilDiv64(n, meanWarp) < meanWarps*meanMinPerThread {
		return MeanGeometry{Lanes: meanWarp, Warps: 1, CTAs: 1}
	}
	g := MeanGeometry{Lanes: meanWarp, Warps: meanWarps, CTAs: 1}
	perThread := ceilDiv64(n, meanWarp*meanWarps)
	if perThread >= meanMaxPerThread {
		target := int64(meanNumSMs * (meanThreadsPerSM / (meanWarp * meanWarps)))
		g.CTAs = int(max(min(target, ceilDiv64(perThread, meanMinPerThread)), ceilDiv64(perThread, meanMaxPerThread)))
	}
	return g
}

// MeanF32 is the float32 mean of a in torch's order (see MeanGeometryFor).
func MeanF32(a []float32) float32 {
	n := int64(len(a))
	if n == 0 {
		return float32(math.NaN()) // torch: NaN for an empty mean
	}
	g := MeanGeometryFor(n)
	threads := int64(g.Lanes * g.Warps)
	step := threads * int64(g.CTAs)
	partials := make([]float32, g.CTAs)
	v := make([]float32, threads)
	for c := int64(0); c < int64(g.CTAs); c++ {
		for t := int64(0); t < threads; t++ {
			var acc [4]float32
			idx := c*threads + t
			for idx+3*step < n {
				for k := int64(0); k < 4; k++ {
					acc[k] += a[idx+k*step]
				}
				idx += 4 * step
			}
			for k := 0; k < 4 && idx < n; k++ {
				acc[k] += a[idx]
				idx += step
			}
			v[t] = ((acc[0] + acc[1]) + acc[2]) + acc[3]
		}
		partials[c] = blockSum(v, g.Lanes, g.Warps)
	}
	sum := partials[0]
	if g.CTAs > 1 {
		for t := int64(0); t < threads; t++ {
			var s float32
			for i := t; i < int64(g.CTAs); i += threads {
				s += partials[i]
			}
			v[t] = s
		}
		sum = blockSum(v, g.Lanes, g.Warps)
	}
	factor := float32(1) / float32(n)
	return sum * factor
}

// blockSum reduces one value per thread of a 32 x warps block as torch does:
// block_y_reduce halves over the warps (row y adds row y+offset), then
// block_x_reduce combines the 32 lanes of row 0 by shfl_down by 1, 2, 4, 8,
// 16, of which lane 0's result is kept. It overwrites v.
func blockSum(v []float32, lanes, warps int) float32 {
	for off := warps / 2; off > 0; off /= 2 {
		for y := 0; y < off; y++ {
			for x := 0; x < lanes; x++ {
				v[y*lanes+x] += v[(y+off)*lanes+x]
			}
		}
	}
	// shfl_down reads lane t+off before any lane writes in that round; going
	// up in t reads each value before it is overwritten.
	for off := 1; off < lanes; off *= 2 {
		for t := 0; t+off < lanes; t++ {
			v[t] += v[t+off]
		}
	}
	return v[0]
}

func ceilDiv64(a, b int64) int64 { return (a + b - 1) / b }
