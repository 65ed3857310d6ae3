package verify

import (
	"bytes"
	"fmt"
	"github.com/stretchr/testify/require"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
)

func TestRunProgress(t *testing.T) {
	ref := fixtures.Path(t, "models", "llama")
	ck, err := safetensors.Open(ref)
	require.NoError(t, err)
	var total int64
	all := ck.TensorsByName()
	for _, ti := range all {
		total += ti.Size()
	}
	ck.Close()

	var p bytes.Buffer
	// A second passes at every clock read, so every count redraws; the clock
	// is read from the comparing goroutines too.
	var secs atomic.Int64
	prog := cli.NewProgressTo(&p, "verify", 0, func() time.Time { return time.Unix(secs.Add(1), 0) })
	rep, err := Run(Options{Checkpoint: fixtures.Path(t, "models", "llama-bnb-nf4"), Reference: ref, Progress: prog})
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	// Every reference byte is read once to be compared.
	if tensors, n := prog.Counted(); tensors != len(all) || n != total {
		t.Errorf("counted %d tensors, %d bytes; the reference has %d, %d", tensors, n, len(all), total)
	}
	lines := strings.Split(strings.TrimPrefix(p.String(), "\r"), "\r")
	last := lines[len(lines)-1]
	if want := fmt.Sprintf("verify: %d/%d tensors, ", len(all)-1, len(all)); !strings.HasPrefix(last, want) || !strings.Contains(last, " (100%), ") {
		t.Errorf("last progress line %q, want it to start %q and be at 100%%", last, want)
	}
}
