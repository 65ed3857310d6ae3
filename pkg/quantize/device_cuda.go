//go:build cuda

package quantize

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"

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
		out = append(out, &gpuBackend{dev: dev, name: fmt.Sprintf("cuda:%d", o), cpu: cpu[0]})
	}
	return out, release, nil
}

// gpuBackend runs quant.Backend's QuantizeBlocks on one GPU: the run of blocks
// goes through Device.Quantize without double quantization (which the
// Encoder does on the CPU, bit-identically), and the float32 absmax section
// comes back into absmax.
type gpuBackend struct {
	dev  *gpu.Device
	name string
	cpu  quant.Backend // for a run the GPU has no memory for
	buf  []byte
}

func (g *gpuBackend) Name() string { return g.name }

func (g *gpuBackend) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	if !p.AllowNonFinite {
		if i := firstNonFinite(src, dt); i >= 0 {
			return &quant.NonFiniteError{Index: first + int64(i), Value: elementF32(src, dt, i)}
		}
	}
	n := int64(len(src) / dt.Size())
	q := p
	q.DoubleQuant = false
	sz := quant.SizesFor(n, q)
	if int64(cap(g.buf)) < sz.Total() {
		g.buf = make([]byte, sz.Total())
	}
	buf := g.buf[:sz.Total()]
	if _, err := g.dev.Quantize(buf, src, dt, n, q); err != nil {
		if errors.Is(err, gpu.ErrOutOfMemory) {
			return g.cpu.QuantizeBlocks(packed, absmax, src, dt, p, first)
		}
		return fmt.Errorf("%w: %s: %w", quant.ErrBackend, g.name, err)
	}
	copy(packed, buf[:sz.Packed])
	for i := range absmax {
		absmax[i] = math.Float32frombits(binary.LittleEndian.Uint32(buf[sz.Packed+int64(4*i):]))
	}
	return nil
}
