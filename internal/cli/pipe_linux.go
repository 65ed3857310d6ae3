package cli

import (
	"os"
	"syscall"
)

const fSetPipeSz = 1031 // F_SETPIPE_SZ, Linux 2.6.35+

// GrowPipe asks the kernel for a pipe buffer of size bytes on f when f is a
// pipe, and returns the size granted (0 when f is not a pipe or the call
// failed: the default 64 KiB then stays). Larger pipe buffers mean fewer
// context switches per chunk between the stages of a chain.
func GrowPipe(f *os.File, size int) int {
	st, err := f.Stat()
	if err != nil || st.Mode()&os.ModeNamedPipe == 0 {
		return 0
	}
	n, _, errno := syscall.Syscall(syscall.SYS_FCNTL, f.Fd(), fSetPipeSz, uintptr(size))
	if errno != 0 {
		return 0
	}
	return int(n)
}

// processUmask is the file-mode creation mask, read once at start, before
// any goroutine creates a file (reading it means setting it).
var processUmask = func() os.FileMode {
	m := syscall.Umask(0)
	syscall.Umask(m)
	return os.FileMode(m)
}()

// umask is the process's file-mode creation mask.
func umask() os.FileMode { return processUmask }
