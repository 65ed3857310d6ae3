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

	"github.com/nf4pipe/nf4pipe/internal/gpu/cudainit"
	"github.com/nf4pipe/nf4pipe/kernels"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"gorgonia.org/cu"
)

// initDriver initializes the CUDA driver the first time a function of this
// package needs it (cudainit: not at process start-up), from any goroutine.
// Count, Devices, Open and ReduceGeometry call it before any driver call;
// the rest of the package runs in a Device's context, which Open created.
// Where the driver finds no usable GPU, its error wraps ErrNoDevice and says
// so in one line.
func initDriver() error {
	if err := cudainit.Init(); err != nil {
		return noDriverError{err}
	}
	return nil
}

// noDriverError is the driver's refusal to initialize, with its reason.
type noDriverError struct{ why error }

func (e noDriverError) Error() string {
	return "this is a CUDA build and the driver finds no usable GPU (" + e.why.Error() + "); on this machine use the CPU build (make build)"
}

func (e noDriverError) Unwrap() error { return ErrNoDevice }

// Count returns how many GPUs the driver sees, without creating a context on
// any (Devices opens each, which costs a context and a module load apiece).
func Count() (int, error) {
	if err := initDriver(); err != nil {
		return 0, err
	}
	n, err := cu.NumDevices()
	if err != nil {
		return 0, fmt.Errorf("%w: counting devices: %v", ErrCUDA, err)
	}
	return n, nil
}

// Devices lists the GPUs with their free memory.
func Devices() ([]DeviceInfo, error) {
	if err := initDriver(); err != nil {
		return nil, err
	}
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
	fit     map[string]int // 256-thread CTAs of each kernel one multiprocessor holds at once
	dynmap  cu.DevicePtr   // the nested map, 256 float32
	nestTab cu.DevicePtr   // quant.NestedCodeTable
	mean    meanScratch
	streams [2]cu.Stream
	sms     int // multiprocessors
	// Grids are the persistent kernels' CTAs per multiprocessor.
	Grids Grids
	ws    *workspace
	gone  chan struct{} // closed once the context is destroyed
}

// Open creates a context on GPU ordinal and loads the kernels.
func Open(ordinal int) (*Device, error) {
	if err := initDriver(); err != nil {
		return nil, err
	}
	d := &Device{ordinal: ordinal, work: make(chan func()), fn: map[string]cu.Function{}, fit: map[string]int{}, Grids: DefaultGrids(),
		gone: make(chan struct{})}
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
		if d.ctx != (cu.CUContext{}) {
			d.ctx.Destroy()
		}
		errc <- err
		return
	}
	errc <- nil
	for f := range d.work {
		f()
	}
	d.ctx.Destroy()
	close(d.gone)
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
		return cuErr(fmt.Sprintf("context on cuda:%d", d.ordinal), err)
	}
	if d.mod, err = cu.LoadData(kernels.NF4PTX); err != nil {
		return cuErr(fmt.Sprintf("loading kernels on cuda:%d", d.ordinal), err)
	}
	if d.sms, err = d.dev.Attribute(cu.MultiprocessorCount); err != nil {
		return fmt.Errorf("%w: multiprocessor count: %v", ErrCUDA, err)
	}
	for _, name := range kernelNames() {
		f, err := d.mod.Function(name)
		if err != nil {
			return fmt.Errorf("%w: kernel %s: %v", ErrCUDA, name, err)
		}
		d.fn[name] = f
		if d.fit[name], err = f.MaxActiveBlocksPerMultiProcessor(256, 0); err != nil || d.fit[name] < 1 {
			d.fit[name] = 1
		}
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
	if err := cuErr("upload map", cu.MemcpyHtoD(d.dynmap, unsafe.Pointer(&m[0]), 256*4)); err != nil {
		return err
	}
	tab := quant.NestedCodeTable()
	if tab == nil {
		return fmt.Errorf("%w: the double-quantization code table could not be built", ErrCUDA)
	}
	if d.nestTab, err = cu.MemAlloc(int64(4 * len(tab))); err != nil {
		return cuErr("allocating the code table", err)
	}
	if err := cuErr("upload code table", cu.MemcpyHtoD(d.nestTab, unsafe.Pointer(&tab[0]), int64(4*len(tab)))); err != nil {
		return err
	}
	if err := d.mean.alloc(meanScratchCTAs); err != nil {
		return err
	}
	// The synchronous copies above run on the legacy stream, which the
	// non-blocking streams do not wait for: let them land first.
	return cuErr("synchronize", cu.Synchronize())
}

