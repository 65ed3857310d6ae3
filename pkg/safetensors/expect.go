package safetensors

import (
	"fmt"
	"os"
)

// Expected is a tensor a spooling Writer is told to expect (Writer.Expect).
type Expected struct {
	TensorSpec
	// Exact says that the size is certain. A tensor whose size is a guess
	// (bitsandbytes' quant-state JSON, whose length depends on a value known
	// only once its weight has been quantized) keeps every tensor after it in
	// the file's order out of its final place until it has arrived.
	Exact bool
}

// expectation is the layout a Writer was told to expect, and what has
// arrived of it: a tensor goes straight to its final place in the file when
// every tensor before it in the file's order has a certain size (exact, or
// arrived) and the header's length, from the expected layout, holds.
type expectation struct {
	dataOff int64          // 8 + the expected header's length
	index   map[string]int // name → position in the expected file order
	dtype   []DType
	shape   [][]int64
	exact   []bool
	arrived []bool
	sizes   prefixSums // size of each tensor: the actual one once it has arrived
	unsure  prefixSums // 1 for each guessed size that has not arrived
	off     bool       // an arrival did not match: nothing more goes direct
}

func newExpectation(specs []Expected, metadata map[string]string) (*expectation, error) {
	entries := make([]TensorInfo, len(specs))
	exact := make(map[string]bool, len(specs))
	for i, s := range specs {
		size, err := ByteLen(s.DType, s.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", s.Name, err)
		}
		if _, dup := exact[s.Name]; dup {
			return nil, fmt.Errorf("tensor %q: %w: expected twice", s.Name, ErrDuplicate)
		}
		exact[s.Name] = s.Exact
		entries[i] = TensorInfo{Name: s.Name, DType: s.DType, Shape: s.Shape, End: size}
	}
	header, err := layout(entries, metadata)
	if err != nil {
		return nil, err
	}
	n := len(entries)
	e := &expectation{dataOff: 8 + int64(len(header)), index: make(map[string]int, n),
		dtype: make([]DType, n), shape: make([][]int64, n), exact: make([]bool, n), arrived: make([]bool, n),
		sizes: newPrefixSums(n), unsure: newPrefixSums(n)}
	for i, t := range entries {
		e.index[t.Name] = i
		e.dtype[i], e.shape[i], e.exact[i] = t.DType, cloneShape(t.Shape), exact[t.Name]
		e.sizes.add(i, t.Size())
		if !e.exact[i] {
			e.unsure.add(i, 1)
		}
	}
	return e, nil
}

// arrive records a tensor's arrival and returns the file offset it goes to
// when that is certain now.
func (e *expectation) arrive(name string, dtype DType, shape []int64, size int64) (int64, bool) {
	i, ok := e.index[name]
	switch {
	case e.off:
		return 0, false
	case !ok || e.arrived[i] || e.dtype[i] != dtype || (e.exact[i] && !equalShape(e.shape[i], shape)):
		// Not the layout expected: the header and every offset may differ.
		e.off = true
		return 0, false
	}
	e.arrived[i] = true
	if !e.exact[i] {
		e.sizes.add(i, size-e.sizes.at(i))
		e.unsure.add(i, -1)
	}
	if e.unsure.before(i) > 0 {
		return 0, false
	}
	return e.dataOff + e.sizes.before(i), true
}

// prefixSums is a Fenwick tree: point updates and sums of a prefix, both in
// O(log n), for layouts of many thousand tensors arriving in any order.
type prefixSums struct{ t, v []int64 }

func newPrefixSums(n int) prefixSums { return prefixSums{t: make([]int64, n+1), v: make([]int64, n)} }

func (p *prefixSums) add(i int, d int64) {
	p.v[i] += d
	for j := i + 1; j < len(p.t); j += j & -j {
		p.t[j] += d
	}
}

func (p *prefixSums) at(i int) int64 { return p.v[i] }

// before returns the sum of the values at positions below i.
func (p *prefixSums) before(i int) int64 {
	var s int64
	for j := i; j > 0; j -= j & -j {
		s += p.t[j]
	}
	return s
}

// Expect tells a Writer made by NewWriter which tensors to expect, so that
// each one whose place in the file is certain when it arrives is written
// there at once instead of to the spool: when the tensors arrive in the
// file's order (name order within a dtype, as a checkpoint's tensors do),
// Close has only the header to write. Anything else may arrive too: a
// tensor not expected, or different, ends the direct writes, and Close
// checks every tensor's place against the layout of what did arrive,
// assembling the file anew from where the bytes are when one is not at its
// place. Call it before the first Add.
func (w *Writer) Expect(specs []Expected) error {
	if w.err != nil {
		return w.err
	}
	if w.planned || len(w.entries) > 0 || w.exp != nil {
		return fmt.Errorf("%s: %w: Expect comes once, before the first Add, on a writer made by NewWriter", w.path, ErrIncomplete)
	}
	e, err := newExpectation(specs, w.metadata)
	if err != nil {
		return fmt.Errorf("%s: %w", w.path, err)
	}
	w.exp = e
	w.wb = newWriteback(w.out)
	w.spw.wrote = func(_ *os.File, off, n int64) { w.wb.wrote(off, n) }
	return nil
}

// DirectBytes returns how many payload bytes went straight to their place in
// the file rather than to the spool (see Expect).
func (w *Writer) DirectBytes() int64 {
	var n int64
	for i, direct := range w.direct { // spool mode only: nil when planned
		if direct {
			n += w.entries[i].Size()
		}
	}
	return n
}

// writeback asks the kernel, from a goroutine of its own, to start writing a
// file's finished ranges to the device (startWriteback) once writebackEvery
// bytes have been written since the last request, so that the fsync at Close
// finds little left. Queueing blocks (tens of ms on ext4) while the writing
// goroutine could go on, hence the goroutine.
type writeback struct {
	f       *os.File
	ch      chan [2]int64
	done    chan struct{}
	lo, hi  int64 // the range written since the last request
	pending int64 // bytes in it
	stopped bool  // ch is closed
}

func newWriteback(f *os.File) *writeback {
	wb := &writeback{f: f, ch: make(chan [2]int64, 64), done: make(chan struct{}), lo: -1}
	go func() {
		for r := range wb.ch {
			startWriteback(f, r[0], r[1]-r[0])
		}
		close(wb.done)
	}()
	return wb
}

// wrote records that [off, off+n) was written; one goroutine calls it.
func (wb *writeback) wrote(off, n int64) {
	if wb.lo < 0 || off < wb.lo {
		wb.lo = off
	}
	wb.hi = max(wb.hi, off+n)
	if wb.pending += n; wb.pending >= writebackEvery {
		wb.ch <- [2]int64{wb.lo, wb.hi}
		wb.lo, wb.hi, wb.pending = -1, 0, 0
	}
}

// stop waits for the requests queued; safe to call more than once.
func (wb *writeback) stop() {
	if !wb.stopped {
		wb.stopped = true
		close(wb.ch)
	}
	<-wb.done
}
