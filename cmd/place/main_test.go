package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// llamaStream is the tiny llama, detected and quantized in-process.
func llamaStream(t *testing.T) []byte {
	t.Helper()
	m, err := detect.Open(fixtures.Path(t, "models", "llama"), arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var det, q bytes.Buffer
	if err := m.Stream(&det, tensorstream.Stage{Name: "detect", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	o := quantize.DefaultOptions()
	o.Device = "cpu"
	if _, err := quantize.Run(&det, &q, o); err != nil {
		t.Fatal(err)
	}
	return q.Bytes()
}

func runCLI(stdin []byte, stdout, stderr io.Writer, args ...string) int {
	app := newApp()
	app.Reader, app.Writer, app.ErrWriter = bytes.NewReader(stdin), stdout, stderr
	return cli.Run(app, exitTable, append([]string{"place"}, args...))
}

func TestCLI(t *testing.T) {
	stream := llamaStream(t)
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	var stdout, stderr bytes.Buffer
	if code := runCLI(stream, &stdout, &stderr, "--out", out); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	if !strings.HasPrefix(stderr.String(), "place: wrote "+out) || strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("summary %q", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout, not a pipe, got %d bytes of stream", stdout.Len())
	}
	stdout.Reset()
	stderr.Reset()
	if code := runCLI(stream, &stdout, &stderr, "--out", out); code != cli.ExitOutput || !strings.Contains(stderr.String(), "--force") {
		t.Errorf("existing dir: exit %d (%s), want 4", code, stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := runCLI(stream, &stdout, &stderr, "--out", out, "--force", "--emit-stream"); code != 0 || stdout.Len() < len(stream)/2 {
		t.Errorf("--emit-stream: exit %d, %d bytes (%s)", code, stdout.Len(), stderr.String())
	}
	stdout.Reset()
	stderr.Reset()
	if code := runCLI(stream, &stdout, &stderr, "--json", "--out", out, "--force"); code != 0 || stdout.Len() != 0 || !strings.Contains(stderr.String(), `"shards": 1`) {
		t.Errorf("--json: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
	for _, args := range [][]string{{}, {"--out", out, "--max-shard-size", "lots"}, {"--nope"}} {
		stderr.Reset()
		if code := runCLI(stream, io.Discard, &stderr, args...); code != cli.ExitUsage {
			t.Errorf("%v: exit %d (%s), want 2", args, code, stderr.String())
		}
	}
	stderr.Reset()
	if code := runCLI(stream[:100], io.Discard, &stderr, "--out", filepath.Join(parent, "x")); code != cli.ExitInput {
		t.Errorf("truncated: exit %d (%s), want 3", code, stderr.String())
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 1 {
		t.Errorf("left in %s: %v", parent, ents)
	}
}
