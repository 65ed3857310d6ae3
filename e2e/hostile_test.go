package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// hostileCase is one block of a testdata/bad/<case>/expected file:
//
//	# comment
//	run: TOOL ARGS... [| PROGRAM ARGS...]  the command; checks apply to its first stage
//	stdin: FILE                            the first stage's stdin (default /dev/null)
//	setup: mkdir PATH                      make a directory before the run
//	fsize: N                               run under `ulimit -f N` (512-byte blocks)
//	tmpfs: SIZE                            {tmp} is a fresh tmpfs of SIZE (skipped where it cannot be mounted)
//	exit: N | SIGPIPE                      the status
//	stderr: PATTERN                        the whole first line of stderr; * matches any run of characters
//	creates: NAME                          a name the run adds under {tmp} (repeatable); nothing else may appear
//
// Blocks are separated by blank lines. In every value {bad} is testdata/bad,
// {case} the case's directory, {models} testdata/models, {gen} the inputs
// generate made and {tmp} an empty directory of the block's own.
type hostileCase struct {
	line    int
	run     [][]string
	stdin   string
	setup   []string
	fsize   int
	tmpfs   string
	exit    string
	stderr  *string
	creates []string
}

// block is the lines of one block of an expected file, with the number of
// its first line.
type block struct {
	line  int
	lines []string
}

func readBlocks(t *testing.T, file string) []block {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	fresh := true
	for n, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case strings.HasPrefix(line, "#"):
		case line == "":
			fresh = true
		case fresh:
			out = append(out, block{line: n + 1, lines: []string{line}})
			fresh = false
		default:
			out[len(out)-1].lines = append(out[len(out)-1].lines, line)
		}
	}
	return out
}

// parse reads the block with {name} replaced by vars[name].
func (b block) parse(t *testing.T, vars map[string]string) hostileCase {
	t.Helper()
	c := hostileCase{line: b.line}
	for _, line := range b.lines {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("line %d: %q: want KEY: VALUE", b.line, line)
		}
		val = strings.TrimSpace(val)
		for k, v := range vars {
			val = strings.ReplaceAll(val, "{"+k+"}", v)
		}
		switch key {
		case "run":
			for _, st := range strings.Split(val, " | ") {
				c.run = append(c.run, strings.Fields(st))
			}
		case "stdin":
			c.stdin = val
		case "setup":
			c.setup = append(c.setup, val)
		case "fsize":
			n, err := strconv.Atoi(val)
			if err != nil {
				t.Fatalf("line %d: fsize: %v", b.line, err)
			}
			c.fsize = n
		case "tmpfs":
			c.tmpfs = val
		case "exit":
			c.exit = val
		case "stderr":
			c.stderr = &val
		case "creates":
			c.creates = append(c.creates, val)
		default:
			t.Fatalf("line %d: unknown key %q", b.line, key)
		}
	}
	if len(c.run) == 0 || c.exit == "" || c.stderr == nil {
		t.Fatalf("block at line %d: a block needs run, exit and stderr", b.line)
	}
	return c
}

// TestHostile runs every case of testdata/bad/*/expected: one clear line on
// stderr, the documented status, nothing half-written, no panic.
func TestHostile(t *testing.T) {
	bad := path("testdata", "bad")
	files, err := filepath.Glob(filepath.Join(bad, "*", "expected"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/bad/*/expected (%v)", err)
	}
	for _, file := range files {
		dir := filepath.Dir(file)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			t.Parallel()
			for _, b := range readBlocks(t, file) {
				t.Run(fmt.Sprintf("line%d", b.line), func(t *testing.T) {
					tmp := t.TempDir()
					vars := map[string]string{"bad": bad, "case": dir, "models": path("testdata", "models"), "gen": gen, "tmp": tmp}
					b.parse(t, vars).check(t, tmp)
				})
			}
		})
	}
}

func (c hostileCase) check(t *testing.T, tmp string) {
	if c.tmpfs != "" {
		mountTmpfs(t, tmp, c.tmpfs)
	}
	for _, s := range c.setup {
		dir, ok := strings.CutPrefix(s, "mkdir ")
		if !ok {
			t.Fatalf("setup %q: only mkdir is known", s)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	before := listing(t, tmp)
	res := run{dir: tmp, stdin: c.stdin, stages: c.run, fsize: c.fsize}.exec(t)[0]
	switch {
	case c.exit == "SIGPIPE":
		if res.signal != syscall.SIGPIPE {
			t.Errorf("%s: status %s, want the SIGPIPE status 141; stderr:\n%s", res.name, res.status(), res.stderr)
		}
	case strconv.Itoa(res.code) != c.exit:
		t.Errorf("%s: status %s, want %s; stderr:\n%s", res.name, res.status(), c.exit, res.stderr)
	}
	if *c.stderr == "" {
		if res.stderr != "" {
			t.Errorf("%s: stderr should be empty:\n%s", res.name, res.stderr)
		}
	} else {
		checkOneLine(t, res)
		if first, _, _ := strings.Cut(res.stderr, "\n"); !match(*c.stderr, first) {
			t.Errorf("%s: stderr\n  %s\nwant\n  %s", res.name, first, *c.stderr)
		}
	}
	after := listing(t, tmp)
	want := append(slices.Clone(before), c.creates...)
	for _, p := range after {
		if !slices.Contains(want, p) && !under(p, c.creates) {
			t.Errorf("%s left %s behind", res.name, filepath.Join(tmp, p))
		}
	}
	for _, p := range c.creates {
		if !slices.Contains(after, p) {
			t.Errorf("%s did not create %s", res.name, p)
		}
	}
}

// under reports whether p lies inside one of dirs.
func under(p string, dirs []string) bool {
	for _, d := range dirs {
		if strings.HasPrefix(p, d+string(filepath.Separator)) {
			return true
		}
	}
	return false
}

// mountTmpfs mounts a tmpfs of size on dir for the test, or skips it.
func mountTmpfs(t *testing.T, dir, size string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("a real ENOSPC needs a small tmpfs, and mounting one needs root")
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size="+size, "tmpfs", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a %s tmpfs for a real ENOSPC: %v: %s", size, err, strings.TrimSpace(string(out)))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}
