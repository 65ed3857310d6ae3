package quant

import (
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"runtime"
	"sync"
)

// Backend quantizes runs of whole blocks; the Encoder does everything else
// (buffering across chunk boundaries, writing, double quantization). The CPU
// backend is CPU(threads); internal/gpu provides a CUDA one behind the cuda tag.
type Backend interface {
	// Name says where the work runs, e.g. "cpu" or "cuda:0".
	Name() string
	// QuantizeBlocks quantizes src, raw little-endian values of dt that start
	// on a block boundary and hold whole blocks of p.BlockSize values, except
	// that the tensor's last block may be short. It writes ceil(n/2) packed
	// bytes (a short odd block packs the code of a zero pad in its last low
	// nibble) and one float32 absmax per block (before double quantization),
	// bit-identical to the CPU reference. first is the element index of src[0]
	// in the tensor: when p.AllowNonFinite is off, the first NaN or ±Inf yields
	// a *NonFiniteError with its tensor-wide index.
	QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt DType, p Params, first int64) error
}

// CPU returns the pure-Go backend, splitting each run of blocks over threads
// goroutines (all cores when threads <= 0).
func CPU(threads int) Backend {
	if threads <= 0 {
		threads = runtime.GOMAXPROCS(0)
	}
	return cpuBackend{threads: threads}
}

type cpuBackend struct{ threads int }

func (c cpuBackend) Name() string { return "cpu" }

// minBlocksPerThread keeps goroutine start-up small next to the work it does.
const minBlocksPerThread = 256

func (c cpuBackend) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt DType, p Params, first int64) error {
	if !Supported(dt) {
		return fmt.Errorf("%w: %q", ErrDType, dt)
	}
	es := dt.Size()
	n := len(src) / es
	blocks := (n + p.BlockSize - 1) / p.BlockSize
	workers := min(c.threads, max(1, blocks/minBlocksPerThread))
	if workers <= 1 {
		return quantizeBlocksCPU(packed, absmax, src, dt, p, first)
	}
	per := (blocks + workers - 1) / workers
	errs := make([]error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		b0, b1 := w*per, min((w+1)*per, blocks)
		if b0 >= b1 {
			break
		}
		e0, e1 := b0*p.BlockSize, min(b1*p.BlockSize, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[w] = quantizeBlocksCPU(packed[e0/2:(e1+1)/2], absmax[b0:b1], src[e0*es:e1*es], dt, p, first+int64(e0))
		}()
	}
	wg.Wait()
	for _, err := range errs { // the earliest range's error names the first bad index
		if err != nil {
			return err
		}
	}
	return nil
}

// Encoder quantizes one tensor streamed in chunks of any length. Packed codes
// are written to the underlying writer as their blocks complete; Close then
// writes the absmax section (and with double quantization the nested absmax),
// so the bytes written are exactly a stream payload: packed | absmax | nested.
// Memory: one block of carry-over, the packed output of one chunk, and the
// float32 absmax of the whole tensor (n/BlockSize values), which double
// quantization needs for its mean.
type Encoder struct {
	w       io.Writer
	p       Params
	dt      DType
	n       int64
	backend Backend

	consumed int64  // elements quantized so far
	carry    []byte // bytes of an incomplete block
	absmax   []float32
	out      []byte
	err      error
	closed   bool
}

// Result is what Close reports about a finished tensor.
type Result struct {
	NestedOffset float32 // the double-quantization offset; 0 without it
	Sizes        Sizes
}

// NewEncoder starts quantizing n values of dt into w. A nil backend means CPU(0).
func NewEncoder(w io.Writer, dt DType, n int64, p Params, backend Backend) (*Encoder, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if !Supported(dt) {
		return nil, fmt.Errorf("%w: %q (want F32, F16 or BF16)", ErrDType, dt)
	}
	if n < 0 {
		return nil, fmt.Errorf("%w: %d elements", ErrLength, n)
	}
	if backend == nil {
		backend = CPU(0)
	}
	blocks := SizesFor(n, p).Blocks
	return &Encoder{
		w: w, p: p, dt: dt, n: n, backend: backend,
		carry:  make([]byte, 0, p.BlockSize*dt.Size()),
		absmax: make([]float32, 0, blocks),
	}, nil
}

