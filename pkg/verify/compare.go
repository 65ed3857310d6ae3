package verify

import (
	"bytes"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// chunkElems is the number of elements compared at a time: a multiple of every
// block size times the nested block size, so chunks hold whole blocks and whole
// nested blocks; about 2 MiB of BF16 reference.
const chunkElems = 1 << 18

// goKernelOnly turns the vector kernel off (benchmarks of the Go kernel).
var goKernelOnly = false

// rawChunk is the byte chunk for kept tensors.
const rawChunk = 4 << 20

// quantTensor is a 4-bit tensor's payload with random access to its three
// sections, in the order and encoding a stream payload carries them.
type quantTensor struct {
	t                      *tensorstream.Tensor // Quant.NestedOffset is known
	packed, absmax, nested io.ReaderAt
}

// refTensor is a reference tensor.
type refTensor struct {
	name  string
	dtype tensorstream.DType
	shape []int64
	size  int64
	r     io.ReaderAt
}

// checker holds the buffers reused from tensor to tensor.
type checker struct {
	tol            float64
	threads        int   // goroutines comparing chunks; 0: GOMAXPROCS
	all            accum // over every compared 4-bit tensor
	refBuf, packed []byte
	castBuf        []byte // the reference cast to a kept tensor's dtype
	works          []*chunkWork
}

func grow[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, n)
	}
	return s[:n]
}

func readAt(r io.ReaderAt, p []byte, off int64, what, name string) error {
	if _, err := r.ReadAt(p, off); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("%w: tensor %q: reading %s at %d: %w", ErrInput, name, what, off, err)
	}
	return nil
}

// quant checks a 4-bit tensor, and compares it with ref when ref is not nil.
// It returns the findings; err is an I/O failure that stops verification.
func (c *checker) quant(qt *quantTensor, ref *refTensor) (TensorResult, []Finding, error) {
	t := qt.t
	q := t.Quant
	res := newResult(t)
	fail := func(kind, format string, args ...any) (TensorResult, []Finding, error) {
		res.Status = StatusFailed
		return res, []Finding{{Tensor: t.Name, Kind: kind, Detail: fmt.Sprintf(format, args...)}}, nil
	}
	cb := codebookFor(q.Type)
	if cb == nil {
		return fail(KindQuantState, "quant type %q is not nf4 or fp4", q.Type)
	}
	if q.DoubleQuant && q.NestedBlockSize != quant.NestedBlockSize {
		return fail(KindQuantState, "nested block size %d, bitsandbytes uses %d", q.NestedBlockSize, quant.NestedBlockSize)
	}
	if q.DoubleQuant && !finite32(q.NestedOffset) {
		return fail(KindAbsmax, "nested offset is %v", q.NestedOffset)
	}
	if cb != nil && q.BlockSize%2 != 0 {
		return fail(KindQuantState, "block size %d is odd", q.BlockSize)
	}
	var findings []Finding
	compare := ref != nil
	if ref != nil {
		res.RefBytes = ref.size
		switch {
		case !slices.Equal(ref.shape, t.Shape):
			return fail(KindShape, "shape %v, reference has %v", t.Shape, ref.shape)
		case !widenable(ref.dtype):
			return fail(KindDType, "reference dtype %s cannot be compared with a 4-bit tensor", ref.dtype)
		case ref.dtype != t.DType:
			findings = append(findings, Finding{t.Name, KindDType, fmt.Sprintf("dequantizes to %s, reference is %s", t.DType, ref.dtype)})
		}
	}
	bs := int64(q.BlockSize)
	k := &kernel{cb: cb, bs: q.BlockSize, round: rounder(t.DType)}
	if compare {
		k.fast = !goKernelOnly && useFast(ref.dtype, t.DType, q.BlockSize)
	}
	job := &tensorJob{qt: qt, ref: ref, k: k, compare: compare, step: max(chunkElems/bs, quant.NestedBlockSize) * bs}
	n := t.NumElements()
	var acc accum
	var bad int64
	badAt := int64(-1)
	var stop *Finding
	var ioErr error
	c.eachChunk(int((n+job.step-1)/job.step), job.chunk, func(w *chunkWork) bool {
		switch {
		case w.err != nil:
			ioErr = w.err
			return false
		case w.fail != nil:
			stop = w.fail
			return false
		case !compare:
			return true
		}
		w.sums.fold(&acc, w.nblocks)
		acc.n += w.e1 - w.e0
		if w.bad > 0 && bad == 0 {
			badAt = w.badAt
		}
		bad += w.bad
		return true
	})
	if ioErr != nil {
		return res, nil, ioErr
	}
	if stop != nil {
		res.Status = StatusFailed
		return res, []Finding{*stop}, nil
	}
	if !compare {
		res.Status = StatusUnchecked
		return res, findings, nil
	}
	c.all.add(&acc)
	m := acc.metrics()
	env := EnvelopeFor(q.Type, q.BlockSize, c.tol)
	res.Metrics, res.Envelope = &m, &env
	res.Ratio = m.RelError / env.Gaussian
	res.CodeMismatches = bad
	res.Status = StatusOK
	switch {
	case bad > 0:
		res.Status = StatusFailed
		findings = append(findings, Finding{t.Name, KindCodes, fmt.Sprintf(
			"%d of %d codes are not the nearest code book value to the reference (first at element %d): the payload does not encode this tensor",
			bad, n, badAt)})
	case len(findings) > 0:
		res.Status = StatusFailed
	case m.RelError > env.Max:
		res.Status = StatusFlagged
	}
	return res, findings, nil
}

