// Package docs holds tests that keep the documents true to the code.
package docs

import (
	"go/build"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/nf4pipe/nf4pipe/"

// TestArchitectureImports checks ARCHITECTURE.md's import table against the
// packages' imports (default build, no cgo), and that it lists every package
// under pkg/.
func TestArchitectureImports(t *testing.T) {
	doc, err := os.ReadFile("ARCHITECTURE.md")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile("(?m)^\\| `((?:pkg|internal)/[a-z]+)` \\| ([^|]*) \\|")
	ctx := build.Default
	ctx.CgoEnabled = false
	listed := map[string]bool{}
	for _, m := range row.FindAllStringSubmatch(string(doc), -1) {
		pkg, want := m[1], names(m[2])
		if listed[pkg] {
			continue // the second table names packages too; the first row counts
		}
		listed[pkg] = true
		bp, err := ctx.ImportDir(filepath.Join("..", pkg), 0)
		if err != nil {
			t.Errorf("%s: %v", pkg, err)
			continue
		}
		var got []string
		for _, imp := range bp.Imports {
			if rest, ok := strings.CutPrefix(imp, module); ok {
				got = append(got, path.Base(rest))
			}
		}
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Errorf("%s imports %v; ARCHITECTURE.md says %v", pkg, got, want)
		}
	}
	dirs, err := filepath.Glob("../pkg/*")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if p := "pkg/" + filepath.Base(d); !listed[p] {
			t.Errorf("ARCHITECTURE.md's import table lacks %s", p)
		}
	}
}

// names turns "cli, units, arch" or "quant (a note)" into sorted base names.
func names(cell string) []string {
	cell = regexp.MustCompile(`\([^)]*\)`).ReplaceAllString(cell, "")
	var out []string
	for _, f := range strings.Split(cell, ",") {
		if f = strings.TrimSpace(f); f != "" && f != "—" {
			out = append(out, path.Base(f))
		}
	}
	slices.Sort(out)
	return out
}
