//go:build !cuda

package gpu

import "github.com/nf4pipe/nf4pipe/pkg/quant"

// Device is a GPU opened for work. In this build there is none.
type Device struct{}

// Devices lists the GPUs. Without CUDA it fails with ErrNoCUDA.
func Devices() ([]DeviceInfo, error) { return nil, ErrNoCUDA }

// Count reports ErrNoCUDA: this build has no GPU support.
func Count() (int, error) { return 0, ErrNoCUDA }

// Open opens GPU ordinal. Without CUDA it fails with ErrNoCUDA.
func Open(ordinal int) (*Device, error) { return nil, ErrNoCUDA }

// Close releases the device.
func (d *Device) Close() error { return ErrNoCUDA }

// Info describes the device.
func (d *Device) Info() (DeviceInfo, error) { return DeviceInfo{}, ErrNoCUDA }

// MemInfo returns the device's free and total memory.
func (d *Device) MemInfo() (free, total int64, err error) { return 0, 0, ErrNoCUDA }

// Backend returns a quant.Backend on the device; without CUDA it fails every run.
func (d *Device) Backend() quant.Backend { return noBackend{} }

// BackendWithWarn is Backend with a warning callback; without CUDA it fails every run.
func (d *Device) BackendWithWarn(warn func(string)) quant.Backend { return noBackend{} }

type noBackend struct{}

func (noBackend) Name() string { return "cuda (not built)" }

func (noBackend) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	return ErrNoCUDA
}

// Quantize quantizes n elements of src (raw little-endian dt) into dst, which
// holds quant.SizesFor(n, p).Total() bytes laid out as a stream payload, and
// returns the double-quantization offset.
func (d *Device) Quantize(dst, src []byte, dt quant.DType, n int64, p quant.Params) (float32, error) {
	return 0, ErrNoCUDA
}

// Dequantize turns a payload back into n elements of dt in dst.
func (d *Device) Dequantize(dst, payload []byte, dt quant.DType, n int64, p quant.Params, offset float32) error {
	return ErrNoCUDA
}

// Buffer is device memory holding uploaded bytes.
type Buffer struct{}

// Upload copies b into new device memory.
func (d *Device) Upload(b []byte) (*Buffer, error) { return nil, ErrNoCUDA }

// Download copies the buffer back into dst.
func (b *Buffer) Download(dst []byte) error { return ErrNoCUDA }

// Free releases the buffer.
func (b *Buffer) Free() error { return ErrNoCUDA }

// ReduceGeometry reports ErrNoCUDA: this build has no GPU support.
func ReduceGeometry(ordinal int) (quant.ReduceGPU, error) { return quant.ReduceGPU{}, ErrNoCUDA }
