//go:build amd64 && !purego

package quant

import (
	"math"
	"sync"
	"unsafe"
)

// The AVX2 kernels (fast_amd64.s) run in two passes over a batch of whole
// blocks that stays in cache: statsU16/statsU32 find each block's largest and
// smallest nonzero magnitude; Go turns the largest into absmax and the scale
// (the GPU's reciprocal, rcp.go, from a table for 16-bit inputs) and marks the
// blocks the vector code must not take; then the quantization kernel computes
// y = x*scale (one IEEE float32 multiply, as the reference does) and walks the
// reference's decision tree, eight values a step. Blocks holding a
// NaN, an infinity or a float32 subnormal, or whose absmax is subnormal, go to
// the Go kernels afterwards and overwrite what the vector pass wrote there.

//go:noescape
func cpuid(leaf, sub uint32) (a, b, c, d uint32)

func xgetbv0() uint32

//go:noescape
func statsU16(src *uint16, nblocks, bs int, stats *uint64)

//go:noescape
func statsU32(src *uint32, nblocks, bs int, stats *uint64)

//go:noescape
func nf4BF16(dst *byte, src unsafe.Pointer, nblocks, bs int, scales *float32, consts *quantConsts)

//go:noescape
func nf4F16(dst *byte, src unsafe.Pointer, nblocks, bs int, scales *float32, consts *quantConsts)

//go:noescape
func nf4F32(dst *byte, src unsafe.Pointer, nblocks, bs int, scales *float32, consts *quantConsts)

//go:noescape
func fp4BF16(dst *byte, src unsafe.Pointer, nblocks, bs int, scales *float32, consts *quantConsts)

//go:noescape
func fp4F16(dst *byte, src unsafe.Pointer, nblocks, bs int, scales *float32, consts *quantConsts)

//go:noescape
func fp4F32(dst *byte, src unsafe.Pointer, nblocks, bs int, scales *float32, consts *quantConsts)

//go:noescape
func dequantBF16(dst *uint16, packed *byte, nblocks, bs int, absmax *float32, consts *dequantConsts)

//go:noescape
func dequantF16(dst *uint16, packed *byte, nblocks, bs int, absmax *float32, consts *dequantConsts)

// useSIMD selects the AVX2 kernels; tests turn it off to run the Go kernels.
var useSIMD = hasAVX2F16C()

// simdName names the kernels in use, for benchmarks and reports.
func simdName() string {
	if useSIMD {
		return "avx2"
	}
	return "go"
}

// hasAVX2F16C reports AVX2 and F16C on the CPU with the OS saving the YMM
// registers (every AVX2 CPU has F16C; both are checked).
func hasAVX2F16C() bool {
	maxLeaf, _, _, _ := cpuid(0, 0)
	if maxLeaf < 7 {
		return false
	}
	_, _, c1, _ := cpuid(1, 0)
	const osxsave, avx, f16c = 1 << 27, 1 << 28, 1 << 29
	if c1&osxsave == 0 || c1&avx == 0 || c1&f16c == 0 {
		return false
	}
	if xgetbv0()&6 != 6 { // XMM and YMM state enabled by the OS
		return false
	}
	_, b7, _, _ := cpuid(7, 0)
	return b7&(1<<5) != 0
}

// quantConsts is the constant table of the quantization kernels; the offsets
// are the K_* macros of fast_amd64.s.
type quantConsts struct {
	q      [4][8]float32 // the counted thresholds, broadcast (three used)
	lvl3   [8]float32    // next-level threshold by path
	lvl4   [8]float32
	abs    [8]uint32  // 0x7FFFFFFF
	negMin [8]float32 // -2^-126
	perm   [32]byte   // FP4: count + 8*sign -> code, per 128-bit lane
	shuf   [32]byte   // pair bytes -> packed positions, per lane
}

var quantConstTables = sync.OnceValue(func() [2]*quantConsts {
	return [2]*quantConsts{newQuantConsts(NF4), newQuantConsts(FP4)}
})

// newQuantConsts lays out the search (see fast_amd64.s): NF4's path after the
// count is code>>2 (table t[4r+1]), then code>>1 (t[2r]); FP4's is
// count>>1 + 4*sign (table t[2(r&3)]).
func newQuantConsts(t Type) *quantConsts {
	c := new(quantConsts)
	for j := range 8 {
		if t == NF4 {
			th := nf4Thresholds
			c.q[0][j], c.q[1][j], c.q[2][j] = th[3], th[7], th[11]
			c.lvl3[j] = th[4*(j&3)+1]
			c.lvl4[j] = th[2*j]
		} else {
			th := fp4Thresholds
			c.q[0][j], c.q[1][j], c.q[2][j] = th[1], th[3], th[5]
			c.lvl3[j] = th[2*(j&3)]
		}
		c.abs[j] = 0x7FFFFFFF
		c.negMin[j] = -0x1p-126
	}
	perm := fp4CountCodes()
	copy(c.perm[:], perm[:])
	copy(c.perm[16:], perm[:])
	const z = 0x80
	c.shuf = [32]byte{
		0, 2, z, z, 4, 6, z, z, 8, 10, z, z, 12, 14, z, z,
		z, z, 0, 2, z, z, 4, 6, z, z, 8, 10, z, z, 12, 14,
	}
	return c
}

// scaleTables holds the scale of every finite 16-bit absmax magnitude:
// [0] for bfloat16, [1] for IEEE half.
var scaleTables = sync.OnceValue(func() *[2][1 << 15]float32 {
	t := new([2][1 << 15]float32)
	for m := range uint16(1 << 15) {
		t[0][m] = gpuRecip(bf16ToF32(m))
		t[1][m] = gpuRecip(f16ToF32(m))
	}
	return t
})