// meanScratchCTAs is the partial sums a device keeps room for: torch's
// geometry uses at most 528 CTAs below 4.4 G values.
const meanScratchCTAs = 1024

// meanScratch is device memory for mean_torch: the CTAs' partial sums, the
// count of finished CTAs (zero between launches) and the result.
type meanScratch struct {
	ptr  cu.DevicePtr
	ctas int
}

func (m *meanScratch) alloc(ctas int) error {
	p, err := cu.MemAlloc(int64(4*ctas + 8))
	if err != nil {
		return cuErr("allocating mean scratch", err)
	}
	if err := cuErr("clearing mean scratch", cu.MemsetD32(p, 0, int64(ctas+2))); err != nil {
		cu.MemFree(p)
		return err
	}
	m.ptr, m.ctas = p, ctas
	return nil
}

// After the partial sums: the count of finished CTAs, then the offset.
func (m *meanScratch) count() cu.DevicePtr  { return m.ptr + cu.DevicePtr(4*m.ctas) }
func (m *meanScratch) result() cu.DevicePtr { return m.ptr + cu.DevicePtr(4*m.ctas+4) }

// launchMean writes quant.MeanF32On(gpu) of the n float32 values at a to the
// scratch's result, computed on the device in the same order.
func (d *Device) launchMean(a cu.DevicePtr, n int64, gpu quant.ReduceGPU, st cu.Stream) error {
	g := quant.MeanGeometryFor(n, gpu)
	if g.CTAs > d.mean.ctas {
		return fmt.Errorf("%w: mean of %d values needs %d CTAs, room for %d", ErrArgs, n, g.CTAs, d.mean.ctas)
	}
	vec := uint64(0)
	if g.Vectorized {
		vec = 1
	}
	args := []uint64{uint64(a), uint64(n), uint64(g.Threads), vec, f32arg(float32(1) / float32(n)),
		uint64(d.mean.ptr), uint64(d.mean.count()), uint64(d.mean.result())}
	ptrs := make([]unsafe.Pointer, len(args))
	for i := range args {
		ptrs[i] = unsafe.Pointer(&args[i])
	}
	return cuErr("launch mean_torch", d.fn["mean_torch"].Launch(g.CTAs, 1, 1, g.Threads, 1, 1, 0, st, ptrs))
}

// do runs f on the device's thread.
func (d *Device) do(f func() error) error {
	errc := make(chan error, 1)
	d.work <- func() { errc <- f() }
	return <-errc
}

