package quant

import (
	"encoding/binary"
	"math"
	"sync"
	"unsafe"
)

// The fast kernels replace the decision tree by one table lookup on the float32
// bits of y. Entry hi (the top 16 bits of y) holds thr | lo<<16 | hi<<20: the
// code is lo while y's low 16 bits are <= thr and hi above, which is exact
// because no bucket of 2^16 neighbouring floats straddles two thresholds. The
// table is built from the reference decision tree (with flush-to-zero of a
// subnormal y), so it inherits its strict comparisons bit for bit.

type codeTable [1 << 16]uint32

var codeTables = sync.OnceValue(func() [2]*codeTable {
	return [2]*codeTable{buildCodeTable(nf4Code), buildCodeTable(fp4Code)}
})

func tableFor(t Type) *codeTable {
	if t == FP4 {
		return codeTables()[1]
	}
	return codeTables()[0]
}

func buildCodeTable(code func(float32) byte) *codeTable {
	g := func(b uint32) uint32 { return uint32(code(ftz(math.Float32frombits(b)))) }
	tab := new(codeTable)
	for hi := range uint32(1 << 16) {
		base := hi << 16
		c0 := g(base)
		if hi&0x7F80 == 0x7F80 { // ±Inf and NaN: never reach the fast path
			tab[hi] = 0xFFFF | c0<<16 | c0<<20
			continue
		}
		c1 := g(base | 0xFFFF)
		if c0 == c1 {
			tab[hi] = 0xFFFF | c0<<16 | c0<<20
			continue
		}
		lo, up := uint32(0), uint32(0xFFFF) // g(base|lo) == c0, g(base|up) != c0
		for up-lo > 1 {
			mid := (lo + up) / 2
			if g(base|mid) == c0 {
				lo = mid
			} else {
				up = mid
			}
		}
		tab[hi] = lo | c0<<16 | c1<<20
	}
	return tab
}

// lookup returns the code of y from its bits, branch-free.
func (t *codeTable) lookup(b uint32) uint32 {
	e := t[b>>16]
	above := ((e & 0xFFFF) - (b & 0xFFFF)) >> 31 // 1 when low bits > thr
	return e >> (16 + 4*above) & 0xF
}

var littleEndian = func() bool {
	x := uint16(1)
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// quantizeBlocksCPU quantizes the whole blocks in src (the last may be short)
// on the calling goroutine. first is the element index of src[0]. The SIMD
// kernels (fast_amd64.s, where the CPU has them) take the full blocks they
// can; the table-driven Go kernels below take the rest.
func quantizeBlocksCPU(packed []byte, absmax []float32, src []byte, dt DType, p Params, first int64) error {
	q := blockQuantizer{packed: packed, absmax: absmax, src: src, dt: dt, p: p, first: first,
		tab: tableFor(p.Type), code: p.Type.codeFunc()}
	start, err := q.simd()
	if err != nil {
		return err
	}
	n := len(src) / dt.Size()
	for b := start; b*p.BlockSize < n; b++ {
		if err := q.block(b); err != nil {
			return err
		}
	}
	return nil
}

// blockQuantizer holds one run of blocks and the scratch of the Go kernels.
type blockQuantizer struct {
	packed []byte
	absmax []float32
	src    []byte
	dt     DType
	p      Params
	first  int64
	tab    *codeTable
	code   func(float32) byte
	vals   []float32
}

// block quantizes block b with the Go kernels: the table-driven ones when the
// block is finite and free of subnormals, else the reference.
func (q *blockQuantizer) block(b int) error {
	es, bs := q.dt.Size(), q.p.BlockSize
	n := len(q.src) / es
	lo, hi := b*bs, min((b+1)*bs, n)
	out := q.packed[lo/2 : (hi+1)/2]
	blk := q.src[lo*es : hi*es]
	if q.dt == BF16 && littleEndian {
		if a, ok := fastBlockBF16(out, unsafe.Slice((*uint16)(unsafe.Pointer(&blk[0])), hi-lo), q.tab); ok {
			q.absmax[b] = a
			return nil
		}
	}
	if cap(q.vals) < hi-lo {
		q.vals = make([]float32, bs)
	}
	x := q.vals[:hi-lo]
	widenInto(x, blk, q.dt)
	if !q.p.AllowNonFinite {
		for i, v := range x {
			if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
				return &NonFiniteError{Index: q.first + int64(lo+i), Value: v}
			}
		}
	}
	if q.dt != BF16 {
		if a, ok := fastBlockF32(out, x, q.tab); ok {
			q.absmax[b] = a
			return nil
		}
	}
	q.absmax[b] = refQuantizeBlock(out, x, hi-lo < bs, q.code)
	return nil
}

