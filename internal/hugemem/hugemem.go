// Package hugemem allocates large, long-lived byte buffers outside the Go
// heap, backed by transparent huge pages where the kernel grants them.
//
// A stage's pipeline buffers (tens of MiB) are touched once each and then
// reused for the whole stream. Touching fresh memory costs a page fault per
// 4 KiB page; on the 2-core development VM one such fault costs about 11 µs
// (0.35 GB/s to first touch), against about 1 µs per 4 KiB for a 2 MiB huge
// page (docs/BENCHMARKS.md, "The pipeline at pipe speed"). Memory from the Go
// heap follows the system's THP setting, which is usually "madvise", so the
// Go heap does not get huge pages; a mapping of our own asks for them.
//
// Memory from Alloc is not seen by the garbage collector: it must hold no Go
// pointers, and Free must be called once nothing uses it any more.
package hugemem

// hugePage is the size and alignment asked for.
const hugePage = 2 << 20

// Buffer is memory from Alloc.
type Buffer struct {
	b   []byte // what the caller uses
	raw []byte // what was mapped, for Free; nil when b is from the Go heap
}

// Bytes returns the buffer's memory, len n as asked of Alloc.
func (m *Buffer) Bytes() []byte { return m.b }

// Alloc returns n bytes of zeroed memory, 2 MiB-aligned and advised as huge
// pages where the platform allows, else from the Go heap.
func Alloc(n int) *Buffer {
	if b, raw := alloc(n); b != nil {
		return &Buffer{b: b, raw: raw}
	}
	return &Buffer{b: make([]byte, n)}
}

// Free gives the memory back. Nothing may use the buffer's bytes afterwards:
// a mapping is unmapped, and a use after Free faults.
func (m *Buffer) Free() {
	if m == nil || m.b == nil {
		return
	}
	if m.raw != nil {
		free(m.raw)
	}
	m.b, m.raw = nil, nil
}
