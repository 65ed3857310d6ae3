package quant

import "math"

// This file is the reference: the literal bitsandbytes algorithm, one value at a
// time, with no tables. The fast kernels must agree with it bit for bit; the
// fuzz tests hold them to that. It also serves blocks the fast kernels leave
// alone (non-finite values, absmax so small that 1/absmax overflows).

// refBlockAbsmax is the block maximum of |x| as bitsandbytes' CUDA kernel takes
// it: fmaxf ignores NaN, the running maximum starts at -FLT_MAX, and a short
// last block also sees the zeros its load pads with.
func refBlockAbsmax(x []float32, short bool) float32 {
	m := float32(-math.MaxFloat32)
	if short {
		m = 0
	}
	for _, v := range x {
		if a := ftz(float32(math.Abs(float64(v)))); a > m {
			m = a
		}
	}
	return m
}

// ftz flushes a subnormal to a zero of its sign, as fast-math CUDA code does to
// the operands and results of its float32 arithmetic.
func ftz(f float32) float32 {
	b := math.Float32bits(f)
	if b&0x7F800000 == 0 {
		return math.Float32frombits(b & 0x80000000)
	}
	return f
}

// mulFTZ is a float32 multiply with flush-to-zero of operands and result.
func mulFTZ(a, b float32) float32 { return ftz(float32(ftz(a) * ftz(b))) }

// refQuantizeBlock writes the codes of one block (len(x) <= blocksize) into
// packed, which holds ceil(len(x)/2) bytes, and returns its absmax.
func refQuantizeBlock(packed []byte, x []float32, short bool, code func(float32) byte) float32 {
	absmax := refBlockAbsmax(x, short)
	scale := gpuRecip(absmax)
	for i := range packed {
		packed[i] = 0
	}
	for j, v := range x {
		c := code(mulFTZ(v, scale))
		if j&1 == 0 {
			packed[j/2] = c << 4
		} else {
			packed[j/2] |= c
		}
	}
	if len(x)&1 == 1 {
		// The kernel pads its load with zeros and packs the pad's code too.
		packed[len(x)/2] |= code(mulFTZ(0, scale))
	}
	return absmax
}

// refQuantize quantizes a whole tensor held as float32 values, without double
// quantization: packed codes and one float32 absmax per block.
func refQuantize(x []float32, t Type, blocksize int) (packed []byte, absmax []float32) {
	n := len(x)
	packed = make([]byte, (n+1)/2)
	code := t.codeFunc()
	for off := 0; off < n; off += blocksize {
		end := min(off+blocksize, n)
		absmax = append(absmax, refQuantizeBlock(packed[off/2:(end+1)/2], x[off:end], end-off < blocksize, code))
	}
	return packed, absmax
}

// absmaxMean is the double-quantization offset: bitsandbytes takes it as
// absmax.mean() in torch on the GPU, which MeanF32 replays (mean.go).
func absmaxMean(absmax []float32) float32 { return MeanF32(absmax) }

// nestQuantize is double quantization of the absmax values given their offset:
// 8-bit codes of the signed dynamic map over blocks of NestedBlockSize, and one
// float32 absmax per such block. It is shared by every backend: it is a small
// fraction of the work.
func nestQuantize(codes []byte, nested []float32, absmax []float32, offset float32) {
	buf := make([]float32, NestedBlockSize)
	for b := 0; b*NestedBlockSize < len(absmax); b++ {
		blk := absmax[b*NestedBlockSize : min((b+1)*NestedBlockSize, len(absmax))]
		x := buf[:len(blk)]
		for i, a := range blk {
			x[i] = float32(a - offset)
		}
		m := refBlockAbsmax(x, len(blk) < NestedBlockSize)
		scale := gpuRecip(m)
		for i, v := range x {
			codes[b*NestedBlockSize+i] = nestedCode(&NestedMap, mulFTZ(v, scale))
		}
		nested[b] = m
	}
}

// NestDequantize recovers float32 absmax values from double-quantized codes:
// NestedMap[code] * nested absmax + offset, each step rounded to float32.
func NestDequantize(dst []float32, codes []byte, nested []float32, offset float32) {
	for i, c := range codes {
		dst[i] = float32(mulFTZ(NestedMap[c], nested[i/NestedBlockSize]) + offset)
	}
}
