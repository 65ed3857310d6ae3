package safetensors

import (
	"errors"
	"io"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
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

var spoolBufPool = sync.Pool{New: func() any { b := make([]byte, 0, spoolBufSize); return &b }}

// preallocStep is how far the final file's preallocation moves at a time.
const preallocStep = 16 << 20

// spoolWriter appends to a file from a goroutine of its own.
type spoolWriter struct {
	f    *os.File
	buf  *[]byte      // being filled; nil before the first byte
	free chan *[]byte // buffers the goroutine has written
	full chan *[]byte // buffers to write, in order; closed by finish
	done chan struct{}
	over bool // finish has run
	mu   sync.Mutex
	err  error // the goroutine's first write error
	pre  *preallocator
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
	s := &spoolWriter{f: f, free: make(chan *[]byte, spoolBufs), full: make(chan *[]byte, spoolBufs), done: make(chan struct{})}
	for range spoolBufs {
		s.free <- spoolBufPool.Get().(*[]byte)
	}
	go s.loop(s.full)
	return s
}

// preallocate makes the goroutine keep out allocated as far as the spool is
// written (see preallocator). Call it before the first ReadFrom.
func (s *spoolWriter) preallocate(out *os.File) { s.pre = newPreallocator(out) }

func (s *spoolWriter) loop(full <-chan *[]byte) {
	defer close(s.done)
	var written int64
	for b := range full {
		if s.failed() == nil {
			n, err := s.f.Write(*b)
			if err != nil && errors.Is(err, syscall.ENOSPC) && s.pre != nil {
				// The preallocation may have taken the space: give it back and
				// go on without.
				freed := s.pre.release()
				s.pre = nil
				if freed {
					var m int
					m, err = s.f.Write((*b)[n:])
					n += m
				}
			}
			if err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
			}
			if written += int64(n); s.pre != nil {
				s.pre.grow(written)
			}
		}
		*b = (*b)[:0]
		s.free <- b
	}
}

func (s *spoolWriter) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// ReadFrom copies r to the spool until io.EOF. A write error of an earlier
// buffer may surface here or only at finish.
func (s *spoolWriter) ReadFrom(r io.Reader) (int64, error) {
	var total int64
	for {
		if s.buf == nil {
			s.buf = <-s.free
			if err := s.failed(); err != nil {
				return total, err
			}
		}
		b := *s.buf
		n, err := r.Read(b[len(b):cap(b)])
		*s.buf = b[:len(b)+n]
		total += int64(n)
		if len(*s.buf) == cap(b) {
			s.full <- s.buf
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

// finish writes what is buffered, stops the goroutine and returns the first
// write error. It is safe to call more than once.
func (s *spoolWriter) finish() error {
	if s.over {
		return s.failed()
	}
	s.over = true
	if s.buf != nil && len(*s.buf) > 0 {
		s.full <- s.buf
		s.buf = nil
	}
	close(s.full)
	<-s.done
	if s.pre != nil {
		s.pre.stop()
	}
	if s.buf != nil {
		spoolBufPool.Put(s.buf)
		s.buf = nil
	}
	for range len(s.free) {
		spoolBufPool.Put(<-s.free)
	}
	return s.failed()
}
