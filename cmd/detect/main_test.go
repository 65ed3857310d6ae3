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
	require.Equal(t, cli.ExitOK, code, errs)
	var rep struct {
		ModelType string `json:"model_type"`
		Family    string `json:"family"`
		Fallback  *bool  `json:"fallback"`
		Params    struct{ Total, Quantized, Kept int64 }
		Bytes     struct{ Source, NF4 int64 }
		Tensors   int `json:"tensors"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	assert.Equal(t, "gemma3", rep.ModelType)
	assert.Equal(t, "gemma3", rep.Family)
	if assert.NotNil(t, rep.Fallback) {
		assert.False(t, *rep.Fallback, "fallback")
	}
	assert.EqualValues(t, 4_300_079_472, rep.Params.Total)
	assert.Equal(t, rep.Params.Total, rep.Params.Quantized+rep.Params.Kept)
	assert.EqualValues(t, 2*4_300_079_472, rep.Bytes.Source)
	assert.Positive(t, rep.Bytes.NF4)
	assert.Less(t, rep.Bytes.NF4, rep.Bytes.Source)
	assert.NotZero(t, rep.Tensors)
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
	code, _, errs := runCLI(t)
	assert.Equal(t, cli.ExitUsage, code, "no args: %s", errs)
	code, _, errs = runCLI(t, "--no-such-flag", tiny)
	assert.Equal(t, cli.ExitUsage, code, "bad flag")
	assert.Contains(t, errs, "--no-such-flag")
	code, _, errs = runCLI(t, "--only", "[x", tiny)
	assert.Equal(t, cli.ExitUsage, code, "bad pattern")
	assert.Equal(t, 1, strings.Count(errs, "\n"), "one line: %q", errs)
	// Flags after the path, as GNU tools take them.
	code, out, errs := runCLI(t, tiny, "--info")
	assert.Equal(t, cli.ExitOK, code, "flag after path: %s", errs)
	assert.Contains(t, out, "llama")
}

// TestPolicyVerification: detect says on which fixture the family's policy
// was found byte-identical to transformers, and says so when it never was.
func TestPolicyVerification(t *testing.T) {
	code, out, errs := runCLI(t, "--info", "--json", fixtures.Path(t, "models", "gemma3"))
	require.Equal(t, cli.ExitOK, code, errs)
	var rep struct {
		Verified *string `json:"policy_verified_on"`
	}
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)
	require.NotNil(t, rep.Verified, "policy_verified_on in %s", out)
	assert.Equal(t, "testdata/models/gemma3", *rep.Verified)
	cfg := filepath.Join(t.TempDir(), "config.json")
	// Every family in the table has its fixture now; a model no family knows
	// falls back to the generic decoder, whose policy no fixture checked.
	require.NoError(t, os.WriteFile(cfg, []byte(`{"model_type": "newfam", "hidden_size": 64, "intermediate_size": 128,
		"num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 100}`), 0o644))
	code, out, errs = runCLI(t, "--info", cfg)
	require.Equal(t, cli.ExitOK, code, errs)
	assert.Contains(t, out, "\npolicy     UNVERIFIED: no transformers-made fixture of this family", "unknown family")
}
