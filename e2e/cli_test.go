package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
)

// streamFlags are the stream-file flags of each tool: detect reads a model
// path and verify ends the pipeline, so they have one each.
var streamFlags = map[string][]string{
	"detect":   {"--output FILE, -o FILE"},
	"plan":     {"--input FILE, -i FILE", "--output FILE, -o FILE"},
	"quantize": {"--input FILE, -i FILE", "--output FILE, -o FILE"},
	"place":    {"--input FILE, -i FILE", "--output FILE, -o FILE"},
	"verify":   {"--input FILE, -i FILE"},
}

// TestHelpAndVersion: every tool has --help with a worked example and its
// exit statuses, the same report and file flags, and --version.
func TestHelpAndVersion(t *testing.T) {
	for _, tool := range tools {
		var out bytes.Buffer
		r := run{dir: root, stdout: &out, stages: [][]string{{tool, "--help"}}}.exec(t)[0]
		help := out.String()
		if r.code != 0 || r.stderr != "" {
			t.Errorf("%s --help: status %s, stderr %q", tool, r.status(), r.stderr)
		}
		for _, want := range append([]string{"Example", "Exit status", tool + " ", "--json", "--quiet, -q", "--help, -h", "--version, -v"}, streamFlags[tool]...) {
			if !strings.Contains(help, want) {
				t.Errorf("%s --help lacks %q", tool, want)
			}
		}
		out.Reset()
		r = run{dir: root, stdout: &out, stages: [][]string{{tool, "--version"}}}.exec(t)[0]
		if want := tool + " version " + cli.Version + "\n"; r.code != 0 || out.String() != want {
			t.Errorf("%s --version: status %s, %q, want %q", tool, r.status(), out.String(), want)
		}
	}
}

// TestUsageAndInputErrors: a bad flag is status 2, a missing input file 3,
// each with one line that starts with the tool's name once.
func TestUsageAndInputErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	for _, tool := range tools {
		r := run{dir: root, stages: [][]string{{tool, "--no-such-flag"}}}.exec(t)[0]
		checkError(t, r, 2, tool+": ", "no-such-flag")
		if !strings.Contains(r.stderr, "(see "+tool+" --help)") {
			t.Errorf("%s: a usage error should point at --help: %q", tool, r.stderr)
		}
		args := []string{tool, "-i", missing}
		switch tool {
		case "detect":
			args = []string{tool, missing}
		case "plan":
			args = append(args, "--gpus", "t4")
		case "place":
			args = append(args, "--out", filepath.Join(t.TempDir(), "out"))
		}
		r = run{dir: root, stages: [][]string{args}}.exec(t)[0]
		checkError(t, r, 3, tool+": ", missing)
	}
}

func checkError(t *testing.T, r result, code int, prefix, mention string) {
	t.Helper()
	if r.code != code {
		t.Errorf("%s: status %s, want %d; stderr:\n%s", r.name, r.status(), code, r.stderr)
	}
	checkOneLine(t, r)
	if !strings.HasPrefix(r.stderr, prefix) || strings.HasPrefix(r.stderr, prefix+prefix) || strings.Contains(r.stderr, ": "+prefix) {
		t.Errorf("%s: stderr should start with %q, once: %q", r.name, prefix, r.stderr)
	}
	if !strings.Contains(r.stderr, mention) {
		t.Errorf("%s: stderr should mention %q: %q", r.name, mention, r.stderr)
	}
}

// TestDevNullIsNotATerminal: a stream written to /dev/null is a stream
// thrown away, not one written to a person's terminal.
func TestDevNullIsNotATerminal(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Skip(err)
	}
	defer null.Close()
	for _, c := range []struct {
		args  []string
		stdin string
	}{
		{[]string{"detect", path("testdata", "models", "llama")}, ""},
		{[]string{"plan", "--gpus", "t4", "-q"}, filepath.Join(gen, "llama.stream")},
		{[]string{"quantize", "-q"}, filepath.Join(gen, "llama.stream")},
	} {
		cmd := exec.Command(filepath.Join(bin, c.args[0]), c.args[1:]...)
		cmd.Stdout = null
		if c.stdin != "" {
			f, err := os.Open(c.stdin)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			cmd.Stdin = f
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("%v > /dev/null: %v: %s", c.args, err, stderr.String())
		}
	}
}

