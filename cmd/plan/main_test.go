package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
	"github.com/nf4pipe/nf4pipe/pkg/plan"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// streamMagic starts every stream (docs/tensorstream.md).
const streamMagic = "NF4S"

// runApp runs plan in-process on stdin; out, when not nil, takes stdout.
func runApp(t *testing.T, stdin []byte, out io.Writer, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var o, e bytes.Buffer
	app := newApp()
	app.Reader, app.Writer, app.ErrWriter = bytes.NewReader(stdin), &o, &e
	if out != nil {
		app.Writer = out
	}
	code = cli.Run(app, exitTable, append([]string{"plan"}, args...))
	return code, o.String(), e.String()
}

// detected is detect's stream of path (a model directory or a config.json).
func detected(t *testing.T, path string) []byte {
	t.Helper()
	m, err := detect.Open(path, arch.Policy{})
	require.NoError(t, err)
	defer m.Close()
	var b bytes.Buffer
	require.NoError(t, m.Stream(&b, tensorstream.Stage{Name: "detect", Version: "test"}))
	return b.Bytes()
}

func llamaConfig(t *testing.T) []byte {
	return detected(t, fixtures.Path(t, "models", "llama", "config.json"))
}

// oneLine demands status code and a single stderr line "plan: ..." holding want.
func oneLine(t *testing.T, code int, stderr string, wantCode int, want string) {
	t.Helper()
	assert.Equal(t, wantCode, code, stderr)
	assert.True(t, strings.HasPrefix(stderr, "plan: "), "prefix: %q", stderr)
	assert.False(t, strings.HasPrefix(stderr, "plan: plan:"), "doubled prefix: %q", stderr)
	assert.Equal(t, 1, strings.Count(stderr, "\n"), "one line: %q", stderr)
	assert.Contains(t, stderr, want)
}

// TestStreamOn: the stream goes on with the plan in its header and a stage
// record of the flags; the report goes to stderr.
func TestStreamOn(t *testing.T) {
	code, out, errs := runApp(t, llamaConfig(t), nil, "--gpus", "t4", "--seq-len", "1024")
	require.Equal(t, cli.ExitOK, code, errs)
	assert.NotEmpty(t, errs, "report on stderr")
	r := tensorstream.NewReader(strings.NewReader(out))
	h, err := r.Header()
	require.NoError(t, err)
	last := h.Stages[len(h.Stages)-1]
	assert.Equal(t, "plan", last.Name)
	assert.Equal(t, cli.Version, last.Version)
	assert.Equal(t, []string{"--gpus=t4", "--seq-len=1024"}, last.Args)
	p, err := sections.GetPlan(h)
	require.NoError(t, err)
	require.NotNil(t, p, "plan section in the header")
	require.Len(t, p.Devices, 1)
	assert.Contains(t, p.Devices[0].Name, "T4")

	code, out, errs = runApp(t, llamaConfig(t), nil, "--gpus", "t4", "-q")
	require.Equal(t, cli.ExitOK, code, errs)
	assert.Empty(t, errs, "-q")
	assert.NotEmpty(t, out)
}

// TestReportAndJSON: --report and --emit print on stdout and end the stream
// there; --json changes the report's format only.
func TestReportAndJSON(t *testing.T) {
	in := llamaConfig(t)
	code, out, errs := runApp(t, in, nil, "--gpus", "t4", "--report")
	require.Equal(t, cli.ExitOK, code, errs)
	assert.Empty(t, errs)
	assert.NotContains(t, out, streamMagic, "no stream after --report")

	code, out, _ = runApp(t, in, nil, "--gpus", "rtx4090x2", "--report", "--json")
	require.Equal(t, cli.ExitOK, code)
	var rep map[string]any
	require.NoError(t, json.Unmarshal([]byte(out), &rep), out)

	code, out, _ = runApp(t, in, nil, "--gpus", "24GiB", "--emit", "python", "--model-path", "m")
	require.Equal(t, cli.ExitOK, code)
	assert.Contains(t, out, "from_pretrained")

	dir := t.TempDir()
	path := filepath.Join(dir, "p.stream")
	code, out, errs = runApp(t, in, nil, "--gpus", "t4", "--report", "-o", path)
	require.Equal(t, cli.ExitOK, code, errs)
	assert.NotEmpty(t, out)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	assert.True(t, bytes.HasPrefix(b, []byte(streamMagic)), "-o FILE still gets the stream")
}

