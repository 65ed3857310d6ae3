package quantize

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nf4pipe/nf4pipe/pkg/progress"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Settings is the header section "quantize": how the stream was quantized.
type Settings = sections.Quantize

// Chunk sizes: small enough for cache and memory, large enough that
// per-call costs vanish. Every device takes 4 MiB runs by default: on the
// H200 machine (BenchmarkStageFileDevice, 2026-12-03) the stage ran 4.75 GB/s
// on the CPU and 5.09 on the GPU with 4 MiB, 3.64 and 3.51 with 32 MiB (the
// GPU's runs are pipelined within, internal/gpu pipelineStep); and
// --device cuda quantizes on the CPU until its GPU is open, which 32 MiB runs
// slowed (0.82-0.86 s against 0.62 for the 2.2 GB TinyLlama stream).
const cpuChunk = 4 << 20

// Run reads a stream from in, quantizes it as o says and writes the result to
// out. The summary is returned also on error, counting what was done.
func Run(in io.Reader, out io.Writer, o Options) (*Summary, error) {
	start := time.Now()
	sum := &Summary{}
	defer func() { sum.Seconds = time.Since(start).Seconds() }()
	if err := o.Validate(); err != nil {
		return sum, err
	}
	dev, _ := ParseDevice(o.Device)
	backends := o.Backends
	if len(backends) == 0 {
		var release func()
		var err error
		if backends, release, err = openBackends(dev, o.Threads, o.warnFunc()); err != nil {
			return sum, err
		}
		defer release()
	}
	sum.Device = names(backends)
	chunk := o.ChunkSize
	if chunk <= 0 {
		chunk = cpuChunk
	}
	cin := &countingReader{r: in, prog: progress.Or(o.Progress)}
	cout := &countingWriter{w: out}
	s := &stage{o: o, sum: sum, backends: backends, chunk: chunk}
	err := s.run(tensorstream.NewReader(cin), tensorstream.NewWriter(cout))
	sum.BytesIn, sum.BytesOut = cin.n.Load(), cout.n
	// The header named where the work was to run; a GPU opened in the
	// background may have joined (auto) or failed to open since.
	sum.Device = names(backends)
	var routes []string
	for _, b := range backends {
		if h, ok := b.(*hybrid); ok {
			routes = append(routes, h.routing())
		}
	}
	sum.Routing = strings.Join(routes, "; ")
	return sum, err
}

// names joins the backends' names with commas.
func names(backends []quant.Backend) string {
	s := make([]string, len(backends))
	for i, b := range backends {
		s[i] = b.Name()
	}
	return strings.Join(s, ",")
}

type stage struct {
	o        Options
	sum      *Summary
	backends []quant.Backend
	next     int // round-robin position in backends
	chunk    int // input bytes handed to the work at a time
	castBuf  []byte
	enc      quant.Encoder // reset for each tensor: its buffers are reused
}

func (s *stage) run(r *tensorstream.Reader, w *tensorstream.Writer) error {
	h, err := r.Header()
	if err != nil {
		return err
	}
	if err := expect(s.o.Progress, h); err != nil {
		return err
	}
	h.AddStage(StageName, s.o.Version, s.o.Args)
	p := s.o.Params
	set := Settings{Type: string(p.Type), BlockSize: p.BlockSize, DoubleQuant: p.DoubleQuant,
		AllowNonFinite: p.AllowNonFinite, Device: s.sum.Device, Only: s.o.Only, Skip: s.o.Skip, Cast: string(s.o.Cast)}
	if p.DoubleQuant {
		set.NestedBlockSize = quant.NestedBlockSize
	}
	if err := sections.SetQuantize(h, &set); err != nil {
		return err
	}
	if err := w.WriteHeader(h); err != nil {
		return err
	}
	// Input buffers hold at least one writer's chunk, so that kept tensors
	// keep their chunk frames (tensorstream.CopyPiece); the work takes them
	// s.chunk bytes at a time.
	pl := startPipeline(r, w, max(s.chunk, tensorstream.DefaultChunkSize))
	err = pl.finish(s.work(pl))
	if testPipelineDone != nil {
		testPipelineDone(pl)
	}
	return err
}