// Close frees the device's buffers and destroys the context.
func (d *Device) Close() error {
	err := d.do(func() error { d.ws.free(); d.ws = nil; return nil })
	close(d.work)
	return err
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

// Grids are the numbers of 256-thread CTAs per multiprocessor that the
// persistent kernels launch (they loop over their work). Quantize launches no
// more than fit at once (its registers decide), since a second wave of a
// persistent grid only adds a tail. A Device starts with DefaultGrids, the
// fastest on an H200 (docs/BENCHMARKS.md); benchmarks set Device.Grids.
type Grids struct {
	Quant, Dequant, Nest int
}

// DefaultGrids are the grids a Device opens with: on an H200 quant_g16 is
// fastest at 5 (all that fit), dequant_b64 at 32 and nest_quantize at 16
// (TestBenchVariants).
func DefaultGrids() Grids { return Grids{Quant: 5, Dequant: 32, Nest: 16} }

// ChunkBytes is the largest input chunk of the host pipelines: each chunk is
// copied to the device, quantized and copied back on one of two streams, so
// one chunk's copies overlap the other's kernels. The workspace holds the
// chunks the runs need, up to this (workspaceFor).
var ChunkBytes int64 = 64 << 20

var dtNames = map[quant.DType]string{quant.F32: "f32", quant.F16: "f16", quant.BF16: "bf16"}

// tileVectors is the groups of 8 values a lane takes per tile in quant_tile
// and quant_g16, and the packed words a lane takes per tile in dequant.
func tileVectors(dt quant.DType) int {
	if dt == quant.F32 {
		return 2
	}
	return 4
}

// g16 reports whether quant_g16 covers the case: 16-bit input at block size 64.
func g16(dt quant.DType, bs int) bool { return bs == 64 && (dt == quant.BF16 || dt == quant.F16) }

// tileKernel is the kernel that quantizes whole tiles of dt at block size bs
// (at most 256), and its vectors a lane.
func tileKernel(dt quant.DType, qt quant.Type, bs int) (string, int) {
	v := tileVectors(dt)
	if g16(dt, bs) {
		return fmt.Sprintf("quant_g16_%s_%s_b64_v%d", dtNames[dt], qt, v), v
	}
	return fmt.Sprintf("quant_tile_%s_%s_b%d_v%d", dtNames[dt], qt, bs, v), v
}

// dequantKernel is the kernel that dequantizes to dt with p (f32 absmax or
// double quantization), and its packed words a lane per tile: dequant_b64
// for bf16 at block size 64, dequant otherwise.
func dequantKernel(dt quant.DType, p quant.Params) (string, int) {
	kind := "f32"
	if p.DoubleQuant {
		kind = "dq"
	}
	if dt == quant.BF16 && p.BlockSize == 64 {
		return "dequant_b64_bf16_v8_" + kind, 8
	}
	v := tileVectors(dt)
	return fmt.Sprintf("dequant_%s_v%d_%s", dtNames[dt], v, kind), v
}

func kernelNames() []string {
	names := []string{"mean_torch", "nest_quantize", "quant_tile_bf16_nf4_b64_v2", "quant_tile_bf16_nf4_b64_v8", "quant_tile_bf16_nf4_b64_v4_plain",
		"dequant_b64_bf16_v8_f32", "dequant_b64_bf16_v8_dq"}
	for _, k := range []string{"f32_v2", "f16_v4", "bf16_v4", "bf16_v2", "bf16_v8"} {
		names = append(names, "dequant_"+k+"_f32", "dequant_"+k+"_dq")
	}
	for dt, dn := range dtNames {
		for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
			names = append(names, fmt.Sprintf("quant_warp_%s_%s", dn, qt))
			for _, bs := range []int{32, 64, 128, 256} {
				names = append(names, fmt.Sprintf("quant_tile_%s_%s_b%d_v%d", dn, qt, bs, tileVectors(dt)))
				if g16(dt, bs) {
					name, _ := tileKernel(dt, qt, bs)
					names = append(names, name)
				}
			}
		}
	}
	return names
}

// launch runs kernel name on a persistent grid of enough 256-thread CTAs for
// warps warps of work (at most perSM per multiprocessor); args are uint64
// values (device pointers, counts; int and float parameters read the low half).
func (d *Device) launch(name string, perSM int, warps int64, stream cu.Stream, args ...uint64) error {
	grid := min((warps+7)/8, int64(d.sms*perSM))
	if grid <= 0 {
		return nil
	}
	f, ok := d.fn[name]
	if !ok {
		return fmt.Errorf("%w: no kernel %s", ErrCUDA, name)
	}
	ptrs := make([]unsafe.Pointer, len(args))
	for i := range args {
		ptrs[i] = unsafe.Pointer(&args[i])
	}
	return cuErr("launch "+name, f.Launch(int(grid), 1, 1, 256, 1, 1, 0, stream, ptrs))
}