// TestNoFit: a model too big for the GPUs exits ExitNoFit, with the advice in
// the report or, under -q, a line that says where to find it.
func TestNoFit(t *testing.T) {
	big := detected(t, fixtures.Path(t, "configs", "meta-llama__Llama-3.1-70B.json"))
	code, out, errs := runApp(t, big, nil, "--gpus", "t4", "--report")
	assert.Equal(t, cli.ExitNoFit, code)
	assert.NotEmpty(t, out)
	oneLine(t, code, errs, cli.ExitNoFit, "see the advice")

	code, _, errs = runApp(t, big, io.Discard, "--gpus", "t4", "-q")
	oneLine(t, code, errs, cli.ExitNoFit, "drop -q")

	code, _, errs = runApp(t, big, io.Discard, "--gpus", "t4")
	assert.Equal(t, cli.ExitNoFit, code)
	assert.Contains(t, errs, "DOES NOT FIT")
	assert.NotContains(t, errs, "does not fit the GPUs", "the report says it; no extra line")
}

func TestUsageErrors(t *testing.T) {
	in := llamaConfig(t)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--gpus", "t4", "--seq-len", "x"}, "--seq-len"},
		{[]string{"--gpus", "24"}, "bare number"},
		{[]string{"--gpus", "t5"}, "--gpus"},
		{[]string{"--gpus", "24GiB", "--max-memory", "0:30GiB"}, "more than its " + gpusBytes(24)},
		{[]string{"--gpus", "24GiB", "--max-memory", "0:abc"}, "--max-memory"},
		{[]string{"--gpus", "24GiB", "--max-memory", "1:10GiB"}, "no device"},
		{[]string{"--gpus", "t4", "--optimizer", "sgd"}, "sgd"},
		{[]string{"--gpus", "t4", "--gradient-checkpointing", "maybe"}, "maybe"},
		{[]string{"--gpus", "t4", "--emit", "go"}, `--emit "go"`},
		{[]string{"--gpus", "t4", "m.stream"}, "unexpected argument"},
		{[]string{"--nope"}, "--nope"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errs := runApp(t, in, nil, c.args...)
			oneLine(t, code, errs, cli.ExitUsage, c.want)
			assert.Empty(t, out)
		})
	}
}

func gpusBytes(gib int64) string { return fmt.Sprintf("%d.00 GiB", gib) }

func TestInputErrors(t *testing.T) {
	in := llamaConfig(t)
	code, _, errs := runApp(t, in[:len(in)/2], nil, "--gpus", "t4")
	oneLine(t, code, errs, cli.ExitInput, "unexpected EOF")
	code, _, errs = runApp(t, []byte("{\"model_type\": \"llama\"}\n"), nil, "--gpus", "t4")
	assert.Equal(t, cli.ExitInput, code, errs)
	code, _, errs = runApp(t, nil, nil, "--gpus", "t4", "-i", filepath.Join(t.TempDir(), "missing"))
	assert.Equal(t, cli.ExitInput, code, errs)
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("device full") }

func TestOutputError(t *testing.T) {
	code, _, errs := runApp(t, llamaConfig(t), failingWriter{}, "--gpus", "t4", "-q")
	oneLine(t, code, errs, cli.ExitOutput, "device full")
}

// TestExitTable: each library sentinel, wrapped as the library wraps it, maps
// to its documented status, and --help prints the table.
func TestExitTable(t *testing.T) {
	cases := map[error]int{
		plan.ErrSettings:         cli.ExitUsage,
		gpus.ErrSpec:             cli.ExitUsage,
		gpus.ErrSize:             cli.ExitUsage,
		gpus.ErrMaxMem:           cli.ExitUsage,
		gpus.ErrCapOverTotal:     cli.ExitUsage,
		plan.ErrModel:            cli.ExitInput,
		tensorstream.ErrCorrupt:  cli.ExitInput,
		tensorstream.ErrChecksum: cli.ExitInput,
		tensorstream.ErrVersion:  cli.ExitInput,
		plan.ErrNoFit:            cli.ExitNoFit,
		gpus.ErrNoGPU:            cli.ExitFailure,
		errors.New("anything"):   cli.ExitFailure,
		io.ErrUnexpectedEOF:      cli.ExitInput,
	}
	for err, want := range cases {
		assert.Equal(t, want, exitTable.Code(fmt.Errorf("context: %w", err)), "%v", err)
	}
	code, out, _ := runApp(t, nil, nil, "--help")
	require.Equal(t, cli.ExitOK, code)
	for _, st := range exitTable {
		assert.Contains(t, out, fmt.Sprintf("%-3d %s", st.Code, st.Meaning))
	}
	assert.Contains(t, out, "detect testdata/models/llama/config.json | plan --gpus t4 --report")
}