// TestPlanDoesNotFit: status 5; the report on stderr says so, or with -q
// one line does.
func TestPlanDoesNotFit(t *testing.T) {
	stream := filepath.Join(gen, "llama.stream")
	r := run{dir: root, stdin: stream, stages: [][]string{{"plan", "--gpus", "512MiB"}}}.exec(t)[0]
	if r.code != cli.ExitNoFit || !strings.Contains(r.stderr, "DOES NOT FIT") && !strings.Contains(r.stderr, "does not fit") {
		t.Errorf("status %s, stderr:\n%s", r.status(), r.stderr)
	}
	r = run{dir: root, stdin: stream, stages: [][]string{{"plan", "--gpus", "512MiB", "-q"}}}.exec(t)[0]
	checkError(t, r, cli.ExitNoFit, "plan: ", "does not fit")
}

// TestPlaceExists: an existing DIR is status 4 (the output cannot be written
// where asked) and is left as it was.
func TestPlaceExists(t *testing.T) {
	dir := t.TempDir()
	keep := filepath.Join(dir, "keep")
	if err := os.WriteFile(keep, []byte("mine"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := run{dir: root, stdin: filepath.Join(gen, "llama-nf4.stream"), stages: [][]string{{"place", "--out", dir, "--no-emit"}}}.exec(t)[0]
	checkError(t, r, cli.ExitOutput, "place: ", "--force")
	if got := listing(t, dir); len(got) != 1 {
		t.Errorf("place changed an existing DIR: %v", got)
	}
}

// TestPlaceInterrupted: SIGINT while placing ends place by SIGINT (130 in a
// shell), with one line, and no DIR.
func TestPlaceInterrupted(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	cmd := exec.Command(filepath.Join(bin, "place"), "--out", out, "--no-emit")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(gen, "llama-nf4.stream"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stdin.Write(b[:len(b)/3]); err != nil {
		t.Fatal(err)
	}
	// place now waits for the rest of the stream; wait until its temporary
	// directory shows it has started, then interrupt it.
	for i := 0; i < 500 && len(listing(t, dir)) == 0; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	stdin.Close()
	// Ended by the signal, as the shell reports 130, with one line.
	if ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus); !ws.Signaled() || ws.Signal() != syscall.SIGINT {
		t.Errorf("place: ended %v, want by SIGINT", cmd.ProcessState)
	}
	if stderr.String() != "place: interrupted\n" {
		t.Errorf("place: stderr %q", stderr.String())
	}
	if got := listing(t, dir); len(got) != 0 {
		t.Errorf("left behind: %v", got)
	}
}

// TestVerifyQuiet: -q prints no report, only the status and, for a failure,
// one line.
func TestVerifyQuiet(t *testing.T) {
	model := path("testdata", "models", "llama")
	for _, c := range []struct {
		stdin string
		code  int
	}{
		{filepath.Join(gen, "llama-nf4.stream"), 0},
		{filepath.Join(gen, "llama-nf4.stream.corrupt"), cli.ExitIntegrity},
	} {
		var out bytes.Buffer
		r := run{dir: root, stdin: c.stdin, stdout: &out, stages: [][]string{{"verify", "-q", "--reference", model}}}.exec(t)[0]
		if out.Len() != 0 {
			t.Errorf("%s: -q printed a report:\n%s", c.stdin, out.String())
		}
		if c.code == 0 {
			if r.code != 0 || r.stderr != "" {
				t.Errorf("%s: status %s, stderr %q", c.stdin, r.status(), r.stderr)
			}
			continue
		}
		checkError(t, r, c.code, "verify: ", "checksum")
	}
}
