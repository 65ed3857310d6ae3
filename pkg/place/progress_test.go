package place

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	icli "github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

func TestPlaceProgress(t *testing.T) {
	stream := pipelineStream(t, fixtures.Path(t, "models", "llama"))
	var p bytes.Buffer
	now := time.Unix(0, 0)
	// A second passes at every clock read, so every count redraws.
	prog := icli.NewProgressTo(&p, "place", 0, func() time.Time { now = now.Add(time.Second); return now })
	var emitted bytes.Buffer
	rep, err := Place(context.Background(), bytes.NewReader(stream),
		Options{Out: filepath.Join(t.TempDir(), "out"), Emit: &emitted, Progress: prog})
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimPrefix(p.String(), "\r"), "\r")
	last := lines[len(lines)-1]
	// The payload bytes received, of no known total; the tensors are detect's.
	if tensors, n := prog.Counted(); tensors != rep.Tensors || n != rep.Payload {
		t.Errorf("counted %d tensors, %d bytes; placed %d, %d", tensors, n, rep.Tensors, rep.Payload)
	}
	want := fmt.Sprintf("place: %d/%d tensors, ", rep.Tensors-1, rep.Tensors)
	if !strings.HasPrefix(last, want) || strings.Contains(last, "ETA") {
		t.Errorf("last progress line %q, want it to start %q", last, want)
	}
	if !strings.HasSuffix(last, "model.norm.weight\x1b[K") {
		t.Errorf("last progress line %q does not name the last tensor", last)
	}
}