func widenInto(x []float32, raw []byte, dt DType) {
	switch dt {
	case BF16:
		for i := range x {
			x[i] = bf16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	case F16:
		for i := range x {
			x[i] = f16ToF32(binary.LittleEndian.Uint16(raw[2*i:]))
		}
	default:
		for i := range x {
			x[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
		}
	}
}

// fastBlockBF16 quantizes one block of bfloat16 bit patterns when every value is
// finite and normal (or zero) and absmax is normal; otherwise it reports false
// and leaves the block to the reference path. Non-finite values are found there.
func fastBlockBF16(out []byte, x []uint16, tab *codeTable) (float32, bool) {
	var m uint16            // largest magnitude
	minNZ := uint16(0xFFFF) // smallest nonzero magnitude, minus one
	for _, v := range x {
		a := v & 0x7FFF
		m = max(m, a)
		minNZ = min(minNZ, a-1)
	}
	if m == 0 {
		clear(out) // all zero: scale +Inf, y NaN, code 0, pad too
		return 0, true
	}
	if m >= 0x7F80 || m < 0x0080 || minNZ < 0x007F {
		return 0, false
	}
	absmax := math.Float32frombits(uint32(m) << 16)
	scale := gpuRecip(absmax)
	n := len(x)
	out = out[:(n+1)/2]
	for i := range n / 2 {
		y0 := math.Float32frombits(uint32(x[2*i])<<16) * scale
		y1 := math.Float32frombits(uint32(x[2*i+1])<<16) * scale
		out[i] = byte(tab.lookup(math.Float32bits(y0))<<4 | tab.lookup(math.Float32bits(y1)))
	}
	if n&1 == 1 {
		y0 := math.Float32frombits(uint32(x[n-1])<<16) * scale
		out[n/2] = byte(tab.lookup(math.Float32bits(y0))<<4 | tab.lookup(0))
	}
	return absmax, true
}

// fastBlockF32 is fastBlockBF16 for values already widened to float32.
func fastBlockF32(out []byte, x []float32, tab *codeTable) (float32, bool) {
	var m, minNZ uint32 = 0, 0xFFFFFFFF
	for _, v := range x {
		a := math.Float32bits(v) & 0x7FFFFFFF
		m = max(m, a)
		minNZ = min(minNZ, a-1)
	}
	if m == 0 {
		clear(out)
		return 0, true
	}
	if m >= 0x7F800000 || m < 0x00800000 || minNZ < 0x007FFFFF {
		return 0, false
	}
	absmax := math.Float32frombits(m)
	scale := gpuRecip(absmax)
	n := len(x)
	for i := range n / 2 {
		y0 := float32(x[2*i] * scale)
		y1 := float32(x[2*i+1] * scale)
		out[i] = byte(tab.lookup(math.Float32bits(y0))<<4 | tab.lookup(math.Float32bits(y1)))
	}
	if n&1 == 1 {
		y0 := float32(x[n-1] * scale)
		out[n/2] = byte(tab.lookup(math.Float32bits(y0))<<4 | tab.lookup(0))
	}
	return absmax, true
}