func f32arg(f float32) uint64 { return uint64(math.Float32bits(f)) }

// launchQuantize quantizes n values of dt at x (16-byte aligned, starting on a
// block boundary) into packed codes and float32 absmax, setting *bad when a
// value is not finite: whole tiles with quant_g16 or quant_tile (tileKernel),
// the rest (and block sizes above 256) one warp per block.
func (d *Device) launchQuantize(x cu.DevicePtr, n int64, dt quant.DType, p quant.Params, packed, absmax, bad cu.DevicePtr, st cu.Stream) error {
	dn, bs := dtNames[dt], int64(p.BlockSize)
	nblocks := (n + bs - 1) / bs
	var blk0 int64
	if bs <= 256 {
		name, v := tileKernel(dt, p.Type, p.BlockSize)
		tile := int64(256 * v)
		if ntiles := n / tile; ntiles > 0 {
			if err := d.launch(name, min(d.Grids.Quant, d.fit[name]), ntiles, st, uint64(x), uint64(ntiles), uint64(packed), uint64(absmax), uint64(bad)); err != nil {
				return err
			}
			blk0 = ntiles * tile / bs
		}
	}
	if blk0 == nblocks {
		return nil
	}
	return d.launch(fmt.Sprintf("quant_warp_%s_%s", dn, p.Type), d.Grids.Quant, nblocks-blk0, st,
		uint64(x), uint64(n), uint64(bs), uint64(blk0), uint64(packed), uint64(absmax), uint64(bad))
}

// workspace is a device's reusable pipeline memory: per stream a device input
// chunk, packed codes, absmax and a flag, and pinned host buffers for each.
type workspace struct {
	chunk int64 // input bytes per stream
	in    [2]cu.DevicePtr
	out   [2]cu.DevicePtr // packed codes, then absmax (aligned), then the flag
	host  [2]*pinned      // input chunk, then the out section
	outSz int64
}

// layout returns the offsets of absmax and the flag in an out section for
// chunk input bytes of the smallest element size (2) and block size (32).
func outLayout(chunk int64) (absOff, badOff, size int64) {
	elems := chunk / 2
	absOff = ((elems+1)/2 + 255) &^ 255
	badOff = absOff + (elems/32+1)*4
	return absOff, badOff, badOff + 16
}

func (ws *workspace) free() {
	if ws == nil {
		return
	}
	for i := range 2 {
		if ws.in[i] != 0 {
			cu.MemFree(ws.in[i])
		}
		if ws.out[i] != 0 {
			cu.MemFree(ws.out[i])
		}
		ws.host[i].free()
	}
}

// workspaceFor returns a workspace with chunks of at least chunk bytes: the
// one the device has where it is large enough, else a new one of exactly
// chunk bytes. It grows with the runs it is given, so a device fed the
// quantize stage's 4 MiB runs pins a few MiB of host memory, not ChunkBytes'
// worth (pinning and unpinning cost about 1 ms a MiB on an H200 host,
// TestBenchStartup).
func (d *Device) workspaceFor(chunk int64) (*workspace, error) {
	if d.ws != nil && d.ws.chunk >= chunk {
		return d.ws, nil
	}
	d.ws.free()
	d.ws = nil
	ws := &workspace{chunk: chunk}
	_, _, ws.outSz = outLayout(chunk)
	for i := range 2 {
		var err error
		if ws.in[i], err = cu.MemAlloc(chunk); err != nil {
			ws.free()
			return nil, cuErr(fmt.Sprintf("allocating %d bytes", chunk), err)
		}
		if ws.out[i], err = cu.MemAlloc(ws.outSz); err != nil {
			ws.free()
			return nil, cuErr(fmt.Sprintf("allocating %d bytes", ws.outSz), err)
		}
		if ws.host[i], err = allocPinned(int(chunk + ws.outSz)); err != nil {
			ws.free()
			return nil, err
		}
	}
	d.ws = ws
	return ws, nil
}