// work takes the input in stream order until its end and queues the output.
func (s *stage) work(p *pipeline) error {
	for {
		it, err := p.next()
		if err != nil {
			return err
		}
		if it.eof {
			return p.put(wop{kind: opClose})
		}
		t := it.t
		if t.NoData {
			return fmt.Errorf("%w: tensor %q is a descriptor without data (the stream was made from a config.json alone): nothing to quantize; run detect on the model directory with its weights", ErrNoData, t.Name)
		}
		progress.Or(s.o.Progress).Tensor(t.Name)
		if err := s.tensor(p, t); err != nil {
			return err
		}
	}
}

func (s *stage) tensor(p *pipeline, t *tensorstream.Tensor) error {
	if err := s.o.sameFormat(t); err != nil {
		return err
	}
	q, reason, override := s.o.decide(t)
	if q && !quantizable(t.DType) {
		return refusal(t)
	}
	if override {
		if err := t.SetAnn(tensorstream.AnnQuantize, q); err != nil {
			return err
		}
		if err := t.SetAnn(tensorstream.AnnReason, reason); err != nil {
			return err
		}
	}
	if q {
		return s.quantize(p, t)
	}
	to, err := keptDType(t, s.o.Cast)
	if err != nil {
		return err
	}
	if to != "" && t.Encoding == tensorstream.Raw && quantizable(t.DType) && t.DType != to {
		return s.cast(p, t, to)
	}
	return s.keep(p, t)
}

// keptDType is the dtype kept tensor t is written in: its "store" annotation
// (detect sets it where transformers keeps a tensor float32 whatever the
// model's dtype), else cast (--cast), else "" for its own.
func keptDType(t *tensorstream.Tensor, cast tensorstream.DType) (tensorstream.DType, error) {
	store := tensorstream.DType(t.AnnString(tensorstream.AnnStore))
	switch {
	case store == "":
		return cast, nil
	case !quantizable(store):
		return "", fmt.Errorf("tensor %q: store annotation %q: want F32, F16 or BF16", t.Name, store)
	}
	return store, nil
}

// each hands b to use s.chunk bytes at a time.
func (s *stage) each(b []byte, use func([]byte) error) error {
	for len(b) > 0 {
		k := min(len(b), s.chunk)
		if err := use(b[:k]); err != nil {
			return err
		}
		b = b[k:]
	}
	return nil
}

// payload hands each verified piece of the current tensor's payload to use,
// which gives its buffer back, and returns the quant state of its trailer.
func payload(p *pipeline, use func(it *step) error) (*tensorstream.QuantState, error) {
	for {
		it, err := p.next()
		if err != nil {
			return nil, err
		}
		if it.end {
			return it.quant, nil
		}
		if err := use(it); err != nil {
			return nil, err
		}
	}
}

// keep passes t through unchanged, its chunks forwarded with the checksums
// they came with where they can be (tensorstream.CopyPiece).
func (s *stage) keep(p *pipeline, t *tensorstream.Tensor) error {
	if err := p.put(wop{kind: opTensor, t: t}); err != nil {
		return err
	}
	q, err := payload(p, func(it *step) error {
		return p.put(wop{kind: opPiece, piece: it.piece, data: it.buf, free: p.inFree})
	})
	if err != nil {
		return err
	}
	end := wop{kind: opEnd}
	if q != nil {
		end.nested = &q.NestedOffset
	}
	if err := p.put(end); err != nil {
		return err
	}
	s.sum.Kept++
	return nil
}

// quantize streams t's payload through a quant.Encoder to the output.
func (s *stage) quantize(p *pipeline, t *tensorstream.Tensor) error {
	prm := s.o.Params
	n := t.NumElements()
	sizes := quant.SizesFor(n, prm)
	qt := t.Clone()
	qt.Encoding = tensorstream.BNB4
	qt.Quant = &tensorstream.QuantState{Type: string(prm.Type), BlockSize: prm.BlockSize, DoubleQuant: prm.DoubleQuant}
	if prm.DoubleQuant {
		qt.Quant.NestedBlockSize = quant.NestedBlockSize
	}
	qt.Size = sizes.Total()
	if err := p.put(wop{kind: opTensor, t: qt}); err != nil {
		return err
	}
	backend := s.backends[s.next%len(s.backends)]
	s.next++
	out := &outWriter{p: p}
	enc := &s.enc
	if err := enc.Reset(out, t.DType, n, prm, backend); err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if _, err := payload(p, func(it *step) error {
		defer p.release(it)
		return s.each(it.piece.Data, func(b []byte) error {
			if _, err := enc.Write(b); err != nil {
				return fmt.Errorf("tensor %q: %w", t.Name, err)
			}
			return nil
		})
	}); err != nil {
		return err
	}
	res, err := enc.Close()
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if err := out.flush(); err != nil {
		return err
	}
	if err := p.put(wop{kind: opEnd, nested: &res.NestedOffset}); err != nil {
		return err
	}
	s.sum.Quantized++
	s.sum.QuantizedElements += n
	s.sum.QuantizedBytes += sizes.Total()
	return nil
}

