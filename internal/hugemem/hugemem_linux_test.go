package hugemem

import (
	"os"
	"strconv"
	"strings"
	"testing"
)

// vmSize is the process's mapped address space in KiB (/proc/self/status).
func vmSize(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skipf("no /proc/self/status: %v", err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmSize:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kb
		}
	}
	t.Skip("no VmSize in /proc/self/status")
	return 0
}

// TestFreeUnmaps: Free gives the mapping back, head and tail trimmed at
// Alloc, so allocating and freeing 64 x 64 MiB leaves the address space as
// it was (syscall.Munmap would refuse the trimmed slices and leak them all).
func TestFreeUnmaps(t *testing.T) {
	before := vmSize(t)
	for range 64 {
		m := Alloc(64 << 20)
		m.Bytes()[0] = 1
		m.Free()
	}
	if grew := vmSize(t) - before; grew > 256<<10 {
		t.Fatalf("address space grew by %d MiB over 64 Alloc/Free of 64 MiB", grew>>10)
	}
}