// parallelCopy copies src into dst (equal lengths) with a few goroutines when
// it is large: one core copies about 10 GB/s, and pinned staging is on the
// critical path of every chunk.
func parallelCopy(dst, src []byte) {
	const part = 1 << 20
	if len(src) < 2*part {
		copy(dst, src)
		return
	}
	workers := min(runtime.GOMAXPROCS(0), 8, len(src)/part)
	per := (len(src) + workers - 1) / workers
	done := make(chan struct{}, workers)
	for w := range workers {
		lo, hi := w*per, min((w+1)*per, len(src))
		go func() {
			copy(dst[lo:hi], src[lo:hi])
			done <- struct{}{}
		}()
	}
	for range workers {
		<-done
	}
}

// quantizeBlocks is quant.Backend's QuantizeBlocks on this device's thread:
// chunks of whole blocks go up through pinned memory on alternating streams;
// packed codes, absmax and the non-finite flag come back. devAbsmax, when not
// zero, also receives every absmax value on the device (for double quantization
// there). It reports whether some value was not finite.
func (d *Device) quantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, chunkBytes int64, devAbsmax cu.DevicePtr) (bool, error) {
	es, bs := int64(dt.Size()), int64(p.BlockSize)
	n := int64(len(src)) / es
	// The workspace holds one step of the widest input: a device given runs
	// of one size allocates it once.
	step := pipelineStep(n, chunkElems(chunkBytes), stepAlign)
	ws, err := d.workspaceFor(stagingBytes(n, chunkBytes))
	if err != nil {
		return false, err
	}
	absOff, badOff, _ := outLayout(ws.chunk)
	type pending struct{ start, cnt int64 }
	var inflight [2]*pending
	bad := false
	finish := func(s int) error {
		pd := inflight[s]
		if pd == nil {
			return nil
		}
		inflight[s] = nil
		if err := cuErr("sync", d.streams[s].Synchronize()); err != nil {
			return err
		}
		out := ws.host[s].b[ws.chunk:]
		copy(packed[pd.start/2:(pd.start+pd.cnt+1)/2], out[:(pd.cnt+1)/2])
		b0, nb := pd.start/bs, (pd.cnt+bs-1)/bs
		copy(absmax[b0:b0+nb], unsafe.Slice((*float32)(unsafe.Pointer(&out[absOff])), nb))
		if binary.LittleEndian.Uint32(out[badOff:]) != 0 {
			bad = true
		}
		return nil
	}
	for i, start := 0, int64(0); start < n; i, start = i+1, start+step {
		s := i % 2
		if err := finish(s); err != nil {
			return false, err
		}
		cnt := min(step, n-start)
		st, in, out := d.streams[s], ws.in[s], ws.out[s]
		parallelCopy(ws.host[s].b[:cnt*es], src[start*es:(start+cnt)*es])
		hostOut := unsafe.Add(ws.host[s].p, ws.chunk)
		nb := (cnt + bs - 1) / bs
		devAbs := out + cu.DevicePtr(absOff)
		if devAbsmax != 0 {
			devAbs = devAbsmax + cu.DevicePtr(start/bs*4)
		}
		for _, err := range []error{
			cuErr("copy to device", cu.MemcpyHtoDAsync(in, ws.host[s].p, cnt*es, st)),
			cuErr("clear flag", cu.MemsetD32Async(out+cu.DevicePtr(badOff), 0, 1, st)),
			d.launchQuantize(in, cnt, dt, p, out, devAbs, out+cu.DevicePtr(badOff), st),
			cuErr("copy codes", cu.MemcpyDtoHAsync(hostOut, out, (cnt+1)/2, st)),
			cuErr("copy absmax", cu.MemcpyDtoHAsync(unsafe.Add(hostOut, absOff), devAbs, nb*4, st)),
			cuErr("copy flag", cu.MemcpyDtoHAsync(unsafe.Add(hostOut, badOff), out+cu.DevicePtr(badOff), 4, st)),
		} {
			if err != nil {
				return false, err
			}
		}
		inflight[s] = &pending{start: start, cnt: cnt}
	}
	for s := range 2 {
		if err := finish(s); err != nil {
			return false, err
		}
	}
	return bad, nil
}

