// Package e2e runs the five nf4pipe tools as real processes over real pipes:
// the demo pipeline, every hostile-input case of testdata/bad/, and what every
// tool's command line promises (--help, --version, one error line, statuses).
package e2e

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// tools are the commands under test, built once by TestMain.
var tools = []string{"detect", "plan", "quantize", "place", "verify"}

var (
	root string // the module root
	bin  string // the built tools
	gen  string // inputs generated from testdata/ (see generate)
)

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.list"); f != nil && f.Value.String() != "" {
		os.Exit(m.Run()) // listing tests (make fuzz): nothing to build
	}
	os.Exit(setup(m))
}

func setup(m *testing.M) int {
	var err error
	if root, err = filepath.Abs(".."); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	tmp, err := os.MkdirTemp("", "nf4pipe-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	bin, gen = filepath.Join(tmp, "bin"), filepath.Join(tmp, "gen")
	if err := build(bin); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building the tools:", err)
		return 1
	}
	if err := generate(gen); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: generating inputs:", err)
		return 1
	}
	return m.Run()
}

// build compiles the five tools into dir as `make build` does: pure Go.
func build(dir string) error {
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	for _, t := range tools {
		args = append(args, "./cmd/"+t)
	}
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("%v: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

// path is name under the module root.
func path(name ...string) string { return filepath.Join(append([]string{root}, name...)...) }
