package detect

import (
	"bytes"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	nf4cli "github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

func TestStreamProgress(t *testing.T) {
	m, err := Open(fixtures.Path(t, "models", "llama"), arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var p bytes.Buffer
	now := time.Unix(0, 0)
	// A second passes at every clock read, so every count redraws.
	prog := nf4cli.NewProgressTo(&p, "detect", 0, func() time.Time { now = now.Add(time.Second); return now })
	m.Progress = prog
	if err := m.Stream(io.Discard, tensorstream.Stage{Name: "detect"}); err != nil {
		t.Fatal(err)
	}
	total := m.PayloadBytes()
	if total == 0 || m.Facts.Bytes.Source != total {
		t.Fatalf("PayloadBytes %d, facts say %d", total, m.Facts.Bytes.Source)
	}
	if tensors, n := prog.Counted(); tensors != len(m.Tensors) || n != total {
		t.Errorf("counted %d tensors, %d bytes; streamed %d, %d", tensors, n, len(m.Tensors), total)
	}
	lines := strings.Split(strings.TrimPrefix(p.String(), "\r"), "\r")
	last := lines[len(lines)-1]
	want := fmt.Sprintf("detect: %d/%d tensors, ", len(m.Tensors)-1, len(m.Tensors))
	if !strings.HasPrefix(last, want) || !strings.Contains(last, " (100%), ") {
		t.Errorf("last progress line %q of %d", last, len(lines))
	}
}