// withSmallerChunks runs f with ChunkBytes, then with smaller chunks while the
// device is out of memory (down to 1 MiB).
func withSmallerChunks(f func(chunk int64) error) error {
	chunk := ChunkBytes
	for {
		err := f(chunk)
		if err == nil || !errors.Is(err, ErrOutOfMemory) || chunk <= 1<<20 {
			return err
		}
		chunk /= 4
	}
}

// Backend returns a quant.Backend that quantizes on this device (see
// quant.Backend: bit-identical to quant.CPU). A run with a non-finite value
// (when p.AllowNonFinite is off) is handed to the CPU backend, which names the
// first one; when device memory runs out even for small chunks, the run goes
// to the CPU (see BackendWithWarn).
func (d *Device) Backend() quant.Backend { return &backend{d: d} }

// BackendWithWarn is Backend with warn receiving the one-line warning of a
// fallback to the CPU.
func (d *Device) BackendWithWarn(warn func(string)) quant.Backend { return &backend{d: d, Warn: warn} }

type backend struct {
	d      *Device
	warned bool
	Warn   func(string)
}

func (b *backend) Name() string { return fmt.Sprintf("cuda:%d", b.d.ordinal) }

func (b *backend) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if !quant.Supported(dt) {
		return fmt.Errorf("%w: %q", quant.ErrDType, dt)
	}
	es := int64(dt.Size())
	n := int64(len(src)) / es
	sz := quant.SizesFor(n, p)
	if int64(len(src))%es != 0 || int64(len(packed)) < sz.Packed || int64(len(absmax)) < sz.Blocks {
		return fmt.Errorf("%w: %s: %d bytes of %s into %d packed bytes and %d absmax values", quant.ErrLength,
			b.Name(), len(src), dt, len(packed), len(absmax))
	}
	if n == 0 {
		return nil
	}
	var bad bool
	err := withSmallerChunks(func(chunk int64) error {
		return b.d.do(func() error {
			var err error
			bad, err = b.d.quantizeBlocks(packed, absmax, src, dt, p, chunk, 0)
			return err
		})
	})
	if errors.Is(err, ErrOutOfMemory) {
		if !b.warned && b.Warn != nil {
			b.Warn(fmt.Sprintf("%s: out of device memory, quantizing on the CPU", b.Name()))
		}
		b.warned = true
		return quant.CPU(0).QuantizeBlocks(packed, absmax, src, dt, p, first)
	}
	if err != nil {
		return fmt.Errorf("%w: %s: %w", quant.ErrBackend, b.Name(), err)
	}
	if bad && !p.AllowNonFinite {
		// The CPU finds and names the first non-finite value.
		if err := quant.CPU(0).QuantizeBlocks(packed, absmax, src, dt, p, first); err != nil {
			return err
		}
		return fmt.Errorf("%w: %s reported a non-finite value the CPU did not find", quant.ErrBackend, b.Name())
	}
	return nil
}

