package safetensors

import (
	"io"
	"os"
	"sync"
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
}

func newSpoolWriter(f *os.File) *spoolWriter {
	s := &spoolWriter{f: f, free: make(chan *[]byte, spoolBufs), full: make(chan *[]byte, spoolBufs), done: make(chan struct{})}
	for range spoolBufs {
		s.free <- spoolBufPool.Get().(*[]byte)
	}
	go s.loop(s.full)
	return s
}

func (s *spoolWriter) loop(full <-chan *[]byte) {
	defer close(s.done)
	for b := range full {
		if s.failed() == nil {
			if _, err := s.f.Write(*b); err != nil {
				s.mu.Lock()
				s.err = err
				s.mu.Unlock()
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
	if s.buf != nil {
		spoolBufPool.Put(s.buf)
		s.buf = nil
	}
	for range len(s.free) {
		spoolBufPool.Put(<-s.free)
	}
	return s.failed()
}
