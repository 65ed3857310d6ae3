//go:build cuda

package gpu

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
*/
import "C"

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"unsafe"

	"github.com/nf4pipe/nf4pipe/kernels"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"gorgonia.org/cu"
)

// Devices lists the GPUs with their free memory.
func Devices() ([]DeviceInfo, error) {
	n, err := cu.NumDevices()
	if err != nil {
		return nil, fmt.Errorf("%w: counting devices: %v", ErrCUDA, err)
	}
	if n == 0 {
		return nil, ErrNoDevice
	}
	var out []DeviceInfo
	for i := 0; i < n; i++ {
		d, err := Open(i)
		if err != nil {
			return nil, err
		}
		info, err := d.Info()
		d.Close()
		if err != nil {
			return nil, err
		}
		out = append(out, info)
	}
	return out, nil
}

// Device is one GPU: a context owned by a goroutine locked to its OS thread.
type Device struct {
	ordinal int
	work    chan func()
	dev     cu.Device
	ctx     cu.CUContext
	mod     cu.Module
	fn      map[string]cu.Function
	dynmap  cu.DevicePtr // the nested map, 256 float32
	streams [2]cu.Stream
}

// Open creates a context on GPU ordinal and loads the kernels.
func Open(ordinal int) (*Device, error) {
	d := &Device{ordinal: ordinal, work: make(chan func()), fn: map[string]cu.Function{}}
	errc := make(chan error)
	go d.loop(errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	return d, nil
}

func (d *Device) loop(errc chan<- error) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	if err := d.init(); err != nil {
		errc <- err
		return
	}
	errc <- nil
	for f := range d.work {
		f()
	}
	d.ctx.Destroy()
}

func (d *Device) init() error {
	n, err := cu.NumDevices()
	if err != nil || n == 0 {
		return fmt.Errorf("%w (cuda:%d)", ErrNoDevice, d.ordinal)
	}
	if d.ordinal < 0 || d.ordinal >= n {
		return fmt.Errorf("%w: cuda:%d (have %d)", ErrNoDevice, d.ordinal, n)
	}
	if d.dev, err = cu.GetDevice(d.ordinal); err != nil {
		return fmt.Errorf("%w: device %d: %v", ErrCUDA, d.ordinal, err)
	}
	if d.ctx, err = d.dev.MakeContext(cu.SchedAuto); err != nil {
		return fmt.Errorf("%w: context on cuda:%d: %v", ErrCUDA, d.ordinal, err)
	}
	if d.mod, err = cu.LoadData(kernels.NF4PTX); err != nil {
		return fmt.Errorf("%w: loading kernels on cuda:%d: %v", ErrCUDA, d.ordinal, err)
	}
	for _, name := range []string{
		"quantize4_f32_nf4", "quantize4_f16_nf4", "quantize4_bf16_nf4",
		"quantize4_f32_fp4", "quantize4_f16_fp4", "quantize4_bf16_fp4",
		"nest_quantize", "dequantize4_f32", "dequantize4_f16", "dequantize4_bf16",
	} {
		f, err := d.mod.Function(name)
		if err != nil {
			return fmt.Errorf("%w: kernel %s: %v", ErrCUDA, name, err)
		}
		d.fn[name] = f
	}
	for i := range d.streams {
		if d.streams[i], err = cu.MakeStream(cu.NonBlocking); err != nil {
			return fmt.Errorf("%w: stream: %v", ErrCUDA, err)
		}
	}
	m := quant.NestedMap
	if d.dynmap, err = cu.MemAlloc(256 * 4); err != nil {
		return fmt.Errorf("%w: %v", ErrOutOfMemory, err)
	}
	return cuErr("upload map", cu.MemcpyHtoD(d.dynmap, unsafe.Pointer(&m[0]), 256*4))
}

// do runs f on the device's thread.
func (d *Device) do(f func() error) error {
	errc := make(chan error, 1)
	d.work <- func() { errc <- f() }
	return <-errc
}

// Close destroys the context.
func (d *Device) Close() error {
	close(d.work)
	return nil
}

// Info describes the device, with its free memory now.
func (d *Device) Info() (DeviceInfo, error) {
	info := DeviceInfo{Ordinal: d.ordinal}
	err := d.do(func() error {
		var err error
		if info.Name, err = d.dev.Name(); err != nil {
			return cuErr("name", err)
		}
		if info.Major, info.Minor, err = d.dev.ComputeCapability(); err != nil {
			return cuErr("compute capability", err)
		}
		info.FreeBytes, info.TotalBytes, err = cu.MemInfo()
		return cuErr("memory info", err)
	})
	return info, err
}

