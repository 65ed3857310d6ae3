package quant

import (
	"math"
	"sync"
)

// Double quantization is 1/64 of the values at the default block size, but
// the reference search (nestedCode) branches on the data seven times a value,
// which made it cost as much as the 4-bit kernels. nestedCodeFast is the same
// search without data-dependent branches, and nestQuantizeFast spreads the
// nested blocks over goroutines.

// nestedCodeFast equals nestedCode(&NestedMap, x) for every x. The search
// only moves the pivot; the neighbours the reference tracks on the way (lo,
// hi, lower, upper) are always pivot-1 (or 0), pivot+1 and their map values,
// whatever the comparisons answer (TestNestedSearchNeighbours walks all 128
// paths).
func nestedCodeFast(x float32) byte {
	m := &NestedMap
	p := 127
	for i := 64; i > 0; i >>= 1 {
		d := -i
		if x > m[p] {
			d = i
		}
		p += d
	}
	// p is in [0, 254].
	v := m[p]
	hi, lo := p+1, max(p-1, 0)
	if x > v {
		if x > float32(float32(m[hi]+v)*0.5) {
			return byte(hi)
		}
		return byte(p)
	}
	if x < float32(float32(m[lo]+v)*0.5) {
		return byte(lo)
	}
	return byte(p)
}

// The code of the nested search is a non-decreasing function of x: the
// search's final pivot is (binary search over a sorted map), it is always even,
// so its cell is (m[p-1], m[p+1]], and inside the cell the code steps from p-1
// to p to p+1 at the two rounded midpoints. So, as for the 4-bit codes, a
// table over the top 16 bits of an order-preserving key of x holds the code
// below and above the one transition a bucket may hold, found by bisection
// with the reference search itself. Building it checks that no bucket holds
// more than one step; TestNestedTable compares it with the reference around
// every transition and at random.

// nestedKey maps float32 bits to a uint32 in the floats' order (-NaN < -Inf <
// ... < -0 < +0 < ... < +Inf < +NaN).
func nestedKey(b uint32) uint32 { return b ^ (uint32(int32(b)>>31) | 0x80000000) }

// nestedUnkey inverts nestedKey.
func nestedUnkey(k uint32) uint32 {
	if k&0x80000000 != 0 {
		return k &^ 0x80000000
	}
	return ^k
}

type nestedTab [1 << 16]uint32 // thr | below<<16 | above<<24

var nestedTable = sync.OnceValue(func() *nestedTab {
	code := func(k uint32) uint32 { return uint32(nestedCode(&NestedMap, math.Float32frombits(nestedUnkey(k)))) }
	t := new(nestedTab)
	for h := range uint32(1 << 16) {
		base := h << 16
		c0, c1 := code(base), code(base|0xFFFF)
		if c0 == c1 {
			t[h] = 0xFFFF | c0<<16 | c0<<24
			continue
		}
		lo, up := uint32(0), uint32(0xFFFF) // code(base|lo) == c0, code(base|up) != c0
		for up-lo > 1 {
			mid := (lo + up) / 2
			if code(base|mid) == c0 {
				lo = mid
			} else {
				up = mid
			}
		}
		if c1 != c0+1 && !math.IsNaN(float64(math.Float32frombits(nestedUnkey(base|0xFFFF)))) {
			return nil // more than one step in a bucket: use the search
		}
		t[h] = lo | c0<<16 | c1<<24
	}
	return t
})

// code returns nestedCode(&NestedMap, x) from the bits of x.
func (t *nestedTab) code(b uint32) byte {
	k := nestedKey(b)
	e := t[k>>16]
	above := ((e & 0xFFFF) - (k & 0xFFFF)) >> 31 // 1 when k's low bits > thr
	return byte(e >> (16 + 8*above))
}

// minNestedBlocksPerThread keeps goroutine start-up small next to the work.
const minNestedBlocksPerThread = 64

// nestQuantizeFast is nestQuantize on up to threads goroutines.
func nestQuantizeFast(codes []byte, nested []float32, absmax []float32, offset float32, threads int) {
	nb := len(nested)
	workers := min(threads, nb/minNestedBlocksPerThread)
	if workers <= 1 {
		nestRange(codes, nested, absmax, offset)
		return
	}
	per := (nb + workers - 1) / workers
	var wg sync.WaitGroup
	for w := range workers {
		b0, b1 := w*per, min((w+1)*per, nb)
		if b0 >= b1 {
			break
		}
		e0, e1 := b0*NestedBlockSize, min(b1*NestedBlockSize, len(absmax))
		wg.Add(1)
		go func() {
			defer wg.Done()
			nestRange(codes[e0:e1], nested[b0:b1], absmax[e0:e1], offset)
		}()
	}
	wg.Wait()
}

// nestRange double-quantizes whole nested blocks (the last may be short), as
// nestQuantize does, with branch-free flushing and maximum.
func nestRange(codes []byte, nested []float32, absmax []float32, offset float32) {
	var buf [NestedBlockSize]float32
	tab := nestedTable()
	for b := range nested {
		blk := absmax[b*NestedBlockSize : min((b+1)*NestedBlockSize, len(absmax))]
		x := buf[:len(blk)]
		var mb uint32 // largest flushed magnitude, as bits
		for i, a := range blk {
			v := float32(a - offset)
			x[i] = v
			mb = max(mb, ftzBits(math.Float32bits(v))&0x7FFFFFFF)
		}
		m := math.Float32frombits(mb)
		if mb > 0x7F800000 { // a NaN, which the reference's maximum skips
			m = refBlockAbsmax(x, len(blk) < NestedBlockSize)
		}
		scale := gpuRecip(m)
		nested[b] = m
		out := codes[b*NestedBlockSize : b*NestedBlockSize+len(blk)]
		if tab == nil || math.IsNaN(float64(scale)) {
			for i, v := range x {
				out[i] = nestedCodeFast(mulFTZ(v, scale))
			}
			continue
		}
		// gpuRecip's result is never subnormal, so only x and y need flushing.
		for i, v := range x {
			y := math.Float32frombits(ftzBits(math.Float32bits(v))) * scale
			out[i] = tab.code(ftzBits(math.Float32bits(y)))
		}
	}
}

// ftzBits flushes a subnormal to a zero of its sign, without a branch.
func ftzBits(b uint32) uint32 {
	zero := uint32(int32(b>>23&0xFF-1) >> 31) // all ones when the exponent is 0
	return b &^ (zero & 0x7FFFFFFF)
}

// NestedCodeTable returns the table behind the double-quantization codes, for
// kernels that look codes up the same way (kernels/nf4.cu, nested_code): entry
// h holds, for the keys k with k>>16 == h (k the order-preserving key of the
// float32 bits: b ^ (sign-fill(b) | 1<<31)), the low 16 bits of the one
// threshold in the bucket (0xFFFF if none), the code of keys at or below it
// in bits 16-23 and of keys above it in bits 24-31. Its codes equal the
// reference search's for all 2^32 float32 values (TestExhaustiveNestedTable).
// It is nil if the table could not be built; the caller then must not use it.
func NestedCodeTable() []uint32 {
	t := nestedTable()
	if t == nil {
		return nil
	}
	return t[:]
}