// cast converts t's raw payload to dtype to piece by piece; an element cut
// by a piece's end waits in carry for the rest of its bytes.
func (s *stage) cast(p *pipeline, t *tensorstream.Tensor, to tensorstream.DType) error {
	ct := t.Clone()
	ct.DType = to
	ct.Size = t.NumElements() * int64(to.Size())
	if err := p.put(wop{kind: opTensor, t: ct}); err != nil {
		return err
	}
	es := t.DType.Size()
	out := &outWriter{p: p}
	var carry []byte
	convert := func(b []byte) error {
		if need := len(b) / es * to.Size(); cap(s.castBuf) < need {
			s.castBuf = make([]byte, need)
		}
		_, err := out.Write(Cast(s.castBuf, b, t.DType, to))
		return err
	}
	if _, err := payload(p, func(it *step) error {
		defer p.release(it)
		return s.each(it.piece.Data, func(b []byte) error {
			if len(carry) > 0 {
				k := min(es-len(carry), len(b))
				carry, b = append(carry, b[:k]...), b[k:]
				if len(carry) < es {
					return nil
				}
				if err := convert(carry); err != nil {
					return err
				}
				carry = carry[:0]
			}
			whole := len(b) / es * es
			if err := convert(b[:whole]); err != nil {
				return err
			}
			carry = append(carry, b[whole:]...)
			return nil
		})
	}); err != nil {
		return err
	}
	// A payload that is not whole elements leaves the output short: the
	// writer says so at EndTensor.
	if err := out.flush(); err != nil {
		return err
	}
	if err := p.put(wop{kind: opEnd}); err != nil {
		return err
	}
	s.sum.Kept++
	s.sum.Cast++
	return nil
}

// expect reads the totals of the progress line from the "model" section
// detect writes: the tensors and their payload bytes, which the stream's bytes
// exceed only by its framing.
func expect(p progress.Meter, h *tensorstream.Header) error {
	if p == nil {
		return nil
	}
	facts, err := sections.GetModel(h)
	if err != nil || facts == nil {
		return err
	}
	p.Expect(facts.Tensors, facts.Bytes.Source)
	return nil
}

// countingReader counts the input for the summary and the progress line,
// once per read of the input, on the pipeline's reading goroutine.
type countingReader struct {
	r    io.Reader
	n    atomic.Int64
	prog progress.Meter
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	c.prog.Add(int64(n))
	if err != nil && err != io.EOF {
		err = &ioError{kind: ErrRead, err: err}
	}
	return n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	if err != nil {
		err = &ioError{kind: ErrWrite, err: err}
	}
	return n, err
}

// ioError marks an error of the input or output itself, keeping the cause
// reachable (errors.Is(err, syscall.EPIPE) still holds).
type ioError struct {
	kind error
	err  error
}

func (e *ioError) Error() string {
	return strings.TrimPrefix(e.kind.Error(), "quantize: ") + ": " + e.err.Error()
}
func (e *ioError) Unwrap() []error { return []error{e.kind, e.err} }

// sameFormat refuses a tensor already 4-bit in a format other than the one
// asked for: passing it through would leave a stream whose "quantize" section
// misstates it, and requantizing 4-bit codes would compound their error.
func (o *Options) sameFormat(t *tensorstream.Tensor) error {
	if t.Encoding != tensorstream.BNB4 || t.Quant == nil {
		return nil
	}
	p, q := o.Params, t.Quant
	if q.Type == string(p.Type) && q.BlockSize == p.BlockSize && q.DoubleQuant == p.DoubleQuant {
		return nil
	}
	return fmt.Errorf("%w: tensor %q is stored %s, blocksize %d, double quant %v, and %s, blocksize %d, double quant %v was asked: "+
		"pass --type %s --blocksize %d --double-quant=%v to keep it as it is, or quantize the 16-bit model instead",
		ErrFormat, t.Name, q.Type, q.BlockSize, q.DoubleQuant, p.Type, p.BlockSize, p.DoubleQuant, q.Type, q.BlockSize, q.DoubleQuant)
}
