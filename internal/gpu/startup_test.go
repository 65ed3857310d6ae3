//go:build cuda

package gpu

import (
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// TestBenchStartup times what a GPU costs a process before and after its
// work: initializing the driver and counting the GPUs, opening one (context,
// module, tables), the host pipeline's workspace at ChunkBytes (as it was)
// or as 4 MiB runs need it, two such runs, and closing.
// A timing report for docs/BENCHMARKS.md, not an assertion; it runs when
// NF4PIPE_GPU_BENCH is set.
func TestBenchStartup(t *testing.T) {
	if os.Getenv("NF4PIPE_GPU_BENCH") == "" {
		t.Skip("set NF4PIPE_GPU_BENCH=1 to time the GPU's start-up")
	}
	since := func(t0 time.Time) string { return time.Since(t0).Round(10 * time.Microsecond).String() }
	t0 := time.Now()
	n, err := Count()
	if err != nil || n == 0 {
		t.Skipf("no usable GPU: %d, %v", n, err)
	}
	t.Logf("STARTUP cuInit + count: %s", since(t0))
	for round, pinAll := range []bool{true, false, true, false} {
		t0 = time.Now()
		d, err := Open(0)
		if err != nil {
			t.Fatal(err)
		}
		open := since(t0)
		// The workspace as it was before it grew with the runs: ChunkBytes.
		ws := "as the runs need it"
		if pinAll {
			t0 = time.Now()
			if err := d.do(func() error { _, err := d.workspaceFor(ChunkBytes); return err }); err != nil {
				t.Fatal(err)
			}
			ws = fmt.Sprintf("of %d MiB chunks %s", ChunkBytes>>20, since(t0))
		}
		src := make([]byte, 4<<20)
		packed, absmax := make([]byte, 1<<20), make([]float32, 1<<15)
		b := d.Backend()
		t0 = time.Now()
		if err := b.QuantizeBlocks(packed, absmax, src, quant.BF16, quant.DefaultParams(), 0); err != nil {
			t.Fatal(err)
		}
		first := since(t0)
		t0 = time.Now()
		if err := b.QuantizeBlocks(packed, absmax, src, quant.BF16, quant.DefaultParams(), 0); err != nil {
			t.Fatal(err)
		}
		second := since(t0)
		t0 = time.Now()
		d.Close()
		closed := since(t0)
		<-d.gone
		gone := since(t0)
		t.Logf("STARTUP round %d: open %s, workspace %s, first 4 MiB run %s, second %s, close %s (context gone %s)",
			round, open, ws, first, second, closed, gone)
	}
}
