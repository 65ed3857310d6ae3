package hugemem

import (
	"testing"
	"unsafe"
)

func TestAlloc(t *testing.T) {
	for _, n := range []int{1, 4096, hugePage - 1, hugePage, 3*hugePage + 17} {
		m := Alloc(n)
		b := m.Bytes()
		if len(b) != n || cap(b) != n {
			t.Fatalf("Alloc(%d): len %d cap %d", n, len(b), cap(b))
		}
		for i := range b {
			if b[i] != 0 {
				t.Fatalf("Alloc(%d): byte %d is %d, want 0", n, i, b[i])
			}
		}
		for i := range b {
			b[i] = byte(i)
		}
		if m.raw != nil && uintptr(unsafe.Pointer(&b[0]))%hugePage != 0 {
			t.Errorf("Alloc(%d) at %p: not aligned to %d", n, &b[0], hugePage)
		}
		m.Free()
		m.Free() // twice is harmless
		if m.Bytes() != nil {
			t.Errorf("Bytes after Free: not nil")
		}
	}
}
