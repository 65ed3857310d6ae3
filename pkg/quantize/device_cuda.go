//go:build cuda

package quantize

import (
	"errors"
	"fmt"

	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// CUDABuilt reports whether this build can use GPUs.
const CUDABuilt = true

// openBackends returns the backends for d. A GPU is opened in the
// background (hybrid.go): the CPU quantizes until it is ready, so the
// device's start-up (context, module load, pinned buffers: about 0.45 s on
// an H200 host) no longer comes before the first block.
//
// cpu: the CPU alone; the driver is not initialized (gpu, cudainit) but for
// the local GPU's offset geometry where Options.LocalOffsetGPU asks for it,
// so a CUDA build runs as the CPU build does, on a machine without a GPU too.
//
// cuda (every visible GPU) and cuda:N,...: the driver is initialized and its
// device count taken first, before any output, so that a machine without a
// usable GPU fails at once with one line and an empty stream; then each GPU
// listed gets a hybrid of its own (tensors go to them in turn) that hands
// all its work to the GPU once it is open. A GPU whose context cannot be
// created for lack of memory (another process holds it all) leaves its
// share to the CPU with one warning; a GPU out of memory later quantizes in
// smaller chunks, then on the CPU, with one warning (gpu.Device.BackendWithWarn).
// Any other failure to open fails the run when the next run of blocks comes.
//
// auto: one hybrid over the CPU and GPU 0 (the driver initialized on its
// opening goroutine, overlapping the CPU's work) that shares each run of blocks
// between them in proportion to their measured throughput and stops giving
// the GPU work when sharing measures slower than the CPU alone (router).
// No GPU, no driver or any failure of the GPU only leaves the CPU, silently.
// The bytes are the same on every path.
func openBackends(d Device, threads int, warn func(string)) ([]quant.Backend, func(), error) {
	cpu := quant.CPU(threads)
	switch d.Kind {
	case "cpu":
		return []quant.Backend{cpu}, func() {}, nil
	case "auto":
		h := newHybrid(cpu, "cuda:0", shared, openGPU(0, true, func(string) {}))
		return []quant.Backend{h}, h.release, nil
	}
	// Count, not gpu.Devices: that would open every GPU once more.
	n, err := gpu.Count()
	if err == nil && n == 0 {
		err = gpu.ErrNoDevice
	}
	if err != nil {
		return nil, nil, fmt.Errorf("device %s: %w", d, err)
	}
	ords := d.Ordinals
	if len(ords) == 0 {
		for i := range n {
			ords = append(ords, i)
		}
	}
	for _, o := range ords {
		if o >= n {
			return nil, nil, fmt.Errorf("device %s: GPU %d: %w: cuda:%d (have %d)", d, o, gpu.ErrNoDevice, o, n)
		}
	}
	var hs []*hybrid
	var out []quant.Backend
	for _, o := range ords {
		h := newHybrid(cpu, fmt.Sprintf("cuda:%d", o), gpuAlone, openGPU(o, false, warn))
		hs = append(hs, h)
		out = append(out, h)
	}
	release := func() {
		for _, h := range hs {
			h.release()
		}
	}
	return out, release, nil
}

// localReduceGPU is GPU 0's reduction geometry, or the zero ReduceGPU
// (quant.DefaultReduceGPU) where the driver finds none. A variable, so that
// tests can count the calls.
var localReduceGPU = func() quant.ReduceGPU {
	if n, err := gpu.Count(); err == nil && n > 0 {
		if g, err := gpu.ReduceGeometry(0); err == nil {
			return g
		}
	}
	return quant.ReduceGPU{}
}

// openGPU opens GPU ordinal and warms it: one small run of blocks
// allocates its workspace (device memory and pinned staging) and launches
// the default kernel once, so that none of that waits on the first real
// run. Under auto every failure is errFallBack; otherwise only a context
// that cannot be created for lack of memory is, with a warning.
func openGPU(ordinal int, auto bool, warn func(string)) gpuOpener {
	return func() (quant.Backend, func(), error) {
		fallBack := func(err error) (quant.Backend, func(), error) {
			return nil, nil, fmt.Errorf("%w: cuda:%d: %w", errFallBack, ordinal, err)
		}
		if auto {
			n, err := gpu.Count()
			if err == nil && n == 0 {
				err = gpu.ErrNoDevice
			}
			if err != nil {
				return fallBack(err)
			}
		}
		dev, err := gpu.Open(ordinal)
		switch {
		case err != nil && (auto || errors.Is(err, gpu.ErrOutOfMemory)):
			if !auto {
				warn(fmt.Sprintf("cuda:%d: out of device memory opening it, quantizing on the CPU", ordinal))
			}
			return fallBack(err)
		case err != nil:
			return nil, nil, fmt.Errorf("device cuda:%d: %w", ordinal, err)
		}
		if testHookOpened != nil {
			testHookOpened([]*gpu.Device{dev})
		}
		b := dev.BackendWithWarn(warn)
		if err := warm(b); err != nil {
			dev.Close()
			if auto {
				return fallBack(err)
			}
			return nil, nil, fmt.Errorf("device cuda:%d: %w", ordinal, err)
		}
		return b, func() { dev.Close() }, nil
	}
}

// warm quantizes one small bf16 run with the default parameters: whole
// tiles and one block more, so that both kernels a run may need (tiles, and
// a warp per block for the rest) have been launched once.
func warm(b quant.Backend) error {
	p := quant.DefaultParams()
	const n = 16<<10 + 64
	src := make([]byte, 2*n)
	for i := 0; i < len(src); i += 2 {
		src[i], src[i+1] = 0x80, 0x3f // bf16 1.0
	}
	return b.QuantizeBlocks(make([]byte, n/2), make([]float32, n/p.BlockSize), src, quant.BF16, p, 0)
}

// testHookOpened, when a test sets it, sees each device a GPU opener opened
// before any work goes to it (to fill its memory).
var testHookOpened func([]*gpu.Device)