// Quantize quantizes n elements of src (raw little-endian dt) into dst, which
// holds quant.SizesFor(n, p).Total() bytes laid out as a stream payload
// (packed | absmax | nested absmax), and returns the double-quantization
// offset (quant.MeanF32 of the absmax values, computed on the device in the
// same order). Double quantization runs on the device. Non-finite input fails
// as with quant.CPU.
func (d *Device) Quantize(dst, src []byte, dt quant.DType, n int64, p quant.Params) (float32, error) {
	if err := checkArgs(len(src), dt, n, p); err != nil {
		return 0, fmt.Errorf("gpu quantize: %w", err)
	}
	sz := quant.SizesFor(n, p)
	if int64(len(dst)) != sz.Total() {
		return 0, fmt.Errorf("gpu quantize: %w: dst holds %d bytes, payload needs %d", ErrArgs, len(dst), sz.Total())
	}
	if n == 0 {
		return 0, nil
	}
	absmax := make([]float32, sz.Blocks)
	var offset float32
	var bad bool
	err := withSmallerChunks(func(chunk int64) error {
		return d.do(func() error {
			var devAbs cu.DevicePtr
			if p.DoubleQuant {
				var err error
				if devAbs, err = cu.MemAlloc(sz.Blocks * 4); err != nil {
					return cuErr("allocating absmax", err)
				}
				defer cu.MemFree(devAbs)
			}
			var err error
			if bad, err = d.quantizeBlocks(dst[:sz.Packed], absmax, src, dt, p, chunk, devAbs); err != nil || (bad && !p.AllowNonFinite) || !p.DoubleQuant {
				return err
			}
			offset, err = d.nest(devAbs, sz, p.OffsetGPU(), dst[sz.Packed:])
			return err
		})
	})
	if err != nil {
		return 0, fmt.Errorf("gpu quantize: %w", err)
	}
	if bad && !p.AllowNonFinite {
		q := p
		q.DoubleQuant = false
		if err := quant.CPU(0).QuantizeBlocks(dst[:sz.Packed], absmax, src, dt, q, 0); err != nil {
			return 0, err
		}
		return 0, fmt.Errorf("gpu quantize: %w: non-finite flag without a non-finite value", ErrCUDA)
	}
	if !p.DoubleQuant {
		rest := dst[sz.Packed:]
		for i, v := range absmax {
			binary.LittleEndian.PutUint32(rest[4*i:], math.Float32bits(v))
		}
	}
	return offset, nil
}

// nest runs double quantization of the absmax values on the device (the
// offset, then the codes), copies the codes and nested absmax into sec (the
// payload after the packed codes) and returns the offset.
func (d *Device) nest(devAbs cu.DevicePtr, sz quant.Sizes, gpu quant.ReduceGPU, sec []byte) (float32, error) {
	var mem devBuf
	defer mem.free()
	out, err := mem.alloc(sz.Blocks + 256 + sz.Nested)
	if err != nil {
		return 0, err
	}
	codes, nested := out, out+cu.DevicePtr((sz.Blocks+255)&^255)
	st := d.streams[0]
	var offset float32
	for _, err := range []error{
		d.launchNest(devAbs, sz.Blocks, gpu, codes, nested, st),
		cuErr("copy codes", cu.MemcpyDtoHAsync(unsafe.Pointer(&sec[0]), codes, sz.Blocks, st)),
		cuErr("copy nested", cu.MemcpyDtoHAsync(unsafe.Pointer(&sec[sz.Blocks]), nested, sz.Nested, st)),
		cuErr("copy offset", cu.MemcpyDtoHAsync(unsafe.Pointer(&offset), d.mean.result(), 4, st)),
		cuErr("sync", st.Synchronize()),
	} {
		if err != nil {
			return 0, err
		}
	}
	return offset, nil
}

// launchNest double-quantizes the n absmax values at devAbs: mean_torch
// leaves the offset in the mean scratch's result, where nest_quantize reads
// it. (One cooperative launch doing both, with a grid barrier between, was
// measured on an H200 at 29 us against 28 us for the two launches.)
func (d *Device) launchNest(devAbs cu.DevicePtr, n int64, gpu quant.ReduceGPU, codes, nested cu.DevicePtr, st cu.Stream) error {
	if err := d.launchMean(devAbs, n, gpu, st); err != nil {
		return err
	}
	return d.launch("nest_quantize", d.Grids.Nest, (n+255)/256, st,
		uint64(devAbs), uint64(n), uint64(d.mean.result()), uint64(d.nestTab), uint64(codes), uint64(nested))
}

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

