package verify

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// chunkElems is the number of elements compared at a time: a multiple of every
// block size times the nested block size, so chunks hold whole blocks and whole
// nested blocks; about 2 MiB of BF16 reference.
const chunkElems = 1 << 20

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
	tol                     float64
	all                     accum // over every compared 4-bit tensor
	refBuf, packed, amaxRaw []byte
	x, amax, nested         []float32
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
	n := t.NumElements()
	bs := int64(q.BlockSize)
	step := max(chunkElems/bs, quant.NestedBlockSize) * bs
	k := &kernel{cb: cb, bs: q.BlockSize, round: rounder(t.DType), firstBad: -1}
	var acc accum
	for e0 := int64(0); e0 < n; e0 += step {
		e1 := min(e0+step, n)
		b0, b1 := e0/bs, (e1+bs-1)/bs
		if err := c.loadAbsmax(qt, b0, b1); err != nil {
			return res, nil, err
		}
		if i, v, what := firstBadAbsmax(c.amax, c.nested, q.DoubleQuant); i >= 0 {
			idx := b0 + int64(i)
			if what == "nested absmax" {
				idx = b0/quant.NestedBlockSize + int64(i)
			}
			return fail(KindAbsmax, "%s %d is %v", what, idx, v)
		}
		if !compare {
			continue
		}
		c.packed = grow(c.packed, int((e1-e0+1)/2))
		if err := readAt(qt.packed, c.packed, e0/2, "packed codes", t.Name); err != nil {
			return res, nil, err
		}
		sz := int64(ref.dtype.Size())
		c.refBuf = grow(c.refBuf, int((e1-e0)*sz))
		if err := readAt(ref.r, c.refBuf, e0*sz, "reference", t.Name); err != nil {
			return res, nil, err
		}
		c.x = grow(c.x, int(e1-e0))
		widen(c.x, c.refBuf, ref.dtype)
		k.chunk(&acc, e0, c.x, c.packed, c.amax)
		if b, detail := c.absmaxMismatch(q, k.refMax); b >= 0 {
			return fail(KindAbsmax, "block %d: %s: the absmax does not belong to this tensor", b0+int64(b), detail)
		}
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
	res.CodeMismatches = k.bad
	res.Status = StatusOK
	switch {
	case k.bad > 0:
		res.Status = StatusFailed
		findings = append(findings, Finding{t.Name, KindCodes, fmt.Sprintf(
			"%d of %d codes are not the nearest code book value to the reference (first at element %d): the payload does not encode this tensor",
			k.bad, n, k.firstBad)})
	case len(findings) > 0:
		res.Status = StatusFailed
	case m.RelError > env.Max:
		res.Status = StatusFlagged
	}
	return res, findings, nil
}

// loadAbsmax reads and dequantizes the absmax of blocks [b0, b1) into c.amax;
// with double quantization c.nested holds the nested absmax it used.
func (c *checker) loadAbsmax(qt *quantTensor, b0, b1 int64) error {
	q, name := qt.t.Quant, qt.t.Name
	nb := int(b1 - b0)
	c.amax = grow(c.amax, nb)
	if !q.DoubleQuant {
		c.amaxRaw = grow(c.amaxRaw, 4*nb)
		c.nested = c.nested[:0]
		if err := readAt(qt.absmax, c.amaxRaw, 4*b0, "absmax", name); err != nil {
			return err
		}
		for i := range c.amax {
			c.amax[i] = math.Float32frombits(binary.LittleEndian.Uint32(c.amaxRaw[4*i:]))
		}
		return nil
	}
	nbs := int64(quant.NestedBlockSize)
	n0, n1 := b0/nbs, (b1+nbs-1)/nbs
	c.amaxRaw = grow(c.amaxRaw, max(nb, int(4*(n1-n0))))
	if err := readAt(qt.nested, c.amaxRaw[:4*(n1-n0)], 4*n0, "nested absmax", name); err != nil {
		return err
	}
	c.nested = grow(c.nested, int(n1-n0))
	for i := range c.nested {
		c.nested[i] = math.Float32frombits(binary.LittleEndian.Uint32(c.amaxRaw[4*i:]))
	}
	codes := c.amaxRaw[:nb]
	if err := readAt(qt.absmax, codes, b0, "absmax codes", name); err != nil {
		return err
	}
	quant.NestDequantize(c.amax, codes, c.nested, q.NestedOffset)
	return nil
}

// absmaxMismatch compares the stored absmax of the chunk's blocks (c.amax,
// and with double quantization the codes and nested absmax they came from)
// with each block's max |x| in the reference. A plain absmax must be that
// maximum (to a relative 1e-6, or zero where it is subnormal: flush to zero);
// a double-quantized one must have the 8-bit code whose cell of the nested map
// holds (max - offset) / nested absmax. It returns the first bad block, or -1.
func (c *checker) absmaxMismatch(q *tensorstream.QuantState, refMax []float32) (int, string) {
	if !q.DoubleQuant {
		for b, m := range refMax {
			a := c.amax[b]
			if math.Abs(float64(a)-float64(m)) > 1e-6*float64(m) && !(ftz(m) == 0 && a == 0) {
				return b, fmt.Sprintf("stored absmax %g, reference max |x| %g", a, m)
			}
		}
		return -1, ""
	}
	nc := nestedCells()
	codes := c.amaxRaw[:len(refMax)]
	for b, m := range refMax {
		n := c.nested[b/quant.NestedBlockSize]
		if n == 0 {
			continue
		}
		y := (float64(m) - float64(q.NestedOffset)) / float64(n)
		if code := codes[b]; y < nc.lo[code] || y > nc.hi[code] {
			return b, fmt.Sprintf("absmax code %d (%g), reference max |x| %g", code, c.amax[b], m)
		}
	}
	return -1, ""
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
	case ref.dtype != t.DType:
		return res, []Finding{{t.Name, KindDType, fmt.Sprintf("dtype %s, reference has %s", t.DType, ref.dtype)}}, nil
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