// maxBatchBlocks and batchValues size one pass: about 32 KiB of bf16 input,
// so the second pass reads it from the first-level cache.
const (
	maxBatchBlocks = 512
	batchValues    = 16384
)

// simd quantizes the full blocks of q's run with the AVX2 kernels and returns
// how many blocks it did (0 when they are not available).
func (q *blockQuantizer) simd() (int, error) {
	if !useSIMD || !littleEndian {
		return 0, nil
	}
	es, bs := q.dt.Size(), q.p.BlockSize
	full := len(q.src) / es / bs
	if full == 0 {
		return 0, nil
	}
	consts := quantConstTables()[0]
	if q.p.Type == FP4 {
		consts = quantConstTables()[1]
	}
	var tab *[1 << 15]float32
	switch q.dt {
	case BF16:
		tab = &scaleTables()[0]
	case F16:
		tab = &scaleTables()[1]
	}
	batch := max(1, min(maxBatchBlocks, batchValues/bs))
	var stats [maxBatchBlocks]uint64
	var scales [maxBatchBlocks]float32
	nan := float32(math.NaN())
	for b0 := 0; b0 < full; b0 += batch {
		nb := min(batch, full-b0)
		src := unsafe.Pointer(&q.src[b0*bs*es])
		if es == 2 {
			statsU16((*uint16)(src), nb, bs, &stats[0])
		} else {
			statsU32((*uint32)(src), nb, bs, &stats[0])
		}
		odd := false
		am, sc := q.absmax[b0:b0+nb], scales[:nb]
		switch q.dt {
		case BF16:
			for i, st := range stats[:nb] {
				m, mn := uint32(st), uint32(st>>32) // largest magnitude; smallest minus one
				am[i], sc[i] = bf16ToF32(uint16(m)), tab[m&0x7FFF]
				if m >= 0x7F80 || m != 0 && (m < 0x0080 || mn < 0x007F) {
					odd, sc[i] = true, nan
				}
			}
		case F16: // every half is a normal float32 (or zero)
			for i, st := range stats[:nb] {
				m := uint32(st)
				am[i], sc[i] = f16ToF32(uint16(m)), tab[m&0x7FFF]
				if m >= 0x7C00 {
					odd, sc[i] = true, nan
				}
			}
		default:
			for i, st := range stats[:nb] {
				m, mn := uint32(st), uint32(st>>32)
				am[i] = math.Float32frombits(m)
				if m >= 0x7F800000 || m != 0 && (m < 0x00800000 || mn < 0x007FFFFF) {
					odd, sc[i] = true, nan
				} else {
					sc[i] = gpuRecip(am[i])
				}
			}
		}
		dst := &q.packed[b0*bs/2]
		switch { // direct calls, so that the scratch arrays stay on the stack
		case q.p.Type == NF4 && q.dt == BF16:
			nf4BF16(dst, src, nb, bs, &scales[0], consts)
		case q.p.Type == NF4 && q.dt == F16:
			nf4F16(dst, src, nb, bs, &scales[0], consts)
		case q.p.Type == NF4:
			nf4F32(dst, src, nb, bs, &scales[0], consts)
		case q.dt == BF16:
			fp4BF16(dst, src, nb, bs, &scales[0], consts)
		case q.dt == F16:
			fp4F16(dst, src, nb, bs, &scales[0], consts)
		default:
			fp4F32(dst, src, nb, bs, &scales[0], consts)
		}
		if odd {
			for i, s := range scales[:nb] {
				if s != s {
					if err := q.block(b0 + i); err != nil {
						return 0, err
					}
				}
			}
		}
	}
	return full, nil
}

// dequantConsts is the constant table of the dequantization kernels; the
// offsets are the D_* macros of fast_amd64.s.
type dequantConsts struct {
	book   [16]float32
	abs    [8]uint32
	maxSub [8]uint32
	sign   [8]uint32
	one    [8]uint32
	half   [8]uint32
	split  [32]byte
	nib    [32]byte
}

func newDequantConsts(book *[16]float32) *dequantConsts {
	c := &dequantConsts{book: *book}
	for j := range 8 {
		c.abs[j], c.maxSub[j], c.sign[j], c.one[j], c.half[j] = 0x7FFFFFFF, 0x007FFFFF, 0x80000000, 1, 0x7FFF
	}
	for l := range 2 {
		for k := range 8 {
			c.split[16*l+k], c.split[16*l+8+k] = byte(2*k), byte(2*k+1)
		}
	}
	for j := range c.nib {
		c.nib[j] = 0x0F
	}
	return c
}

// decodeBlocksSIMD writes the values of whole blocks (packed holds
// len(absmax)*bs/2 bytes) into out and reports whether it did; only 16-bit
// outputs have a kernel. Blocks whose absmax is not finite are redone in Go.
func (d *Decoder) decodeBlocksSIMD(out, packed []byte, absmax []float32) bool {
	if !useSIMD || !littleEndian || (d.out != BF16 && d.out != F16) || len(absmax) == 0 {
		return false
	}
	if d.consts == nil {
		d.consts = newDequantConsts(&d.table)
	}
	bs := d.p.BlockSize
	kernel := dequantBF16
	if d.out == F16 {
		kernel = dequantF16
	}
	kernel((*uint16)(unsafe.Pointer(&out[0])), &packed[0], len(absmax), bs, &absmax[0], d.consts)
	for b, a := range absmax {
		if math.Float32bits(a)&0x7F800000 == 0x7F800000 {
			d.decodeBlocksGo(out[b*bs*2:(b+1)*bs*2], packed[b*bs/2:(b+1)*bs/2], absmax[b:b+1])
		}
	}
	return true
}
