//go:build cuda

package quantize

import (
	"fmt"

	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// CUDABuilt reports whether this build can use GPUs.
const CUDABuilt = true

// openBackends opens the GPUs d names (every visible one for auto and plain
// cuda). auto falls back to the CPU when there is no usable GPU.
func openBackends(d Device, threads int) ([]quant.Backend, func(), error) {
	cpu := []quant.Backend{quant.CPU(threads)}
	if d.Kind == "cpu" {
		return cpu, func() {}, nil
	}
	ords := d.Ordinals
	if len(ords) == 0 {
		infos, err := gpu.Devices()
		if err == nil && len(infos) == 0 {
			err = gpu.ErrNoDevice
		}
		if err != nil {
			if d.Kind == "auto" {
				return cpu, func() {}, nil
			}
			return nil, nil, fmt.Errorf("--device %s: %w", d, err)
		}
		for _, in := range infos {
			ords = append(ords, in.Ordinal)
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
		if err != nil {
			release()
			if d.Kind == "auto" {
				return cpu, func() {}, nil
			}
			return nil, nil, fmt.Errorf("--device %s: GPU %d: %w", d, o, err)
		}
		devs = append(devs, dev)
		out = append(out, dev.Backend())
	}
	return out, release, nil
}
