package quantize

import (
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// feed copies f into the pipe w as detect does: splice(2) passes the file's
// page-cache pages into the pipe by reference.
func feed(w, f *os.File) error {
	for {
		n, err := unix.Splice(int(f.Fd()), nil, int(w.Fd()), nil, 1<<20, unix.SPLICE_F_MOVE)
		if err == unix.EINTR || err == unix.EAGAIN {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return nil
		}
	}
}

// cpuTime returns the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru unix.Rusage
	if unix.Getrusage(unix.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
