package synth

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"syscall"
	"time"
)

// Usage is what a finished process used.
type Usage struct {
	PeakRSS  int64 // bytes: the kernel's ru_maxrss of the process
	Wall     time.Duration
	User     time.Duration
	Sys      time.Duration
	ExitCode int
}

func (u Usage) String() string {
	return fmt.Sprintf("peak_rss_mib=%.1f wall_s=%.3f user_s=%.3f sys_s=%.3f exit=%d",
		float64(u.PeakRSS)/(1<<20), u.Wall.Seconds(), u.User.Seconds(), u.Sys.Seconds(), u.ExitCode)
}

// Measure runs argv with this process's stdin, stdout and stderr and reports
// its peak resident set size and times, as GNU time -v would, without needing
// GNU time. A non-zero exit is reported in Usage, not as an error.
func Measure(argv []string) (Usage, error) {
	if len(argv) == 0 {
		return Usage{}, errors.New("synth: measure: no command")
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	start := time.Now()
	err := cmd.Run()
	u := Usage{Wall: time.Since(start)}
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		return u, fmt.Errorf("synth: measure %s: %w", argv[0], err)
	}
	st := cmd.ProcessState
	u.ExitCode = st.ExitCode()
	if ws, ok := st.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		u.ExitCode = 128 + int(ws.Signal())
	}
	u.User, u.Sys = st.UserTime(), st.SystemTime()
	if ru, ok := st.SysUsage().(*syscall.Rusage); ok {
		u.PeakRSS = int64(ru.Maxrss) * 1024 // kilobytes on Linux
	}
	return u, nil
}
