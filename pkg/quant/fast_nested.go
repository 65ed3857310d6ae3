package quant

import "sync"

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
// nestQuantize does.
func nestRange(codes []byte, nested []float32, absmax []float32, offset float32) {
	var buf [NestedBlockSize]float32
	for b := range nested {
		blk := absmax[b*NestedBlockSize : min((b+1)*NestedBlockSize, len(absmax))]
		x := buf[:len(blk)]
		for i, a := range blk {
			x[i] = float32(a - offset)
		}
		m := refBlockAbsmax(x, len(blk) < NestedBlockSize)
		scale := gpuRecip(m)
		out := codes[b*NestedBlockSize : b*NestedBlockSize+len(blk)]
		done := nestedCodesSIMD(out, x, scale)
		for i, v := range x[done:] {
			out[done+i] = nestedCodeFast(mulFTZ(v, scale))
		}
		nested[b] = m
	}
}
