package verify

import (
	"encoding/binary"
	"fmt"
	"math"
	"runtime"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// chunkWork is one chunk of a 4-bit tensor in flight: its buffers, which are
// reused from chunk to chunk and tensor to tensor, and its outcome.
type chunkWork struct {
	refBuf, packed, amaxRaw []byte
	x, amax, nested         []float32
	sums                    blockSums

	e0, e1  int64    // elements [e0, e1)
	nblocks int      // blocks in the chunk
	err     error    // an I/O failure: verification stops
	fail    *Finding // the tensor fails here (absmax checks); later chunks do not count
	bad     int64    // codes outside their cell
	badAt   int64    // element index of the first, -1 if none
}

// tensorJob is what every chunk of one tensor shares (read only).
type tensorJob struct {
	qt      *quantTensor
	ref     *refTensor
	k       *kernel
	step    int64 // elements per chunk
	compare bool
}

// workers is the number of goroutines that compare chunks.
func (c *checker) workers() int {
	if c.threads > 0 {
		return c.threads
	}
	return runtime.GOMAXPROCS(0)
}

// eachChunk runs job on chunks 0..n-1 and hands each to use in chunk order;
// use returns false to stop (chunks already started are waited for, not
// used). With more than one worker, up to workers+1 chunks are in flight
// (each on its own goroutine, with its own buffers), so memory is bounded by
// the worker count, never by the tensor size. Results do not depend on the
// schedule: every chunk is computed alone and consumed in order.
func (c *checker) eachChunk(n int, job func(*chunkWork, int), use func(*chunkWork) bool) {
	w := c.workers()
	if w <= 1 || n == 1 {
		cw := c.work(0)
		for i := range n {
			job(cw, i)
			if !use(cw) {
				return
			}
		}
		return
	}
	window := min(n, w+1)
	done := make([]chan struct{}, window)
	next := 0
	launch := func(i int) {
		ch := make(chan struct{})
		done[i%window] = ch
		cw := c.work(i % window)
		go func() {
			defer close(ch)
			job(cw, i)
		}()
	}
	for i := range n {
		for next < n && next < i+window {
			launch(next)
			next++
		}
		<-done[i%window]
		if !use(c.work(i % window)) {
			for j := i + 1; j < next; j++ {
				<-done[j%window]
			}
			return
		}
	}
}

// work returns the i'th set of chunk buffers.
func (c *checker) work(i int) *chunkWork {
	for len(c.works) <= i {
		c.works = append(c.works, &chunkWork{})
	}
	return c.works[i]
}

// chunk checks and compares chunk i of the tensor; it touches only w and
// reads j, so chunks run concurrently.
func (j *tensorJob) chunk(w *chunkWork, i int) {
	qt, t := j.qt, j.qt.t
	q := t.Quant
	n := t.NumElements()
	bs := int64(q.BlockSize)
	w.e0 = int64(i) * j.step
	w.e1 = min(w.e0+j.step, n)
	w.err, w.fail, w.bad, w.badAt = nil, nil, 0, -1
	e0, e1 := w.e0, w.e1
	b0, b1 := e0/bs, (e1+bs-1)/bs
	w.nblocks = int(b1 - b0)
	fail := func(kind, format string, args ...any) {
		w.fail = &Finding{Tensor: t.Name, Kind: kind, Detail: fmt.Sprintf(format, args...)}
	}
	if w.err = w.loadAbsmax(qt, b0, b1); w.err != nil {
		return
	}
	if i, v, what := firstBadAbsmax(w.amax, w.nested, q.DoubleQuant); i >= 0 {
		idx := b0 + int64(i)
		if what == "nested absmax" {
			idx = b0/quant.NestedBlockSize + int64(i)
		}
		fail(KindAbsmax, "%s %d is %v", what, idx, v)
		return
	}
	if !j.compare {
		return
	}
	ref := j.ref
	w.packed = grow(w.packed, int((e1-e0+1)/2))
	if w.err = readAt(qt.packed, w.packed, e0/2, "packed codes", t.Name); w.err != nil {
		return
	}
	sz := int64(ref.dtype.Size())
	w.refBuf = grow(w.refBuf, int((e1-e0)*sz))
	if w.err = readAt(ref.r, w.refBuf, e0*sz, "reference", t.Name); w.err != nil {
		return
	}
	w.compare(j.k, ref.dtype)
	if b, detail := w.absmaxMismatch(q); b >= 0 {
		fail(KindAbsmax, "block %d: %s: the absmax does not belong to this tensor", b0+int64(b), detail)
	}
}

// compare fills w.sums from the chunk's reference bytes and codes, and counts
// the codes outside their cell.
func (w *chunkWork) compare(k *kernel, dt tensorstream.DType) {
	const sign = 1 << 31
	s := &w.sums
	s.reset(w.nblocks)
	bs := k.bs
	n := int(w.e1 - w.e0)
	done := 0 // blocks compared by the vector kernel; their x is not widened
	if k.fast {
		done = k.fastBF16(s, w.refBuf, w.packed, w.amax, n/bs)
	}
	// the rest (all of it without the vector kernel), and room for one block
	// of the vector kernel's to widen for a rescan
	rest := n - done*bs
	w.x = grow(w.x, rest+bs)
	widen(w.x[:rest], w.refBuf[done*bs*dt.Size():], dt)
	k.blocks(s, done, w.x[:rest], w.packed[done*bs/2:], w.amax[done:])
	for b := range w.nblocks {
		if *s.at(b, fInside)&sign != 0 {
			continue
		}
		xs := w.blockValues(k, b, dt, done)
		nb, at := k.strays(w.e0+int64(b*bs), xs, w.packed[b*bs/2:], s.refMax[b])
		if nb > 0 && w.bad == 0 {
			w.badAt = at
		}
		w.bad += nb
	}
}

// blockValues returns block b's reference values as float32.
func (w *chunkWork) blockValues(k *kernel, b int, dt tensorstream.DType, done int) []float32 {
	bs := k.bs
	rest := int(w.e1-w.e0) - done*bs
	if b >= done {
		i := (b - done) * bs
		return w.x[i:min(i+bs, rest)]
	}
	xs := w.x[rest : rest+bs]
	widen(xs, w.refBuf[b*bs*dt.Size():], dt)
	return xs
}

// loadAbsmax reads and dequantizes the absmax of blocks [b0, b1) into w.amax;
// with double quantization w.nested holds the nested absmax it used.
func (w *chunkWork) loadAbsmax(qt *quantTensor, b0, b1 int64) error {
	q, name := qt.t.Quant, qt.t.Name
	nb := int(b1 - b0)
	w.amax = grow(w.amax, nb)
	if !q.DoubleQuant {
		w.amaxRaw = grow(w.amaxRaw, 4*nb)
		w.nested = w.nested[:0]
		if err := readAt(qt.absmax, w.amaxRaw, 4*b0, "absmax", name); err != nil {
			return err
		}
		for i := range w.amax {
			w.amax[i] = math.Float32frombits(binary.LittleEndian.Uint32(w.amaxRaw[4*i:]))
		}
		return nil
	}
	nbs := int64(quant.NestedBlockSize)
	n0, n1 := b0/nbs, (b1+nbs-1)/nbs
	w.amaxRaw = grow(w.amaxRaw, max(nb, int(4*(n1-n0))))
	if err := readAt(qt.nested, w.amaxRaw[:4*(n1-n0)], 4*n0, "nested absmax", name); err != nil {
		return err
	}
	w.nested = grow(w.nested, int(n1-n0))
	for i := range w.nested {
		w.nested[i] = math.Float32frombits(binary.LittleEndian.Uint32(w.amaxRaw[4*i:]))
	}
	codes := w.amaxRaw[:nb]
	if err := readAt(qt.absmax, codes, b0, "absmax codes", name); err != nil {
		return err
	}
	quant.NestDequantize(w.amax, codes, w.nested, q.NestedOffset)
	return nil
}

// absmaxMismatch compares the stored absmax of the chunk's blocks (w.amax,
// and with double quantization the codes and nested absmax they came from)
// with each block's max |x| in the reference. A plain absmax must be that
// maximum (to a relative 1e-6, or zero where it is subnormal: flush to zero);
// a double-quantized one must have the 8-bit code whose cell of the nested map
// holds (max - offset) / nested absmax. It returns the first bad block, or -1.
func (w *chunkWork) absmaxMismatch(q *tensorstream.QuantState) (int, string) {
	refMax := w.sums.refMax[:w.nblocks]
	if !q.DoubleQuant {
		for b, m := range refMax {
			a := w.amax[b]
			if math.Abs(float64(a)-float64(m)) > 1e-6*float64(m) && !(ftz(m) == 0 && a == 0) {
				return b, fmt.Sprintf("stored absmax %g, reference max |x| %g", a, m)
			}
		}
		return -1, ""
	}
	nc := nestedCells()
	codes := w.amaxRaw[:len(refMax)]
	for b, m := range refMax {
		n := w.nested[b/quant.NestedBlockSize]
		if n == 0 {
			continue
		}
		y := (float64(m) - float64(q.NestedOffset)) / float64(n)
		if code := codes[b]; y < nc.lo[code] || y > nc.hi[code] {
			return b, fmt.Sprintf("absmax code %d (%g), reference max |x| %g", code, w.amax[b], m)
		}
	}
	return -1, ""
}
