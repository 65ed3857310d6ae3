package hugemem

import (
	"syscall"
	"unsafe"
)

// alloc maps n bytes rounded up to whole huge pages, aligned to a huge page
// (mapped one huge page larger, the unaligned head and tail unmapped again),
// and advises them as huge pages. It returns nil when mapping fails.
func alloc(n int) (b, raw []byte) {
	if n <= 0 {
		return nil, nil
	}
	size := (n + hugePage - 1) &^ (hugePage - 1)
	m, err := syscall.Mmap(-1, 0, size+hugePage, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_PRIVATE|syscall.MAP_ANONYMOUS)
	if err != nil {
		return nil, nil
	}
	head := int(-uintptr(unsafe.Pointer(unsafe.SliceData(m))) & (hugePage - 1))
	if head > 0 {
		munmap(m[:head])
	}
	if tail := hugePage - head; tail > 0 {
		munmap(m[head+size:])
	}
	raw = m[head : head+size : head+size]
	_ = syscall.Madvise(raw, 14) // MADV_HUGEPAGE; where THP is off the memory works as it is
	return raw[:n:n], raw
}

func free(raw []byte) { munmap(raw) }

// munmap unmaps b's pages with the system call itself: syscall.Munmap
// accepts only a whole mapping that syscall.Mmap returned, and refuses (EINVAL)
// the trimmed head, tail and aligned middle this package works with.
func munmap(b []byte) {
	if len(b) > 0 {
		_, _, _ = syscall.Syscall(syscall.SYS_MUNMAP, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)), 0)
	}
}
