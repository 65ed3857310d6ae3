package quantize

import (
	"errors"
	"io"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/nf4pipe/nf4pipe/internal/hugemem"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// pipeline runs the stage's input and output on goroutines of their own, so
// that the input is read as fast as the pipe delivers it while the caller
// works on what came before:
//
//	read:   Reader.Next and Reader.ReadPiece into buffers of a bounded pool
//	verify: the CRC-32C of each piece, on a few goroutines (on few cores,
//	        the reading checksums as it reads instead: checkOnRead)
//	work:   the caller, in stream order: decides, quantizes, casts or keeps
//	write:  framing, checksumming and writing the output
//
// Memory is bounded whatever the model: len(inFree) input buffers of the
// stage's chunk size and outBufs output buffers of one output chunk, plus
// what the work holds (an encoder's absmax of one tensor).
type pipeline struct {
	steps   chan *step  // read -> work, in stream order
	verify  chan *step  // read -> verify
	inFree  chan []byte // input buffers not in use
	outFree chan []byte // output buffers not in use
	ops     chan wop    // work -> write, in stream order
	stop    chan struct{}
	wg      sync.WaitGroup
	wErr    atomic.Pointer[error] // the first error of the writing goroutine
	closed  error                 // what the writer's Close returned
	mem     *hugemem.Buffer       // the input and output buffers, freed by finish

	// Time the reading waited for a free buffer (the work or the writing
	// was behind) and the work waited for input (the reading or the
	// checksumming was behind); for benchmarks.
	readStall, workStall time.Duration
}

// step is one step of the input: a tensor begins, a piece of its payload,
// its payload ends, or the stream ends.
type step struct {
	t     *tensorstream.Tensor // a tensor begins: the worker's own copy of it
	piece tensorstream.Piece   // payload bytes, in buf
	buf   []byte
	end   bool                     // the payload ended
	quant *tensorstream.QuantState // at end: the quant state its trailer carried
	eof   bool                     // the stream ended
	err   error                    // of reading; of verifying once done is closed
	done  chan struct{}            // for a piece: closed once it is verified
}

type opKind int

const (
	opTensor opKind = iota // WriteTensor(t)
	opData                 // Write(data), then data's buffer back to free
	opPiece                // a verified input piece passed through unchanged
	opEnd                  // EndTensor, with the nested offset to record
	opClose                // Close
)

type wop struct {
	kind   opKind
	t      *tensorstream.Tensor
	data   []byte
	free   chan []byte // where data's buffer goes once written
	piece  tensorstream.Piece
	nested *float32 // opEnd: the tensor's NestedOffset, when it has a quant state
}

// Pool sizes. Reading runs ahead of the work by up to one input buffer per
// two cores (3 to 8, at most 96 MiB): where the work keeps up, the buffers
// stand empty and their bytes are still in cache when it takes them; where
// it does not (few cores), a deeper pool would only let them go cold. The
// output is double-buffered: the writer checksums and writes one chunk while
// the work fills the other (one output chunk is four input chunks' worth).
const (
	minInBufs  = 3
	maxInBufs  = 8
	maxInBytes = 96 << 20
	outBufs    = 2
)

func inBufs(chunk int) int {
	n := min(max(runtime.GOMAXPROCS(0)/2, minInBufs), maxInBufs)
	return max(min(n, maxInBytes/chunk), minInBufs)
}

// Benchmark hooks: testInBufs, when set, overrides the number of input
// buffers; testPipelineDone, when set, sees each pipeline once it is done.
// testCheckOnRead, when set, overrides checkOnRead.
var (
	testInBufs       int
	testPipelineDone func(*pipeline)
	testCheckOnRead  *bool
)

func startPipeline(r *tensorstream.Reader, w *tensorstream.Writer, chunk int) *pipeline {
	n := inBufs(chunk)
	if testInBufs > 0 {
		n = testInBufs
	}
	p := &pipeline{
		steps:   make(chan *step, n+2),
		verify:  make(chan *step, n),
		inFree:  make(chan []byte, n),
		outFree: make(chan []byte, outBufs),
		ops:     make(chan wop, 2*(n+outBufs)),
		stop:    make(chan struct{}),
	}
	// One mapping holds every buffer: they are touched once and reused for
	// the whole stream, so huge pages spare most of the page faults.
	out := tensorstream.DefaultChunkSize
	p.mem = hugemem.Alloc(n*chunk + outBufs*out)
	mem := p.mem.Bytes()
	for i := range n {
		p.inFree <- mem[i*chunk : (i+1)*chunk : (i+1)*chunk]
	}
	mem = mem[n*chunk:]
	for i := range outBufs {
		p.outFree <- mem[i*out : i*out : (i+1)*out]
	}
	verifiers := min(4, max(1, runtime.GOMAXPROCS(0)/4))
	if checkOnRead() {
		verifiers = 0
	}
	p.wg.Add(2 + verifiers)
	go p.read(r, verifiers == 0)
	for range verifiers {
		go p.verifyPieces()
	}
	go p.write(w)
	return p
}

// finish stops the goroutines and waits for them. After an error of the
// work it writes nothing more; otherwise it returns what Close returned.
// The buffers are unmapped then: nothing may hold a piece's bytes or an
// output buffer beyond it.
func (p *pipeline) finish(err error) error {
	if err != nil {
		close(p.stop)
	}
	close(p.ops)
	p.wg.Wait() // without an error, read has sent the end of the stream and returned
	p.mem.Free()
	if err == nil {
		return p.closed
	}
	return err
}

func (p *pipeline) send(it *step) bool {
	select {
	case p.steps <- it:
		return true
	case <-p.stop:
		return false
	}
}

// checkOnRead says whether the reading goroutine checksums the input as it
// reads it (Reader.ReadPieceChecked) rather than leaving it to verifying
// goroutines. On few cores the stage is bound by its CPU time, and a chunk
// checksummed a read at a time, still in cache, costs about half of one
// checksummed once the whole piece is in (2-core VM, docs/BENCHMARKS.md);
// with cores to spare, the reading keeps to moving bytes, as cat does.
func checkOnRead() bool {
	if testCheckOnRead != nil {
		return *testCheckOnRead
	}
	return runtime.GOMAXPROCS(0) < minCoresToVerifyApart
}

// minCoresToVerifyApart is the fewest cores on which pieces are verified by
// goroutines of their own.
const minCoresToVerifyApart = 4

func (p *pipeline) read(r *tensorstream.Reader, check bool) {
	defer p.wg.Done()
	defer close(p.verify)
	readPiece := r.ReadPiece
	if check {
		readPiece = r.ReadPieceChecked
	}
	for {
		t, err := r.Next()
		if err == io.EOF {
			p.send(&step{eof: true})
			return
		}
		if err != nil {
			p.send(&step{err: err})
			return
		}
		if !p.send(&step{t: t.Clone()}) {
			return
		}
		for {
			var buf []byte
			select {
			case buf = <-p.inFree:
			default:
				t0 := time.Now()
				select {
				case buf = <-p.inFree:
				case <-p.stop:
					return
				}
				p.readStall += time.Since(t0)
			}
			piece, err := readPiece(buf)
			if err == io.EOF {
				p.inFree <- buf
				break
			}
			if err != nil {
				p.inFree <- buf
				p.send(&step{err: err})
				return
			}
			it := &step{piece: piece, buf: buf}
			if !check {
				it.done = make(chan struct{})
				p.verify <- it // never blocks: it holds as many steps as there are buffers
			}
			if !p.send(it) {
				return
			}
		}
		end := &step{end: true}
		if t.Quant != nil { // the trailer's, read with the last piece
			q := *t.Quant
			end.quant = &q
		}
		if !p.send(end) {
			return
		}
	}
}

func (p *pipeline) verifyPieces() {
	defer p.wg.Done()
	for it := range p.verify {
		it.err = it.piece.Verify()
		close(it.done)
	}
}

// next returns the next step of the input, its piece verified, or the first
// error of reading, verifying or writing.
func (p *pipeline) next() (*step, error) {
	var it *step
	var ok bool
	select {
	case it, ok = <-p.steps:
	default:
		t0 := time.Now()
		it, ok = <-p.steps
		p.workStall += time.Since(t0)
	}
	if !ok {
		return nil, errors.New("quantize: internal error: input ended without its end")
	}
	if it.done != nil {
		select {
		case <-it.done:
		default:
			t0 := time.Now()
			<-it.done
			p.workStall += time.Since(t0)
		}
	}
	if it.err != nil {
		return nil, it.err
	}
	if err := p.writeErr(); err != nil {
		return nil, err
	}
	return it, nil
}

// release hands an input buffer back to the reader.
func (p *pipeline) release(it *step) { p.inFree <- it.buf[:cap(it.buf)] }

// put queues an output operation. The writing goroutine takes every
// operation until finish, also after an error, so put does not block for long.
func (p *pipeline) put(op wop) error {
	p.ops <- op
	return p.writeErr()
}

func (p *pipeline) writeErr() error {
	if e := p.wErr.Load(); e != nil {
		return *e
	}
	return nil
}

func (p *pipeline) write(w *tensorstream.Writer) {
	defer p.wg.Done()
	var (
		cur     *tensorstream.Tensor
		rechunk bool
		err     error
	)
	for op := range p.ops {
		select {
		case <-p.stop:
			err = errStopped // the work failed: write nothing more
		default:
		}
		if err == nil {
			switch op.kind {
			case opTensor:
				cur, rechunk = op.t, false
				err = w.WriteTensor(op.t)
			case opData:
				_, err = w.Write(op.data)
			case opPiece:
				rechunk, err = tensorstream.CopyPiece(w, &op.piece, rechunk)
			case opEnd:
				if op.nested != nil && cur.Quant != nil {
					cur.Quant.NestedOffset = *op.nested
				}
				err = w.EndTensor()
			case opClose:
				err = w.Close()
				p.closed = err
			}
			if err != nil {
				p.wErr.Store(&err)
			}
		}
		if op.free != nil {
			op.free <- op.data[:cap(op.data)]
		}
	}
}

var errStopped = errors.New("quantize: stopped")

// outWriter collects the work's output in buffers of one output chunk, so
// that the writer frames and checksums them on its own goroutine without
// copying them again.
type outWriter struct {
	p   *pipeline
	buf []byte
}

// AvailableBuffer lends the free part of the current buffer
// (quant.BufferLender): the encoder quantizes into it, and Write of what it
// appended there only takes it.
func (o *outWriter) AvailableBuffer() []byte {
	if o.buf == nil {
		o.buf = (<-o.p.outFree)[:0]
	}
	return o.buf[len(o.buf):len(o.buf)]
}

func (o *outWriter) Write(b []byte) (int, error) {
	n := len(b)
	if n > 0 && n <= cap(o.buf)-len(o.buf) && unsafe.SliceData(b) == unsafe.SliceData(o.buf[len(o.buf):]) {
		// Written in place, into AvailableBuffer's slice.
		o.buf = o.buf[:len(o.buf)+n]
		if len(o.buf) == cap(o.buf) {
			if err := o.flush(); err != nil {
				return n, err
			}
		}
		return n, o.p.writeErr()
	}
	for len(b) > 0 {
		if o.buf == nil {
			o.buf = (<-o.p.outFree)[:0]
		}
		k := copy(o.buf[len(o.buf):cap(o.buf)], b)
		o.buf = o.buf[:len(o.buf)+k]
		b = b[k:]
		if len(o.buf) == cap(o.buf) {
			if err := o.flush(); err != nil {
				return n - len(b), err
			}
		}
	}
	return n, o.p.writeErr()
}

// flush queues what is collected.
func (o *outWriter) flush() error {
	if len(o.buf) == 0 {
		return o.p.writeErr()
	}
	err := o.p.put(wop{kind: opData, data: o.buf, free: o.p.outFree})
	o.buf = nil
	return err
}
