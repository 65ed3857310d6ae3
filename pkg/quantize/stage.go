package quantize

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Settings is the header section "quantize": how the stream was quantized.
type Settings struct {
	Type            string   `msgpack:"type" json:"type"`
	BlockSize       int      `msgpack:"blocksize" json:"blocksize"`
	DoubleQuant     bool     `msgpack:"double_quant" json:"double_quant"`
	NestedBlockSize int      `msgpack:"nested_blocksize,omitempty" json:"nested_blocksize,omitempty"`
	AllowNonFinite  bool     `msgpack:"allow_nonfinite" json:"allow_nonfinite"`
	Device          string   `msgpack:"device" json:"device"` // where the work ran: cpu, cuda:0, ...
	Only            []string `msgpack:"only,omitempty" json:"only,omitempty"`
	Skip            []string `msgpack:"skip,omitempty" json:"skip,omitempty"`
	Cast            string   `msgpack:"cast,omitempty" json:"cast,omitempty"`
}

// Default chunk sizes: small enough for cache and memory, large enough that
// per-call costs vanish (a GPU call copies through pinned memory).
const (
	cpuChunk = 4 << 20
	gpuChunk = 32 << 20
)

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
	for i, b := range backends {
		if i > 0 {
			sum.Device += ","
		}
		sum.Device += b.Name()
	}
	chunk := o.ChunkSize
	if chunk <= 0 {
		chunk = cpuChunk
		if backends[0].Name() != "cpu" {
			chunk = gpuChunk
		}
	}
	cin := &countingReader{r: in, prog: o.Progress}
	cout := &countingWriter{w: out}
	s := &stage{o: o, sum: sum, backends: backends, buf: make([]byte, chunk)}
	err := s.run(tensorstream.NewReader(cin), tensorstream.NewWriter(cout))
	sum.BytesIn, sum.BytesOut = cin.n.Load(), cout.n
	return sum, err
}

type stage struct {
	o        Options
	sum      *Summary
	backends []quant.Backend
	next     int // round-robin position in backends
	buf      []byte
	bufs     [][]byte // buf and a second chunk for reading ahead
	castBuf  []byte
}

func (s *stage) run(r *tensorstream.Reader, w *tensorstream.Writer) error {
	h, err := r.Header()
	if err != nil {
		return err
	}
	expect(s.o.Progress, h)
	h.AddStage(StageName, s.o.Version, s.o.Args)
	p := s.o.Params
	set := Settings{Type: string(p.Type), BlockSize: p.BlockSize, DoubleQuant: p.DoubleQuant,
		AllowNonFinite: p.AllowNonFinite, Device: s.sum.Device, Only: s.o.Only, Skip: s.o.Skip, Cast: string(s.o.Cast)}
	if p.DoubleQuant {
		set.NestedBlockSize = quant.NestedBlockSize
	}
	if err := h.Set(tensorstream.SectionQuantize, set); err != nil {
		return err
	}
	if err := w.WriteHeader(h); err != nil {
		return err
	}
	for {
		t, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		if t.NoData {
			return fmt.Errorf("%w: tensor %q is a descriptor without data (the stream was made from a config.json alone): nothing to quantize; run detect on the model directory with its weights", ErrNoData, t.Name)
		}
		s.o.Progress.Tensor(t.Name)
		if err := s.tensor(r, w, t); err != nil {
			return err
		}
	}
	return w.Close()
}

func (s *stage) tensor(r *tensorstream.Reader, w *tensorstream.Writer, t *tensorstream.Tensor) error {
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
	switch {
	case q:
		return s.quantize(r, w, t)
	case s.o.Cast != "" && t.Encoding == tensorstream.Raw && quantizable(t.DType) && t.DType != s.o.Cast:
		return s.cast(r, w, t)
	}
	s.sum.Kept++
	return tensorstream.CopyTensor(w, r, t)
}