// MemInfo returns the device's free and total memory.
func (d *Device) MemInfo() (free, total int64, err error) {
	err = d.do(func() error {
		var e error
		free, total, e = cu.MemInfo()
		return cuErr("memory info", e)
	})
	return
}

func cuErr(what string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, cu.OutOfMemory) {
		return fmt.Errorf("%w: %s: %v", ErrOutOfMemory, what, err)
	}
	return fmt.Errorf("%w: %s: %v", ErrCUDA, what, err)
}

// pinned is page-locked host memory, so async copies overlap with kernels.
type pinned struct {
	p unsafe.Pointer
	b []byte
}

func allocPinned(n int) (*pinned, error) {
	var p unsafe.Pointer
	if r := C.cuMemHostAlloc(&p, C.size_t(max(n, 1)), 0); r != C.CUDA_SUCCESS {
		return nil, fmt.Errorf("%w: pinned host memory of %d bytes: error %d", ErrOutOfMemory, n, int(r))
	}
	return &pinned{p: p, b: unsafe.Slice((*byte)(p), n)}, nil
}

func (p *pinned) free() {
	if p != nil {
		C.cuMemFreeHost(p.p)
	}
}

// launch runs kernel name with 1-D geometry; args are uint64 values (device
// pointers, counts; int parameters read the low half).
func (d *Device) launch(name string, threads int64, block int, stream cu.Stream, args ...uint64) error {
	grid := (threads + int64(block) - 1) / int64(block)
	if grid == 0 {
		return nil
	}
	ptrs := make([]unsafe.Pointer, len(args))
	for i := range args {
		ptrs[i] = unsafe.Pointer(&args[i])
	}
	return cuErr("launch "+name, d.fn[name].Launch(int(grid), 1, 1, block, 1, 1, 0, stream, ptrs))
}

func dtName(dt quant.DType) string {
	switch dt {
	case quant.F32:
		return "f32"
	case quant.F16:
		return "f16"
	}
	return "bf16"
}

func log2(n int) uint64 {
	var l uint64
	for 1<<l < n {
		l++
	}
	return l
}

// quantThreads is the launch size of quantize4 for n elements.
func quantThreads(n int64, blocksize int) int64 {
	tpb := int64(min(blocksize/8, 32))
	return (n + int64(blocksize) - 1) / int64(blocksize) * tpb
}

// ChunkBytes is the input chunk size of Quantize's host pipeline.
var ChunkBytes int64 = 64 << 20

// Quantize quantizes n elements of src (raw little-endian dt) into dst, which
// holds quant.SizesFor(n, p).Total() bytes laid out as a stream payload
// (packed | absmax | nested absmax), and returns the double-quantization
// offset. The input goes up in chunks through pinned buffers on two streams,
// so copies and kernels overlap. When the device runs out of memory it retries
// with smaller chunks, then fails with ErrOutOfMemory.
func (d *Device) Quantize(dst, src []byte, dt quant.DType, n int64, p quant.Params) (float32, error) {
	if err := checkArgs(len(src), dt, n, p); err != nil {
		return 0, fmt.Errorf("gpu quantize: %w", err)
	}
	sz := quant.SizesFor(n, p)
	if int64(len(dst)) != sz.Total() {
		return 0, fmt.Errorf("gpu quantize: %w: dst holds %d bytes, payload needs %d", ErrArgs, len(dst), sz.Total())
	}
	var offset float32
	chunk := ChunkBytes
	for {
		err := d.do(func() error {
			var err error
			offset, err = d.quantize(dst, src, dt, n, p, sz, chunk)
			return err
		})
		if err == nil || !isOOM(err) || chunk <= 1<<20 {
			return offset, err
		}
		chunk /= 4
	}
}

func isOOM(err error) bool { return errors.Is(err, ErrOutOfMemory) }

type devBuf struct{ ptrs []cu.DevicePtr }

func (b *devBuf) alloc(n int64) (cu.DevicePtr, error) {
	p, err := cu.MemAlloc(max(n, 16))
	if err != nil {
		return 0, cuErr(fmt.Sprintf("allocating %d bytes", n), err)
	}
	b.ptrs = append(b.ptrs, p)
	return p, nil
}

func (b *devBuf) free() {
	for _, p := range b.ptrs {
		cu.MemFree(p)
	}
}

