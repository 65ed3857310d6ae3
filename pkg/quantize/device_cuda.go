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

// openBackends opens the GPUs d names (every visible one for plain cuda).
//
// auto means the CPU, also in this build: the stage takes 4.4-4.8 GB/s on 16
// cores (AVX2, about 2 GB/s a core), faster than detect's pipe delivers, while
// the GPU path adds the device's start-up and a host round trip per piece. On
// the 16-core H200 machine, 2026-11-27 (docs/BENCHMARKS.md, "Whole tool"):
// detect | quantize | place --out took 1.1-1.4 s on the CPU and 1.9 s with
// --device cuda (and the first CUDA run on a machine also waits for the
// driver's JIT compile of the PTX: 6.2 s for detect | quantize). The GPU is
// there for --device cuda.
//
// A GPU out of device memory quantizes in smaller chunks, then on the CPU,
// with one warning through warn (see gpu.Device.BackendWithWarn); one whose
// context cannot even be created for lack of memory (another process holds it
// all) is replaced by the CPU at once, with a warning too. The bytes are the
// same either way.
func openBackends(d Device, threads int, warn func(string)) ([]quant.Backend, func(), error) {
	cpu := []quant.Backend{quant.CPU(threads)}
	if d.Kind == "cpu" || d.Kind == "auto" {
		return cpu, func() {}, nil
	}
	ords := d.Ordinals
	if len(ords) == 0 {
		// Count, not gpu.Devices: that would open every GPU once more.
		n, err := gpu.Count()
		if err == nil && n == 0 {
			err = gpu.ErrNoDevice
		}
		if err != nil {
			return nil, nil, fmt.Errorf("device %s: %w", d, err)
		}
		for i := range n {
			ords = append(ords, i)
		}
	}
	var devs []*gpu.Device
	release := func() {
		for _, dev := range devs {
			dev.Close()
		}
	}
	var out []quant.Backend
	for _, o := range ords {
		dev, err := gpu.Open(o)
		if errors.Is(err, gpu.ErrOutOfMemory) {
			warn(fmt.Sprintf("cuda:%d: out of device memory opening it, quantizing on the CPU", o))
			out = append(out, quant.CPU(threads))
			continue
		}
		if err != nil {
			release()
			return nil, nil, fmt.Errorf("device %s: GPU %d: %w", d, o, err)
		}
		devs = append(devs, dev)
		out = append(out, dev.BackendWithWarn(warn))
	}
	if testHookOpened != nil {
		testHookOpened(devs)
	}
	return out, release, nil
}

// testHookOpened, when a test sets it, sees the devices openBackends opened
// before any work goes to them (to fill their memory).
var testHookOpened func([]*gpu.Device)
