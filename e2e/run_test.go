package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// result is how one process of a pipeline ended.
type result struct {
	name   string
	code   int            // exit status; -1 when a signal ended it
	signal syscall.Signal // the signal that ended it, else 0
	stderr string
}

// status is the exit status as a shell reports it: 128+N for signal N.
func (r result) status() string {
	if r.signal != 0 {
		return fmt.Sprintf("%d (%v)", 128+int(r.signal), r.signal)
	}
	return fmt.Sprint(r.code)
}

// run describes one pipeline of real processes.
type run struct {
	dir    string     // working directory
	stdin  string     // file on the first stage's stdin; "" for /dev/null
	stages [][]string // tool names (built tools, or a program on PATH) and arguments
	fsize  int        // when > 0, RLIMIT_FSIZE in 512-byte blocks (sh's ulimit -f)
	stdout *bytes.Buffer
}

// exec runs the stages connected by pipes, the last stage's stdout into
// r.stdout (or a pipe that is read and dropped), each stage's stderr kept.
func (r run) exec(t *testing.T) []result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmds := make([]*exec.Cmd, len(r.stages))
	stderrs := make([]*bytes.Buffer, len(r.stages))
	var closeAfterStart []*os.File
	for i, st := range r.stages {
		prog := st[0]
		if isTool(prog) {
			prog = filepath.Join(bin, prog)
		}
		args := st[1:]
		if r.fsize > 0 {
			args = append([]string{"-c", fmt.Sprintf(`ulimit -f %d && exec "$0" "$@"`, r.fsize), prog}, args...)
			prog = "sh"
		}
		cmd := exec.CommandContext(ctx, prog, args...)
		cmd.Dir = r.dir
		stderrs[i] = new(bytes.Buffer)
		cmd.Stderr = stderrs[i]
		cmds[i] = cmd
	}
	if r.stdin != "" {
		f, err := os.Open(r.stdin)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		cmds[0].Stdin = f
	}
	for i := 0; i+1 < len(cmds); i++ {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmds[i].Stdout, cmds[i+1].Stdin = pw, pr
		closeAfterStart = append(closeAfterStart, pr, pw)
	}
	last := cmds[len(cmds)-1]
	if r.stdout != nil {
		last.Stdout = r.stdout
	} else {
		last.Stdout = discard{} // a pipe, not /dev/null: the tools see what a next stage gives them
	}
	for _, c := range cmds {
		if err := c.Start(); err != nil {
			t.Fatalf("%s: %v", c.Path, err)
		}
	}
	for _, f := range closeAfterStart {
		f.Close()
	}
	res := make([]result, len(cmds))
	for i, c := range cmds {
		err := c.Wait()
		res[i] = result{name: r.stages[i][0], code: c.ProcessState.ExitCode(), stderr: stderrs[i].String()}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				res[i].signal = ws.Signal()
			}
		} else if err != nil {
			t.Fatalf("%s: %v", c.Path, err)
		}
	}
	if ctx.Err() != nil {
		t.Fatalf("%v: timed out", r.stages)
	}
	return res
}

// discard is io.Discard as a type of its own, so that exec.Cmd gives the
// process a pipe and drains it (io.Discard itself would get /dev/null).
type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

func isTool(name string) bool {
	for _, t := range tools {
		if t == name {
			return true
		}
	}
	return false
}

// checkOneLine fails unless stderr is exactly one line, with no sign of a panic.
func checkOneLine(t *testing.T, r result) {
	t.Helper()
	if strings.Count(r.stderr, "\n") != 1 || !strings.HasSuffix(r.stderr, "\n") {
		t.Errorf("%s: stderr is not one line:\n%s", r.name, r.stderr)
	}
	for _, bad := range []string{"panic", "goroutine ", "runtime error", "SIGSEGV"} {
		if strings.Contains(r.stderr, bad) {
			t.Errorf("%s: stderr shows %q:\n%s", r.name, bad, r.stderr)
		}
	}
}

// match reports whether s matches pattern, in which * stands for any run of
// characters and everything else for itself.
func match(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return s == pattern
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// listing is every path under dir, relative, for leftover checks.
func listing(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}
