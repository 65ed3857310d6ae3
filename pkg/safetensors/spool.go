package safetensors

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/nf4pipe/nf4pipe/internal/hugemem"
)

// Spool buffers: a writer fills one while its goroutine writes the others, so
// reading the next payload bytes overlaps writing the last ones, and small
// entries (absmax, quant maps, quant-state JSON) reach the spool in large
// writes. spoolBufs × spoolBufSize bounds the memory a spooling Writer holds.
const (
	spoolBufSize = 2 << 20
	spoolBufs    = 4
)

// minPunch is the smallest spool range assemble frees as soon as it has been
// copied; smaller ones are freed with the spool.
const minPunch = 1 << 20

// preallocStep is how far the final file's preallocation moves at a time.
const preallocStep = 16 << 20

// spoolWriter writes from a goroutine of its own: by default it appends to
// its file f (the spool), and to would have it write elsewhere (a Writer that
// knows where an entry goes in the final file writes it there directly).
type spoolWriter struct {
	f     *os.File
	dst   *os.File // where the next bytes go: f unless to said otherwise
	at    int64    // dst's offset for the next byte
	buf   *[]byte  // being filled, for dst at bufAt; nil before the first byte
	bufAt int64
	free  chan *[]byte // buffers the goroutine has written
	full  chan span    // buffers to write, in order; closed by finish
	done  chan struct{}
	over  bool // finish has run
	mu    sync.Mutex
	err   error // the goroutine's first write error
	pre   *preallocator
	mem   *hugemem.Buffer // the buffers, unmapped by finish
	// wrote, if set, is called on the goroutine after each write to a file
	// other than f.
	wrote func(f *os.File, off, n int64)
}

// span is a buffer on its way to a file.
type span struct {
	b  *[]byte
	f  *os.File
	at int64
}

// preallocator keeps a file allocated as far as the spool is written, from a
// goroutine of its own, so that the assembly copies into blocks (on tmpfs,
// pages) that exist already: allocating them is as much work as copying into
// them, and while the stream arrives it is done on a core that would wait.
// It allocates no more than the spool holds, which is less than the final
// file, so the file never needs truncating.
//
// Where fallocate reserves blocks but no pages (disk file systems, not tmpfs),
// it also reads what it allocated, given cores to spare (minCoresToRead):
// unwritten blocks read as zeros without touching the device, and the copy
// then writes into pages in the cache. Reading costs about what it saves
// (docs/BENCHMARKS.md has the figures), so it is worth it only on a core that
// would otherwise wait for the stream.
type preallocator struct {
	f       *os.File
	target  atomic.Int64  // bytes written to the spool
	quit    atomic.Bool   // stop: give up what is not allocated yet
	wake    chan struct{} // buffered 1: target moved
	stopped chan struct{} // closed when the goroutine has returned
	alloc   int64         // allocated; the goroutine's until stopped is closed
	off     bool          // stop or complete has run
}