func (d *Device) quantize(dst, src []byte, dt quant.DType, n int64, p quant.Params, sz quant.Sizes, chunkBytes int64) (float32, error) {
	es := int64(dt.Size())
	bs := int64(p.BlockSize)
	// Chunks hold whole blocks.
	chunkElems := max(chunkBytes/es/bs, 1) * bs
	chunkElems = min(chunkElems, (n+bs-1)/bs*bs)
	var mem devBuf
	defer mem.free()
	var host [2]*pinned
	defer host[0].free()
	defer host[1].free()
	var xin, pout [2]cu.DevicePtr
	for i := range 2 {
		var err error
		if xin[i], err = mem.alloc(chunkElems * es); err != nil {
			return 0, err
		}
		if pout[i], err = mem.alloc((chunkElems + 1) / 2); err != nil {
			return 0, err
		}
		if host[i], err = allocPinned(int(chunkElems*es + (chunkElems+1)/2)); err != nil {
			return 0, err
		}
	}
	absmax, err := mem.alloc(sz.Blocks * 4)
	if err != nil {
		return 0, err
	}
	kname := "quantize4_" + dtName(dt) + "_" + string(p.Type)
	type pending struct {
		packedOff, packedLen int64
	}
	var inflight [2]*pending
	finish := func(s int) error {
		if inflight[s] == nil {
			return nil
		}
		if err := cuErr("sync", d.streams[s].Synchronize()); err != nil {
			return err
		}
		pd := inflight[s]
		in := chunkElems * es
		copy(dst[pd.packedOff:pd.packedOff+pd.packedLen], host[s].b[in:in+pd.packedLen])
		inflight[s] = nil
		return nil
	}
	for i, start := 0, int64(0); start < n; i, start = i+1, start+chunkElems {
		s := i % 2
		if err := finish(s); err != nil {
			return 0, err
		}
		cnt := min(chunkElems, n-start)
		in := cnt * es
		copy(host[s].b[:in], src[start*es:start*es+in])
		st := d.streams[s]
		if err := cuErr("copy to device", cu.MemcpyHtoDAsync(xin[s], host[s].p, in, st)); err != nil {
			return 0, err
		}
		if err := d.launch(kname, quantThreads(cnt, p.BlockSize), 256, st,
			uint64(xin[s]), uint64(cnt), uint64(p.BlockSize), uint64(pout[s]), uint64(absmax)+uint64(start/bs*4)); err != nil {
			return 0, err
		}
		plen := (cnt + 1) / 2
		hostOut := unsafe.Add(host[s].p, chunkElems*es)
		if err := cuErr("copy to host", cu.MemcpyDtoHAsync(hostOut, pout[s], plen, st)); err != nil {
			return 0, err
		}
		inflight[s] = &pending{packedOff: start / 2, packedLen: plen}
	}
	for s := range 2 {
		if err := finish(s); err != nil {
			return 0, err
		}
	}
	// Absmax: float32 values come back; with double quant the host takes their
	// mean in torch's order, and the nested pass runs on the device.
	am := make([]float32, sz.Blocks)
	if err := cuErr("copy absmax", cu.MemcpyDtoH(unsafe.Pointer(&am[0]), absmax, sz.Blocks*4)); err != nil {
		return 0, err
	}
	rest := dst[sz.Packed:]
	if !p.DoubleQuant {
		for i, v := range am {
			binary.LittleEndian.PutUint32(rest[4*i:], math.Float32bits(v))
		}
		return 0, nil
	}
	offset := MeanF32(am)
	codes, nested, err := d.nest(&mem, absmax, sz, offset)
	if err != nil {
		return 0, err
	}
	if err := cuErr("copy codes", cu.MemcpyDtoH(unsafe.Pointer(&rest[0]), codes, sz.Blocks)); err != nil {
		return 0, err
	}
	return offset, cuErr("copy nested", cu.MemcpyDtoH(unsafe.Pointer(&rest[sz.Blocks]), nested, sz.Nested))
}

// nest runs double quantization of the device absmax values with offset.
func (d *Device) nest(mem *devBuf, absmax cu.DevicePtr, sz quant.Sizes, offset float32) (codes, nested cu.DevicePtr, err error) {
	off, err := mem.alloc(4)
	if err != nil {
		return 0, 0, err
	}
	if err := cuErr("copy offset", cu.MemcpyHtoD(off, unsafe.Pointer(&offset), 4)); err != nil {
		return 0, 0, err
	}
	if codes, err = mem.alloc(sz.Blocks); err != nil {
		return 0, 0, err
	}
	if nested, err = mem.alloc(sz.Nested); err != nil {
		return 0, 0, err
	}
	if err := d.launch("nest_quantize", sz.NestedBlocks()*32, 256, d.streams[0],
		uint64(absmax), uint64(sz.Blocks), uint64(off), uint64(d.dynmap), uint64(codes), uint64(nested)); err != nil {
		return 0, 0, err
	}
	return codes, nested, cuErr("sync", d.streams[0].Synchronize())
}