// firstBadAbsmax returns the first stored value that a quantizer cannot have
// produced: a NaN, an infinity, or (for stored maxima of magnitudes) a negative.
func firstBadAbsmax(amax, nested []float32, double bool) (int, float32, string) {
	if double {
		for i, v := range nested {
			if !finite32(v) || v < 0 {
				return i, v, "nested absmax"
			}
		}
		for i, v := range amax {
			if !finite32(v) {
				return i, v, "dequantized absmax"
			}
		}
		return -1, 0, ""
	}
	for i, v := range amax {
		if !finite32(v) || v < 0 {
			return i, v, "absmax"
		}
	}
	return -1, 0, ""
}

func finite32(v float32) bool { return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0) }

// raw compares a kept tensor, read from r, with the reference byte for byte.
func (c *checker) raw(t *tensorstream.Tensor, r io.Reader, ref *refTensor) (TensorResult, []Finding, error) {
	res := newResult(t)
	if ref == nil {
		res.Status = StatusUnchecked
		return res, nil, nil
	}
	res.RefBytes = ref.size
	res.Status = StatusFailed
	switch {
	case !slices.Equal(ref.shape, t.Shape):
		return res, []Finding{{t.Name, KindShape, fmt.Sprintf("shape %v, reference has %v", t.Shape, ref.shape)}}, nil
	case ref.dtype != t.DType && !quantize.CanCast(ref.dtype, t.DType):
		return res, []Finding{{t.Name, KindDType, fmt.Sprintf("dtype %s, reference has %s", t.DType, ref.dtype)}}, nil
	case ref.dtype != t.DType:
		return c.cast(t, r, ref, res)
	}
	c.packed = grow(c.packed, rawChunk)
	c.refBuf = grow(c.refBuf, rawChunk)
	for off := int64(0); off < t.Size; off += rawChunk {
		n := min(rawChunk, t.Size-off)
		if _, err := io.ReadFull(r, c.packed[:n]); err != nil {
			return res, nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if err := readAt(ref.r, c.refBuf[:n], off, "reference", t.Name); err != nil {
			return res, nil, err
		}
		if !bytes.Equal(c.packed[:n], c.refBuf[:n]) {
			i := int64(0)
			for c.packed[i] == c.refBuf[i] {
				i++
			}
			return res, []Finding{{t.Name, KindKeptBytes, fmt.Sprintf("differs from the reference at byte %d", off+i)}}, nil
		}
	}
	res.Status = StatusOK
	return res, nil, nil
}

// cast compares a kept tensor whose dtype differs from the reference's with
// the reference cast to it by quantize.Cast, the function quantize --cast
// uses, chunk by chunk: the bytes must be identical.
func (c *checker) cast(t *tensorstream.Tensor, r io.Reader, ref *refTensor, res TensorResult) (TensorResult, []Finding, error) {
	from, to := int64(ref.dtype.Size()), int64(t.DType.Size())
	n := ref.size / from
	if ref.size%from != 0 || t.Size != n*to {
		return res, []Finding{{t.Name, KindKeptBytes, fmt.Sprintf("%d payload bytes, the reference's %d bytes of %s cast to %s make %d",
			t.Size, ref.size, ref.dtype, t.DType, n*to)}}, nil
	}
	step := int64(rawChunk / max(from, to)) // elements per chunk
	c.packed = grow(c.packed, rawChunk)
	c.refBuf = grow(c.refBuf, rawChunk)
	c.castBuf = grow(c.castBuf, rawChunk)
	for e := int64(0); e < n; e += step {
		k := min(step, n-e)
		in := c.packed[:k*to]
		if _, err := io.ReadFull(r, in); err != nil {
			return res, nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		if err := readAt(ref.r, c.refBuf[:k*from], e*from, "reference", t.Name); err != nil {
			return res, nil, err
		}
		want := quantize.Cast(c.castBuf, c.refBuf[:k*from], ref.dtype, t.DType)
		if !bytes.Equal(in, want) {
			i := int64(0)
			for in[i] == want[i] {
				i++
			}
			return res, []Finding{{t.Name, KindKeptBytes, fmt.Sprintf("differs from the reference cast %s→%s at byte %d (element %d)",
				ref.dtype, t.DType, e*to+i, e+i/to)}}, nil
		}
	}
	res.CastFrom = string(ref.dtype)
	res.Status = StatusOK
	return res, nil, nil
}
