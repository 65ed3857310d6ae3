package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// TestFamiliesByteIdentical runs detect | quantize | place as processes on
// every tiny model in testdata/models and compares what place wrote with the
// checkpoint transformers + bitsandbytes saved for the same model: every file
// byte for byte. detect must also say the family's policy was verified there.
func TestFamiliesByteIdentical(t *testing.T) {
	for _, m := range fixtures.RepoModels {
		t.Run(m, func(t *testing.T) {
			src, ref := path("testdata", "models", m), path("testdata", "models", m+"-bnb-nf4")
			out := filepath.Join(t.TempDir(), m+"-nf4")
			res := run{dir: root, stages: [][]string{
				{"detect", src},
				{"quantize"},
				{"place", "--out", out, "--no-emit"},
			}}.exec(t)
			for _, r := range res {
				if r.code != 0 {
					t.Fatalf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
				}
			}
			if want := "verified: byte-identical to transformers + bitsandbytes on testdata/models/" + m + "\n"; !strings.Contains(res[0].stderr, want) {
				t.Errorf("detect's report does not say %q:\n%s", want, res[0].stderr)
			}
			for _, f := range []string{"model.safetensors", "config.json", "generation_config.json"} {
				want, err := os.ReadFile(filepath.Join(ref, f))
				if err != nil {
					t.Fatal(err)
				}
				got, err := os.ReadFile(filepath.Join(out, f))
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("%s/%s (%d bytes) differs from %s's (%d bytes)", out, f, len(got), ref, len(want))
				}
			}
		})
	}
}
