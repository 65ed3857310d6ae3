package quantize

import (
	"sync/atomic"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

func TestOffsetGPUMatters(t *testing.T) {
	for n, want := range map[int64]bool{0: false, 1: false, 4096: false, 130560: false, 130561: true, 1 << 20: true, 1 << 30: true} {
		if got := offsetGPUMatters(n); got != want {
			t.Errorf("offsetGPUMatters(%d) = %v, want %v", n, got, want)
		}
	}
}

// TestLocalOffsetGPU: with LocalOffsetGPU the local GPU's geometry is asked
// for once, for the first tensor whose offset it can change, whatever the
// device (the bytes do not depend on where the work runs), and never for a
// stream of small tensors (so that a CUDA build does not touch the driver
// then); the offset then follows it, as with Params.ReduceGPU set to it.
func TestLocalOffsetGPU(t *testing.T) {
	local := quant.ReduceGPU{SMs: 1, ThreadsPerSM: 512}
	var calls atomic.Int32
	old := localReduceGPU
	localReduceGPU = func() quant.ReduceGPU { calls.Add(1); return local }
	t.Cleanup(func() { localReduceGPU = old })

	small := spec{name: "small", dt: tensorstream.BF16, shape: []int64{64, 64}, quantize: true}
	big := spec{name: "big", dt: tensorstream.BF16, shape: []int64{1024, 4096}, quantize: true} // 131,072 blocks of 32
	opt := func(device string) Options {
		o := cpuOptions()
		o.Device, o.LocalOffsetGPU = device, true
		o.Params.BlockSize = 32
		return o
	}
	both := makeStream(t, small, big, small)

	for _, d := range []string{"cpu", "auto"} {
		calls.Store(0)
		mustRun(t, makeStream(t, small), opt(d))
		if n := calls.Load(); n != 0 {
			t.Errorf("--device %s, small tensors only: asked for the local GPU's geometry %d times, want never", d, n)
		}
	}
	o := opt("cpu")
	o.LocalOffsetGPU, o.Params.ReduceGPU = false, local
	want, _ := mustRun(t, both, o)
	def, _ := mustRun(t, both, func() Options { o := opt("cpu"); o.LocalOffsetGPU = false; return o }())
	if sameAfterHeader(t, def, want) {
		t.Fatalf("the big tensor's offset is the same on %v as on the default GPU: the test would prove nothing", local)
	}
	for _, d := range []string{"cpu", "auto"} {
		calls.Store(0)
		got, _ := mustRun(t, both, opt(d))
		if n := calls.Load(); n != 1 {
			t.Errorf("--device %s with a large tensor: asked for the local GPU's geometry %d times, want once", d, n)
		}
		if !sameAfterHeader(t, got, want) {
			t.Errorf("--device %s with LocalOffsetGPU: output differs from Params.ReduceGPU set to the local GPU", d)
		}
	}
}
