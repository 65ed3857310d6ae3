package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := newApp()
	app.Writer, app.ErrWriter = &out, &errb
	code := cli.Run(app, exitTable, append([]string{"detect"}, args...))
	return code, out.String(), errb.String()
}

func TestCLIInfoJSON(t *testing.T) {
	code, out, errs := runCLI(t, "--info", "--json", fixtures.Path(t, "configs", "google__gemma-3-4b-it.json"))
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep struct {
		ModelType string `json:"model_type"`
		Family    string `json:"family"`
		Fallback  *bool  `json:"fallback"`
		Params    struct{ Total, Quantized, Kept int64 }
		Bytes     struct{ Source, NF4 int64 }
		Tensors   int `json:"tensors"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if rep.ModelType != "gemma3" || rep.Family != "gemma3" || rep.Fallback == nil || *rep.Fallback ||
		rep.Params.Total != 4_300_079_472 || rep.Params.Quantized+rep.Params.Kept != rep.Params.Total ||
		rep.Bytes.Source != 2*4_300_079_472 || rep.Bytes.NF4 <= 0 || rep.Bytes.NF4 >= rep.Bytes.Source || rep.Tensors == 0 {
		t.Fatalf("report %+v", rep)
	}
}

// TestCLIStreamToFileAndFlags: detect on qwen2_moe (2 layers of 4 routed
// experts; 8 tensors a layer 4-bit by default) with policy flags, into a file.
func TestCLIStreamToFileAndFlags(t *testing.T) {
	dir := fixtures.Model(t, "qwen2_moe")
	outPath := filepath.Join(t.TempDir(), "s.nf4s")
	code, _, errs := runCLI(t, "-o", outPath, "--quantize-experts", "--skip", "*.q_proj.weight", dir)
	require.Equal(t, cli.ExitOK, code, errs)
	assert.Contains(t, errs, "qwen2_moe", "report on stderr")
	f, err := os.Open(outPath)
	require.NoError(t, err)
	defer f.Close()
	r := tensorstream.NewReader(f)
	h, err := r.Header()
	require.NoError(t, err)
	var experts, q int
	for {
		tt, err := r.Next()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if tt.AnnBool(tensorstream.AnnQuantize) {
			q++
			assert.False(t, strings.HasSuffix(tt.Name, "q_proj.weight"), "%s quantized despite --skip", tt.Name)
			if tt.AnnString(tensorstream.AnnRole) == arch.RoleExpert {
				experts++
			}
		}
	}
	assert.Equal(t, 2*4*3, experts, "routed experts quantized")
	assert.Equal(t, 2*4*3+2*8-2, q, "tensors quantized")
	require.Len(t, h.Stages, 1)
	assert.Equal(t, "detect", h.Stages[0].Name)
	// The stage record says what ran: the flags given, in their long names.
	want := []string{"--output=" + outPath, "--quantize-experts", "--skip=*.q_proj.weight", dir}
	assert.Equal(t, want, h.Stages[0].Args)
	assert.Equal(t, cli.Version, h.Stages[0].Version)
}

func TestCLIUsage(t *testing.T) {
	tiny := fixtures.Path(t, "models", "llama")
	if code, _, _ := runCLI(t); code != cli.ExitUsage {
		t.Errorf("no args: exit %d", code)
	}
	if code, _, errs := runCLI(t, "--no-such-flag", tiny); code != cli.ExitUsage || !strings.Contains(errs, "--no-such-flag") {
		t.Errorf("bad flag: exit %d, %q", code, errs)
	}
	if code, _, errs := runCLI(t, "--only", "[x", tiny); code != cli.ExitUsage || strings.Count(errs, "\n") != 1 {
		t.Errorf("bad pattern: exit %d, %q", code, errs)
	}
	// Flags after the path, as GNU tools take them.
	if code, out, errs := runCLI(t, tiny, "--info"); code != 0 || !strings.Contains(out, "llama") {
		t.Errorf("flag after path: exit %d, %q %q", code, out, errs)
	}
}

// TestPolicyVerification: detect says on which fixture the family's policy
// was found byte-identical to transformers, and says so when it never was.
func TestPolicyVerification(t *testing.T) {
	code, out, errs := runCLI(t, "--info", "--json", fixtures.Path(t, "models", "gemma3"))
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	var rep struct {
		Verified *string `json:"policy_verified_on"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil || rep.Verified == nil || *rep.Verified != "testdata/models/gemma3" {
		t.Fatalf("policy_verified_on %v (%v) in %s", rep.Verified, err, out)
	}
	cfg := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(cfg, []byte(`{"model_type": "mllama"}`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCLI(t, "--info", cfg)
	if code != cli.ExitOK {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "\npolicy     UNVERIFIED: no transformers-made fixture of this family") {
		t.Errorf("mllama (no fixture) not reported unverified:\n%s", out)
	}
}
