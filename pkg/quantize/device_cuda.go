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
// auto means the CPU, also in this build: the CPU path keeps up with any pipe
// that feeds the stage, while the GPU path adds the device's start-up (and, on
// a machine's first run, the driver's JIT compile of the PTX) and a host round
// trip per piece, so a GPU is used only when --device names cuda. The figures
// behind this choice are in docs/BENCHMARKS.md ("Whole tool").
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
