package quant

import (
	"bytes"
	"compress/gzip"
	_ "embed"
	"io"
	"math"
	"sync"

	"github.com/nf4pipe/nf4pipe/internal/hugemem"
)

// bitsandbytes builds its CUDA kernels with --use_fast_math, so the scale of a
// block, 1.0f/absmax, is rcp.approx.ftz.f32: a hardware approximation that
// differs from the correctly rounded reciprocal by one unit in the last place for
// about 13% of mantissas, and flushes subnormal inputs and results to zero. The
// difference decides the code whenever x*scale lands on a threshold, which FP4's
// rational thresholds make common. rcpdelta.bin.gz holds that difference for all
// 2^23 mantissas, measured on an NVIDIA H200 (testdata/gpu/rcpdelta.cu): two
// bits each, 0 equal, 1 one ulp above, 3 one ulp below.
//
//go:embed rcpdelta.bin.gz
var rcpDeltaGz []byte

var rcpDelta = sync.OnceValue(func() []byte {
	zr, err := gzip.NewReader(bytes.NewReader(rcpDeltaGz))
	if err != nil {
		panic("quant: embedded reciprocal table: " + err.Error()) // build-time data, never input
	}
	// Read into the table's exact size, in a huge page: io.ReadAll would
	// grow its buffer through twice the memory, and each new 4 KiB page is a
	// page fault (internal/hugemem). The table lives as long as the process.
	b := hugemem.Alloc(1 << 21).Bytes()
	if _, err := io.ReadFull(zr, b); err != nil {
		panic("quant: embedded reciprocal table is corrupt")
	}
	if n, _ := zr.Read(make([]byte, 1)); n != 0 {
		panic("quant: embedded reciprocal table is corrupt")
	}
	return b
})

// gpuRecip returns rcp.approx.ftz.f32(a) as the GPU computes it.
func gpuRecip(a float32) float32 {
	b := math.Float32bits(a)
	sign := b & 0x80000000
	e := b >> 23 & 0xFF
	switch {
	case e == 0: // zero or subnormal, flushed: 1/±0
		return math.Float32frombits(sign | 0x7F800000)
	case e == 0xFF: // ±Inf -> ±0, NaN stays NaN
		if b&0x7FFFFF != 0 {
			return a
		}
		return math.Float32frombits(sign)
	}
	m := b & 0x7FFFFF
	// The reciprocal of 1.m, correctly rounded, then nudged by the measured delta.
	one := math.Float32frombits(0x3F800000 | m)
	r := math.Float32bits(float32(1) / one)
	switch rcpDelta()[m>>2] >> (2 * (m & 3)) & 3 {
	case 1:
		r++
	case 3:
		r--
	}
	// 1/(2^k * 1.m) = 2^-k / 1.m: shift the exponent, flushing a subnormal result.
	re := int(r>>23&0xFF) - (int(e) - 127)
	if re <= 0 {
		return math.Float32frombits(sign)
	}
	return math.Float32frombits(sign | uint32(re)<<23 | r&0x7FFFFF)
}
