package cli

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	ucli "github.com/urfave/cli/v2"
)

func TestMessage(t *testing.T) {
	sentinel := errors.New("place: interrupted")
	for _, c := range []struct {
		err  error
		want string
	}{
		{errors.New("x"), "place: x"},
		{fmt.Errorf("%w: signal; nothing written", sentinel), "place: interrupted: signal; nothing written"},
		{fmt.Errorf("/tmp/out: %w (use --force)", sentinel), "place: /tmp/out: interrupted (use --force)"},
		{errors.New("place: place: twice"), "place: twice"},
		{errors.New("replace: not ours"), "place: replace: not ours"},
		{errors.New("first\nsecond\n"), "place: first; second"},
		{errors.New(`gpus: bad memory cap: "0:abc": gpus: bad memory size`), `place: gpus: bad memory cap: "0:abc": bad memory size`},
		{errors.New(`tensor "x": tensor "x": truncated`), `place: tensor "x": truncated`},
	} {
		if got := Message("place", c.err); got != c.want {
			t.Errorf("Message(%q) = %q, want %q", c.err, got, c.want)
		}
	}
}

func run(t *testing.T, action ucli.ActionFunc, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := &ucli.App{Name: "tool", Writer: &out, ErrWriter: &errb, Action: action}
	code := Run(app, nil, append([]string{"tool"}, args...))
	return code, out.String(), errb.String()
}

func TestRun(t *testing.T) {
	for _, c := range []struct {
		err      error
		code     int
		wantErrs string
	}{
		{nil, ExitOK, ""},
		{Silent(ExitNoFit), ExitNoFit, ""},
		{Usagef("bad %s", "flag"), ExitUsage, "tool: bad flag\n"},
		{fmt.Errorf("write: %w", syscall.EPIPE), ExitOK, ""},
		{fmt.Errorf("write out: %w", syscall.ENOSPC), ExitOutput, "tool: write out: no space left on device\n"},
		{WithCode(ExitQuality, errors.New("tool: worse")), ExitQuality, "tool: worse\n"},
	} {
		code, _, errs := run(t, func(*ucli.Context) error { return c.err }, nil...)
		if code != c.code || errs != c.wantErrs {
			t.Errorf("%v: exit %d, stderr %q; want %d, %q", c.err, code, errs, c.code, c.wantErrs)
		}
	}
	if Silent(ExitOK) != nil {
		t.Error("Silent(0) is not nil")
	}
	code, out, _ := run(t, func(*ucli.Context) error { return nil }, "--version")
	if code != 0 || out != "tool version "+Version+"\n" {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

func TestIsTerminal(t *testing.T) {
	if IsTerminal(&bytes.Buffer{}) || IsTerminal(nil) {
		t.Error("a buffer or nil is a terminal")
	}
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	if IsTerminal(f) {
		t.Error("/dev/null is a terminal")
	}
}

// TestCreateOutputDevice: -o /dev/null writes to the device and leaves it a
// device (a temporary file renamed over it would replace it, as root).
func TestCreateOutputDevice(t *testing.T) {
	app := &ucli.App{}
	c := ucli.NewContext(app, nil, nil)
	before, err := os.Stat(os.DevNull)
	if err != nil || before.Mode().IsRegular() {
		t.Skipf("%s is not a device here", os.DevNull)
	}
	out, err := CreateOutput(c, os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := out.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := out.Commit(); err != nil {
		t.Fatal(err)
	}
	after, err := os.Stat(os.DevNull)
	if err != nil || after.Mode() != before.Mode() {
		t.Fatalf("%s changed: %v then %v (%v)", os.DevNull, before.Mode(), after.Mode(), err)
	}
	entries, _ := filepath.Glob(filepath.Join(filepath.Dir(os.DevNull), ".null.tmp-*"))
	if len(entries) != 0 {
		t.Fatalf("temporary files left: %v", entries)
	}
}
