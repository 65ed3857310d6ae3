package cli

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
)

// Version is the one version of every tool: what --version prints and what
// each stage records in the stream header. The Makefile sets it with
// -ldflags "-X github.com/nf4pipe/nf4pipe/internal/cli.Version=$(git describe)";
// a plain go build takes the commit from the build information, else "dev".
var Version = ""

func init() {
	if Version != "" {
		return
	}
	Version = "dev"
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		Version = v
		return
	}
	var rev, dirty string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				dirty = "-dirty"
			}
		}
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if rev != "" {
		Version = rev + dirty
	}
}

func fmtValue(v any) string { return fmt.Sprint(v) }

func absIfExists(p string) string {
	if _, err := os.Stat(p); err != nil {
		return p
	}
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