func newPreallocator(f *os.File) *preallocator {
	p := &preallocator{f: f, wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go p.loop()
	return p
}

// minCoresToRead is how many CPUs make a preallocator read what it allocated
// (a variable for tests).
var minCoresToRead = 4

// cacheBufSize is the buffer through which a preallocator reads what it
// allocated on a disk file system.
const cacheBufSize = 1 << 20

func (p *preallocator) loop() {
	defer close(p.stopped)
	var buf []byte
	if runtime.NumCPU() >= minCoresToRead && !allocatesPages(p.f) {
		buf = make([]byte, cacheBufSize)
	}
	for range p.wake {
		// A step at a time, so that stop waits for one at most.
		for !p.quit.Load() && p.alloc+preallocStep <= p.target.Load() {
			if preallocate(p.f, p.alloc, preallocStep) != nil {
				// Unsupported, or no space: the copy allocates as it goes.
				for range p.wake {
				}
				return
			}
			for off := p.alloc; buf != nil && off < p.alloc+preallocStep; off += cacheBufSize {
				p.f.ReadAt(buf, off) // zeros; a failure only leaves pages out of the cache
			}
			p.alloc += preallocStep
		}
	}
}

// grow tells the goroutine that the spool now holds n bytes.
func (p *preallocator) grow(n int64) {
	p.target.Store(n)
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// stop ends the goroutine, leaving what it has not allocated yet to the
// copy, and returns what it allocated. Safe to call more than once.
func (p *preallocator) stop() int64 {
	p.quit.Store(true)
	return p.complete()
}

// complete ends the goroutine once it has allocated as far as the last grow
// asked (tests and benchmarks), and returns what it allocated.
func (p *preallocator) complete() int64 {
	if !p.off {
		p.off = true
		close(p.wake)
	}
	<-p.stopped
	return p.alloc
}

// release stops the goroutine and frees what it allocated, for the spool to
// use when the file system is full. It reports whether there was any.
func (p *preallocator) release() bool {
	if p.stop() == 0 {
		return false
	}
	p.f.Truncate(0)
	p.alloc = 0
	return true
}

func newSpoolWriter(f *os.File) *spoolWriter {
	s := &spoolWriter{f: f, dst: f, free: make(chan *[]byte, spoolBufs), full: make(chan span, spoolBufs), done: make(chan struct{})}
	// The buffers are touched once and reused for the whole file: in huge
	// pages, the first touch costs a fault per 2 MiB instead of one per
	// 4 KiB (internal/hugemem).
	s.mem = hugemem.Alloc(spoolBufs * spoolBufSize)
	mem := s.mem.Bytes()
	for i := range spoolBufs {
		b := mem[i*spoolBufSize : i*spoolBufSize : (i+1)*spoolBufSize]
		s.free <- &b
	}
	go s.loop(s.full)
	return s
}

// preallocate makes the goroutine keep out allocated as far as the spool is
// written (see preallocator). Call it before the first ReadFrom.
func (s *spoolWriter) preallocate(out *os.File) { s.pre = newPreallocator(out) }

func (s *spoolWriter) loop(full <-chan span) {
	defer close(s.done)
	var spooled int64
	for sp := range full {
		b := sp.b
		if s.failed() == nil {
			n, err := sp.f.WriteAt(*b, sp.at)
			if err != nil && errors.Is(err, syscall.ENOSPC) && s.pre != nil {
				// The preallocation may have taken the space: give it back and
				// go on without.
				freed := s.pre.release()
				s.pre = nil
				if freed {
					var m int
					m, err = sp.f.WriteAt((*b)[n:], sp.at+int64(n))
					n += m
				}
			}
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
			switch {
			case sp.f != s.f:
				if s.wrote != nil {
					s.wrote(sp.f, sp.at, int64(n))
				}
			case s.pre != nil:
				spooled = max(spooled, sp.at+int64(n))
				s.pre.grow(spooled)
			}
		}
		*b = (*b)[:0]
		s.free <- b
	}
}

// to makes the bytes of the next ReadFrom calls go to f from offset off on.
// Ranges that continue one another share buffers.
func (s *spoolWriter) to(f *os.File, off int64) {
	if s.buf != nil && len(*s.buf) > 0 && (f != s.dst || off != s.at) {
		s.full <- span{s.buf, s.dst, s.bufAt}
		s.buf = nil
	}
	if s.buf != nil && len(*s.buf) == 0 {
		s.bufAt = off
	}
	s.dst, s.at = f, off
}

func (s *spoolWriter) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// ReadFrom copies r to the spool until io.EOF. A write error of an earlier
// buffer may surface here or only at finish.
func (s *spoolWriter) ReadFrom(r io.Reader) (int64, error) {
	if s.over { // the buffers are unmapped
		return 0, errSpoolFinished
	}
	var total int64
	for {
		if s.buf == nil {
			s.buf, s.bufAt = <-s.free, s.at
			if err := s.failed(); err != nil {
				return total, err
			}
		}
		b := *s.buf
		n, err := r.Read(b[len(b):cap(b)])
		*s.buf = b[:len(b)+n]
		total += int64(n)
		s.at += int64(n)
		if len(*s.buf) == cap(b) {
			s.full <- span{s.buf, s.dst, s.bufAt}
			s.buf = nil
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

var errSpoolFinished = errors.New("safetensors: internal error: spool written after finish")

// finish writes what is buffered, stops the goroutine and returns the first
// write error. It is safe to call more than once.
func (s *spoolWriter) finish() error {
	if s.over {
		return s.failed()
	}
	s.over = true
	if s.buf != nil && len(*s.buf) > 0 {
		s.full <- span{s.buf, s.dst, s.bufAt}
		s.buf = nil
	}
	close(s.full)
	<-s.done
	if s.pre != nil {
		s.pre.stop()
	}
	s.buf = nil
	s.mem.Free() // the goroutine is done: nothing holds a buffer
	return s.failed()
}
