package safetensors

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing f's dirty pages in
// [off, off+n) to the device without waiting for them, so that the fsync at
// Close finds most of the file written already. It is a hint: errors are
// ignored (fsync reports any that matter).
func startWriteback(f *os.File, off, n int64) {
	unix.SyncFileRange(int(f.Fd()), off, n, unix.SYNC_FILE_RANGE_WRITE)
}