// Dequantize turns a stream payload back into n elements of dt in dst.
func (d *Device) Dequantize(dst, payload []byte, dt quant.DType, n int64, p quant.Params, offset float32) error {
	if err := checkArgs(len(dst), dt, n, p); err != nil {
		return fmt.Errorf("gpu dequantize: %w", err)
	}
	sz := quant.SizesFor(n, p)
	if int64(len(payload)) != sz.Total() {
		return fmt.Errorf("gpu dequantize: %w: payload of %d bytes, want %d", ErrArgs, len(payload), sz.Total())
	}
	if n == 0 {
		return nil
	}
	return d.do(func() error {
		var mem devBuf
		defer mem.free()
		// Each section in its own allocation, so float32 sections are
		// aligned. The copies go on the kernel's stream, which is
		// non-blocking: a synchronous copy (legacy stream) from pageable
		// memory may still be in flight when it returns.
		st := d.streams[0]
		up := func(b []byte) (cu.DevicePtr, error) {
			ptr, err := mem.alloc(int64(len(b)))
			if err != nil || len(b) == 0 {
				return ptr, err
			}
			return ptr, cuErr("copy payload", cu.MemcpyHtoDAsync(ptr, unsafe.Pointer(&b[0]), int64(len(b)), st))
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
		if err := d.launchDequant(dt, n, p, in, sec, nest, offset, out, st); err != nil {
			return err
		}
		if err := cuErr("sync", st.Synchronize()); err != nil {
			return err
		}
		return cuErr("copy result", cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), out, int64(len(dst))))
	})
}

// launchDequant dequantizes n values into dt (dequantKernel's kernel): sec
// is the F32 absmax section, or with double quantization the U8 codes, with
// nested beside it.
func (d *Device) launchDequant(dt quant.DType, n int64, p quant.Params, packed, sec, nested cu.DevicePtr, offset float32, out cu.DevicePtr, st cu.Stream) error {
	name, v := dequantKernel(dt, p)
	return d.launchDequantWith(name, v, n, p, packed, sec, nested, offset, out, st)
}

// launchDequantWith runs kernel name, taking v packed words a lane per tile;
// every dequantize kernel has the same parameters.
func (d *Device) launchDequantWith(name string, v int, n int64, p quant.Params, packed, sec, nested cu.DevicePtr, offset float32, out cu.DevicePtr, st cu.Stream) error {
	qt := uint64(0)
	if p.Type == quant.FP4 {
		qt = 1
	}
	absmax, codes := uint64(sec), uint64(0)
	if p.DoubleQuant {
		absmax, codes = 0, uint64(sec)
	}
	warps := max((n/8+int64(32*v)-1)/int64(32*v), 1)
	return d.launch(name, d.Grids.Dequant, warps, st,
		uint64(packed), uint64(n), log2(p.BlockSize)-3, qt, absmax, codes, uint64(nested), f32arg(offset), uint64(d.dynmap), uint64(out))
}

func log2(n int) uint64 {
	var l uint64
	for 1<<l < n {
		l++
	}
	return l
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

// ReduceGeometry is GPU ordinal's multiprocessor count and resident threads
// per multiprocessor: the geometry torch's reductions, and so bitsandbytes'
// double-quantization offset, depend on (quant.ReduceGPU).
func ReduceGeometry(ordinal int) (quant.ReduceGPU, error) {
	if err := initDriver(); err != nil {
		return quant.ReduceGPU{}, err
	}
	dev, err := cu.GetDevice(ordinal)
	if err != nil {
		return quant.ReduceGPU{}, fmt.Errorf("%w: device %d: %v", ErrCUDA, ordinal, err)
	}
	sms, err := dev.Attribute(cu.MultiprocessorCount)
	if err != nil {
		return quant.ReduceGPU{}, fmt.Errorf("%w: device %d: %v", ErrCUDA, ordinal, err)
	}
	thr, err := dev.Attribute(cu.MaxThreadsPerMultiprocessor)
	if err != nil {
		return quant.ReduceGPU{}, fmt.Errorf("%w: device %d: %v", ErrCUDA, ordinal, err)
	}
	return quant.ReduceGPU{SMs: sms, ThreadsPerSM: thr}, nil
}