// Write quantizes the raw little-endian values in b, which may end anywhere,
// even inside an element.
func (e *Encoder) Write(b []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	total := len(b)
	es := int64(e.dt.Size())
	if e.consumed*es+int64(len(e.carry))+int64(len(b)) > e.n*es {
		e.err = fmt.Errorf("%w: more than %d elements of %s", ErrLength, e.n, e.dt)
		return 0, e.err
	}
	blockBytes := e.p.BlockSize * int(es)
	if len(e.carry) > 0 {
		k := min(blockBytes-len(e.carry), len(b))
		e.carry = append(e.carry, b[:k]...)
		b = b[k:]
		if len(e.carry) < blockBytes {
			return total, nil
		}
		if err := e.encode(e.carry); err != nil {
			return 0, err
		}
		e.carry = e.carry[:0]
	}
	whole := len(b) / blockBytes * blockBytes
	if whole > 0 {
		if err := e.encode(b[:whole]); err != nil {
			return 0, err
		}
	}
	e.carry = append(e.carry, b[whole:]...)
	return total, nil
}

// encode quantizes whole blocks (or the tensor's last, short block) and writes
// their packed codes.
func (e *Encoder) encode(src []byte) error {
	es := e.dt.Size()
	n := len(src) / es
	blocks := (n + e.p.BlockSize - 1) / e.p.BlockSize
	if cap(e.out) < (n+1)/2 {
		e.out = make([]byte, (n+1)/2)
	}
	out := e.out[:(n+1)/2]
	start := len(e.absmax)
	e.absmax = e.absmax[:start+blocks]
	if err := e.backend.QuantizeBlocks(out, e.absmax[start:], src, e.dt, e.p, e.consumed); err != nil {
		e.err = err
		return err
	}
	e.consumed += int64(n)
	if _, err := e.w.Write(out); err != nil {
		e.err = fmt.Errorf("quant: writing packed codes: %w", err)
		return e.err
	}
	return nil
}

// Close quantizes the last short block, checks that exactly n values came, and
// writes the absmax section and, with double quantization, the nested absmax.
func (e *Encoder) Close() (Result, error) {
	if e.closed || e.err != nil {
		if e.err == nil {
			e.err = fmt.Errorf("%w: encoder closed twice", ErrParams)
		}
		return Result{}, e.err
	}
	e.closed = true
	es := int64(e.dt.Size())
	if int64(len(e.carry))%es != 0 || e.consumed+int64(len(e.carry))/es != e.n {
		e.err = fmt.Errorf("%w: got %d bytes, want %d (%d elements of %s)", ErrLength,
			e.consumed*es+int64(len(e.carry)), e.n*es, e.n, e.dt)
		return Result{}, e.err
	}
	if len(e.carry) > 0 {
		if err := e.encode(e.carry); err != nil {
			return Result{}, err
		}
	}
	res := Result{Sizes: SizesFor(e.n, e.p)}
	var sec []byte
	if e.p.DoubleQuant {
		threads := runtime.GOMAXPROCS(0)
		if c, ok := e.backend.(cpuBackend); ok {
			threads = c.threads
		}
		codes, nested, offset := doubleQuantize(e.absmax, e.p.OffsetGPU(), threads)
		res.NestedOffset = offset
		sec = append(make([]byte, 0, len(codes)+4*len(nested)), codes...)
		for _, v := range nested {
			sec = binary.LittleEndian.AppendUint32(sec, math.Float32bits(v))
		}
	} else {
		sec = make([]byte, 0, 4*len(e.absmax))
		for _, v := range e.absmax {
			sec = binary.LittleEndian.AppendUint32(sec, math.Float32bits(v))
		}
	}
	if _, err := e.w.Write(sec); err != nil {
		e.err = fmt.Errorf("quant: writing absmax: %w", err)
		return Result{}, e.err
	}
	return res, nil
}

// Absmax returns the float32 absmax values so far (before double quantization).
func (e *Encoder) Absmax() []float32 { return e.absmax }

// DoubleQuantize quantizes absmax values: their mean as offset (in torch's
// order on gpu; the zero ReduceGPU is DefaultReduceGPU), then 8-bit codes of
// NestedMap over blocks of NestedBlockSize with one float32 absmax each.
func DoubleQuantize(absmax []float32, gpu ReduceGPU) (codes []byte, nested []float32, offset float32) {
	return doubleQuantize(absmax, Params{ReduceGPU: gpu}.OffsetGPU(), runtime.GOMAXPROCS(0))
}

// doubleQuantize is DoubleQuantize on up to threads goroutines.
func doubleQuantize(absmax []float32, gpu ReduceGPU, threads int) (codes []byte, nested []float32, offset float32) {
	if len(absmax) == 0 {
		return nil, nil, 0
	}
	offset = MeanF32On(absmax, gpu)
	codes = make([]byte, len(absmax))
	nested = make([]float32, (len(absmax)+NestedBlockSize-1)/NestedBlockSize)
	nestQuantizeFast(codes, nested, absmax, offset, threads)
	return codes, nested, offset
}
