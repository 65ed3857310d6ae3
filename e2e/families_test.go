package e2e

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
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
// transformers' own checkpoint, taken as input, passes through unchanged.
func TestFamiliesByteIdentical(t *testing.T) {
	for _, m := range fixtures.RepoModels {
		t.Run(m, func(t *testing.T) {
			src, ref := path("testdata", "models", m), path("testdata", "models", m+"-bnb-nf4")
			res := pipeToDir(t, src, filepath.Join(t.TempDir(), m+"-nf4"), ref)
			if want := "verified: byte-identical to transformers + bitsandbytes on testdata/models/" + m + "\n"; !strings.Contains(res[0].stderr, want) {
				t.Errorf("detect's report does not say %q:\n%s", want, res[0].stderr)
			}
			res = pipeToDir(t, ref, filepath.Join(t.TempDir(), m+"-again"), ref)
			if !strings.Contains(res[0].stderr, "\nstored     already 4-bit: bitsandbytes nf4") {
				t.Errorf("detect did not see %s as 4-bit:\n%s", ref, res[0].stderr)
			}
			if a, b := paramsTotal(t, src), paramsTotal(t, ref); a != b || a == 0 {
				t.Errorf("detect counts %d parameters in %s, %d in %s", a, src, b, ref)
			}
		})
	}
}

// pipeToDir runs detect in | quantize | place --out out and compares every
// file of want with out's. Every payload byte must have gone straight to its
// place in the file (the stream announces its tensors in the file's order).
func pipeToDir(t *testing.T, in, out, want string) []result {
	t.Helper()
	res := run{dir: root, stages: [][]string{
		{"detect", in},
		{"quantize"},
		{"place", "--out", out, "--no-emit", "--json"},
	}}.exec(t)
	for _, r := range res {
		if r.code != 0 {
			t.Fatalf("%s: status %s; stderr:\n%s", r.name, r.status(), r.stderr)
		}
	}
	for _, f := range []string{"model.safetensors", "config.json", "generation_config.json"} {
		w, err := os.ReadFile(filepath.Join(want, f))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(out, f))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w) {
			t.Errorf("%s/%s (%d bytes) differs from %s's (%d bytes)", out, f, len(got), want, len(w))
		}
		if f == "model.safetensors" && len(w) >= 8 {
			var rep struct {
				InPlace *int64 `json:"in_place_bytes"`
			}
			if err := json.Unmarshal([]byte(res[2].stderr), &rep); err != nil || rep.InPlace == nil {
				t.Fatalf("place --json: %v, or no in_place_bytes:\n%s", err, res[2].stderr)
			}
			payload := int64(len(w)) - 8 - int64(binary.LittleEndian.Uint64(w))
			if *rep.InPlace != payload {
				t.Errorf("place wrote %d of %d payload bytes straight to their places", *rep.InPlace, payload)
			}
		}
	}
	return res
}

func paramsTotal(t *testing.T, model string) int64 {
	t.Helper()
	var out bytes.Buffer
	res := run{dir: root, stdout: &out, stages: [][]string{{"detect", "--info", "--json", model}}}.exec(t)
	if res[0].code != 0 {
		t.Fatalf("detect --info %s: status %s; stderr:\n%s", model, res[0].status(), res[0].stderr)
	}
	var rep struct {
		Params struct {
			Total int64 `json:"total"`
		} `json:"params"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("detect --info --json %s: %v", model, err)
	}
	return rep.Params.Total
}