// Dequantize turns a stream payload back into n elements of dt in dst.
func (d *Device) Dequantize(dst, payload []byte, dt quant.DType, n int64, p quant.Params, offset float32) error {
	if err := checkArgs(len(dst), dt, n, p); err != nil {
		return fmt.Errorf("gpu dequantize: %w", err)
	}
	sz := quant.SizesFor(n, p)
	if int64(len(payload)) != sz.Total() {
		return fmt.Errorf("gpu dequantize: %w: payload of %d bytes, want %d", ErrArgs, len(payload), sz.Total())
	}
	return d.do(func() error {
		var mem devBuf
		defer mem.free()
		// Each section in its own allocation, so float32 sections are aligned.
		up := func(b []byte) (cu.DevicePtr, error) {
			ptr, err := mem.alloc(int64(len(b)))
			if err != nil || len(b) == 0 {
				return ptr, err
			}
			return ptr, cuErr("copy payload", cu.MemcpyHtoD(ptr, unsafe.Pointer(&b[0]), int64(len(b))))
		}
		in, err := up(payload[:sz.Packed])
		if err != nil {
			return err
		}
		sec, err := up(payload[sz.Packed : sz.Packed+sz.Absmax])
		if err != nil {
			return err
		}
		nest, err := up(payload[sz.Packed+sz.Absmax:])
		if err != nil {
			return err
		}
		out, err := mem.alloc(int64(len(dst)))
		if err != nil {
			return err
		}
		off, err := mem.alloc(4)
		if err != nil {
			return err
		}
		if err := cuErr("copy offset", cu.MemcpyHtoD(off, unsafe.Pointer(&offset), 4)); err != nil {
			return err
		}
		absmax, codes, nested := uint64(sec), uint64(0), uint64(0)
		if p.DoubleQuant {
			codes, nested, absmax = uint64(sec), uint64(nest), 0
		}
		if err := d.launchDequant(dt, n, p, uint64(in), absmax, codes, nested, uint64(off), uint64(out), d.streams[0]); err != nil {
			return err
		}
		if err := cuErr("sync", d.streams[0].Synchronize()); err != nil {
			return err
		}
		return cuErr("copy result", cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), out, int64(len(dst))))
	})
}

func (d *Device) launchDequant(dt quant.DType, n int64, p quant.Params, packed, absmax, codes, nested, off, out uint64, st cu.Stream) error {
	qt := uint64(0)
	if p.Type == quant.FP4 {
		qt = 1
	}
	return d.launch("dequantize4_"+dtName(dt), (n+7)/8, 256, st,
		packed, uint64(n), log2(p.BlockSize), qt, absmax, codes, nested, off, uint64(d.dynmap), out)
}

// Buffer is device memory holding uploaded bytes.
type Buffer struct {
	d    *Device
	ptr  cu.DevicePtr
	size int64
}

// Upload copies b into new device memory.
func (d *Device) Upload(b []byte) (*Buffer, error) {
	buf := &Buffer{d: d, size: int64(len(b))}
	err := d.do(func() error {
		var err error
		if buf.ptr, err = cu.MemAlloc(max(buf.size, 1)); err != nil {
			return cuErr(fmt.Sprintf("allocating %d bytes", buf.size), err)
		}
		if buf.size == 0 {
			return nil
		}
		return cuErr("upload", cu.MemcpyHtoD(buf.ptr, unsafe.Pointer(&b[0]), buf.size))
	})
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// Download copies the buffer back into dst, which must be as long.
func (b *Buffer) Download(dst []byte) error {
	if int64(len(dst)) != b.size {
		return fmt.Errorf("gpu download: %w: %d bytes into %d", ErrArgs, b.size, len(dst))
	}
	if b.size == 0 {
		return nil
	}
	return b.d.do(func() error {
		return cuErr("download", cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), b.ptr, b.size))
	})
}

// Free releases the buffer.
func (b *Buffer) Free() error {
	return b.d.do(func() error { return cuErr("free", cu.MemFree(b.ptr)) })
}
