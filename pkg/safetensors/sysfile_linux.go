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

// punchHole frees the whole pages of f's [off, off+n) (the file keeps its
// size and reads zeros there), or does nothing where the file system cannot.
func punchHole(f *os.File, off, n int64) {
	const page = 4096
	start, end := (off+page-1)/page*page, (off+n)/page*page
	if end-start >= minPunch {
		unix.Fallocate(int(f.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, start, end-start)
	}
}

// preallocate allocates f's [off, off+n), extending its size to off+n if
// needed (fallocate mode 0): on tmpfs the pages themselves, zeroed; on disk
// file systems the blocks, as unwritten extents.
func preallocate(f *os.File, off, n int64) error {
	return unix.Fallocate(int(f.Fd()), 0, off, n)
}

// allocatesPages reports whether preallocate on f's file system allocates
// the pages themselves (tmpfs) rather than blocks on a device.
func allocatesPages(f *os.File) bool {
	var st unix.Statfs_t
	return unix.Fstatfs(int(f.Fd()), &st) == nil && st.Type == unix.TMPFS_MAGIC
}