// quantize streams t's payload through a quant.Encoder into w.
func (s *stage) quantize(r *tensorstream.Reader, w *tensorstream.Writer, t *tensorstream.Tensor) error {
	p := s.o.Params
	n := t.NumElements()
	sizes := quant.SizesFor(n, p)
	qt := t.Clone()
	qt.Encoding = tensorstream.BNB4
	qt.Quant = &tensorstream.QuantState{Type: string(p.Type), BlockSize: p.BlockSize, DoubleQuant: p.DoubleQuant}
	if p.DoubleQuant {
		qt.Quant.NestedBlockSize = quant.NestedBlockSize
	}
	qt.Size = sizes.Total()
	if err := w.WriteTensor(qt); err != nil {
		return err
	}
	backend := s.backends[s.next%len(s.backends)]
	s.next++
	enc, err := quant.NewEncoder(w, quant.DType(t.DType), n, p, backend)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if err := s.feed(r, t.Size, func(b []byte) error {
		if _, err := enc.Write(b); err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		return nil
	}); err != nil {
		return err
	}
	res, err := enc.Close()
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	qt.Quant.NestedOffset = res.NestedOffset
	if err := w.EndTensor(); err != nil {
		return err
	}
	s.sum.Quantized++
	s.sum.QuantizedElements += n
	s.sum.QuantizedBytes += sizes.Total()
	return nil
}

// cast converts t's raw payload to s.o.Cast chunk by chunk.
func (s *stage) cast(r *tensorstream.Reader, w *tensorstream.Writer, t *tensorstream.Tensor) error {
	ct := t.Clone()
	ct.DType = s.o.Cast
	ct.Size = t.NumElements() * int64(s.o.Cast.Size())
	if err := w.WriteTensor(ct); err != nil {
		return err
	}
	es := int64(t.DType.Size())
	in := s.buf[:int64(len(s.buf))/es*es]
	if need := len(in) / int(es) * s.o.Cast.Size(); cap(s.castBuf) < need {
		s.castBuf = make([]byte, need)
	}
	for left := t.Size; left > 0; {
		k := min(int64(len(in)), left)
		if _, err := io.ReadFull(r, in[:k]); err != nil {
			return err
		}
		if _, err := w.Write(Cast(s.castBuf, in[:k], t.DType, s.o.Cast)); err != nil {
			return err
		}
		left -= k
	}
	// Reading the last byte verified the trailer; an empty payload has none to read.
	if err := w.EndTensor(); err != nil {
		return err
	}
	s.sum.Kept++
	s.sum.Cast++
	return nil
}

// feed reads size payload bytes from r in chunks and hands them to use,
// reading the next chunk (checksums included) while use works on the last.
func (s *stage) feed(r io.Reader, size int64, use func([]byte) error) error {
	if len(s.bufs) == 0 {
		s.bufs = [][]byte{s.buf, make([]byte, len(s.buf))}
	}
	type chunk struct {
		b   []byte
		err error
	}
	full := make(chan chunk, len(s.bufs))
	free := make(chan []byte, len(s.bufs))
	for _, b := range s.bufs {
		free <- b
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer close(full)
		for left := size; left > 0; {
			var b []byte
			select {
			case b = <-free:
			case <-stop:
				return
			}
			k := min(int64(len(b)), left)
			_, err := io.ReadFull(r, b[:k])
			full <- chunk{b[:k], err}
			if err != nil {
				return
			}
			left -= k
		}
	}()
	defer func() { close(stop); <-done }()
	for c := range full {
		if c.err != nil {
			return c.err
		}
		if err := use(c.b); err != nil {
			return err
		}
		free <- c.b[:cap(c.b)]
	}
	return nil
}

// expect reads the totals of the progress line from the "model" section
// detect writes: the tensors and their payload bytes, which the stream's bytes
// exceed only by its framing.
func expect(p *cli.Progress, h *tensorstream.Header) {
	if p == nil {
		return
	}
	var facts struct {
		Tensors int `msgpack:"tensors"`
		Bytes   struct {
			Source int64 `msgpack:"source"`
		} `msgpack:"bytes"`
	}
	if ok, err := h.Get(tensorstream.SectionModel, &facts); ok && err == nil {
		p.Expect(facts.Tensors, facts.Bytes.Source)
	}
}

// countingReader counts the input for the summary and the progress line,
// once per read of the input, while feed's goroutine reads ahead.
type countingReader struct {
	r    io.Reader
	n    atomic.Int64
	prog *cli.Progress
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
