package tensorstream

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"sync"

	"golang.org/x/sys/unix"
)

// spliceState is what a writer knows of its destination for splice(2).
type spliceState struct {
	checked bool
	pipe    *os.File // the destination, when it is a pipe
	off     bool     // splicing failed in a way that says it cannot work here
	moved   int64    // payload bytes spliced, for tests
	ahead   ahead    // chunks checksummed ahead of the splice
	misses  int      // chunk lookups that found no hint, for tests
}

// maxCRCWorkers bounds the goroutines that checksum spliced chunks ahead of
// the splice; the pipe, not the checksum, bounds the rate beyond a few.
const maxCRCWorkers = 4

// crcBlock is the buffer each checksum goroutine reads the file through: small
// enough to stay in cache between the read and the checksum.
const crcBlock = 256 << 10

var crcBufs = sync.Pool{New: func() any { b := make([]byte, crcBlock); return &b }}

// splicePipe returns the destination when it is a pipe that splicing may
// still be tried on, or nil.
func (w *Writer) splicePipe() *os.File {
	if !w.splice.checked {
		w.splice.checked = true
		if f, ok := w.dst.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeNamedPipe != 0 {
				w.splice.pipe = f
			}
		}
	}
	if w.splice.off {
		return nil
	}
	return w.splice.pipe
}

// span is a range of a file whose chunks are to be checksummed ahead, chunk
// boundaries counted from off.
type span struct {
	f      *os.File
	off, n int64
}

// crcAhead is a chunk being checksummed ahead: its range and where its CRC
// comes. The channel has room for the one result, so the goroutine never
// waits on it and a dropped chunk leaves nothing behind.
type crcAhead struct {
	f      *os.File
	off, n int64
	out    chan crcResult
}

type crcResult struct {
	crc uint32
	err error
}

// ahead checksums chunks ahead of the splice, across WriteFrom calls: the
// chunks of the spans that Hint announced, in order, at most window of them
// in flight, on at most workers goroutines at a time.
type ahead struct {
	spans   []span     // announced, not yet submitted
	pending []crcAhead // submitted, in order
	sem     chan struct{}
	wg      sync.WaitGroup // the checksum goroutines
}

// stopAhead drops the chunks checksummed ahead and waits for their goroutines,
// so that none reads a file after Close.
func (w *Writer) stopAhead() {
	a := &w.splice.ahead
	clear(a.pending)
	a.pending, a.spans = nil, nil
	a.wg.Wait()
}

// hint queues the n bytes of src at off to be checksummed ahead.
func (w *Writer) hint(src io.ReaderAt, off, n int64) {
	f, ok := src.(*os.File)
	if !ok || n <= 0 || w.chunkSize < spliceMin || w.splicePipe() == nil {
		return
	}
	w.splice.ahead.spans = append(w.splice.ahead.spans, span{f, off, n})
}

func crcWorkers() int { return min(runtime.GOMAXPROCS(0), maxCRCWorkers) }

// fill submits announced chunks until window are in flight.
func (w *Writer) fill() {
	a := &w.splice.ahead
	if a.sem == nil {
		a.sem = make(chan struct{}, crcWorkers())
	}
	sem := a.sem
	window := 2 * cap(sem)
	cs := int64(w.chunkSize)
	for len(a.pending) < window && len(a.spans) > 0 {
		s := &a.spans[0]
		k := min(cs, s.n)
		c := crcAhead{f: s.f, off: s.off, n: k, out: make(chan crcResult, 1)}
		a.pending = append(a.pending, c)
		a.wg.Add(1)
		go func() {
			defer a.wg.Done()
			sem <- struct{}{}
			buf := crcBufs.Get().(*[]byte)
			crc, err := checksumAt(c.f, c.off, c.n, *buf)
			crcBufs.Put(buf)
			<-sem
			c.out <- crcResult{crc, err}
		}()
		s.off, s.n = s.off+k, s.n-k
		if s.n == 0 {
			a.spans[0] = span{}
			a.spans = a.spans[1:]
		}
	}
}

// hinted returns the index of the span not yet submitted that has a chunk
// starting at off of f, or -1.
func (a *ahead) hinted(f *os.File, off, cs int64) int {
	for i, s := range a.spans {
		if s.f == f && off >= s.off && off < s.off+s.n && (off-s.off)%cs == 0 {
			return i
		}
	}
	return -1
}

// chunkCRC returns the CRC-32C of the k bytes of f at off, which begin the n
// bytes the current call splices: from the chunks checksummed ahead when it
// is among them, else after queueing the call's own chunks ahead of any
// announced ones.
func (w *Writer) chunkCRC(f *os.File, off, k, n int64) (uint32, error) {
	a := &w.splice.ahead
	for {
		for i, c := range a.pending {
			if c.f == f && c.off == off && c.n == k {
				clear(a.pending[:i+1])
				a.pending = a.pending[i+1:]
				w.fill()
				r := <-c.out
				return r.crc, r.err
			}
		}
		if i := a.hinted(f, off, int64(w.chunkSize)); i >= 0 {
			// Hinted, further on than the chunks in flight (those before
			// it were written some other way): drop them, go on from it.
			clear(a.pending)
			a.pending = a.pending[:0]
			clear(a.spans[:i])
			a.spans = a.spans[i:]
			s := &a.spans[0]
			s.off, s.n = off, s.off+s.n-off
			w.fill()
			continue
		}
		// Not announced: what was checksummed ahead is not what comes
		// next. Checksum this call's chunks first, then the rest.
		w.splice.misses++
		clear(a.pending)
		a.pending = a.pending[:0]
		a.spans = append([]span{{f, off, n}}, a.spans...)
		w.fill()
	}
}

// spliceChunks writes the n bytes of src at off as chunks whose payload is
// spliced from src to the destination pipe, and returns how many bytes it
// wrote: 0 when the destination is not a pipe. w.buf is empty and n is a whole
// number of chunks. Goroutines read and checksum the chunks ahead of the one
// being spliced, since a chunk's frame, which goes first, holds its CRC; with
// Hint, across calls, so the pipe does not wait for a call's first chunk.
func (w *Writer) spliceChunks(src *os.File, off, n int64) (int64, error) {
	dst := w.splicePipe()
	if dst == nil || n == 0 {
		return 0, nil
	}
	cs := int64(w.chunkSize)
	var done int64
	for done < n {
		k := min(cs, n-done)
		crc, err := w.chunkCRC(src, off+done, k, n-done)
		if err != nil {
			return done, w.failSource(err)
		}
		if err := w.spliceChunk(dst, src, off+done, k, crc); err != nil {
			return done, err
		}
		done += k
	}
	return done, nil
}

// checksumAt returns the CRC-32C of the n bytes of f at off, read through buf.
func checksumAt(f *os.File, off, n int64, buf []byte) (uint32, error) {
	var crc uint32
	for n > 0 {
		p := buf[:min(int64(len(buf)), n)]
		if err := readFullAt(f, p, off); err != nil {
			return 0, err
		}
		crc = crc32.Update(crc, castagnoli, p)
		off, n = off+int64(len(p)), n-int64(len(p))
	}
	return crc, nil
}

// spliceChunk writes one chunk frame: its header through the buffer, which is
// flushed so that it precedes the payload, then the k payload bytes of src at
// off, spliced.
func (w *Writer) spliceChunk(dst, src *os.File, off, k int64, crc uint32) error {
	putFrameHeader(w.frame[:], frameChunk, int(k), crc)
	if _, err := w.bw.Write(w.frame[:]); err != nil {
		return w.fail(w.cur.Name, err)
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail(w.cur.Name, err)
	}
	moved, err := splice(dst, src, off, k)
	w.splice.moved += moved
	switch {
	case err == nil:
	case errors.Is(err, unix.EPIPE):
		// The reader went away. Report it as a write to dst does, which for
		// stdout ends the process by SIGPIPE where that is not ignored, as
		// the Go runtime does for every tool writing to a closed pipe.
		_, err = dst.Write(w.frame[:1])
		if err == nil {
			err = &os.PathError{Op: "write", Path: dst.Name(), Err: unix.EPIPE}
		}
		return w.fail(w.cur.Name, err)
	case errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EOPNOTSUPP):
		// This file or pipe cannot be spliced (a file system without
		// splice_read): copy the rest of the chunk, and copy from now on.
		w.splice.off = true
		rest := w.buf[:k-moved]
		if err := w.readSource(src, rest, off+moved); err != nil {
			return err
		}
		if _, err := w.bw.Write(rest); err != nil {
			return w.fail(w.cur.Name, err)
		}
	case errors.Is(err, io.ErrUnexpectedEOF):
		return w.failSource(err)
	default:
		return w.fail(w.cur.Name, err)
	}
	w.off += frameHeaderLen + k
	w.account(crc, k)
	return nil
}

// splice moves the n bytes of src at off into the pipe dst and returns how
// many it moved. It waits for room in the pipe as a write would, whether dst
// is blocking or in the runtime's poller. A source that ends early is an error
// wrapping io.ErrUnexpectedEOF.
func splice(dst, src *os.File, off, n int64) (int64, error) {
	sc, err := src.SyscallConn()
	if err != nil {
		return 0, err
	}
	dc, err := dst.SyscallConn()
	if err != nil {
		return 0, err
	}
	pos, end := off, off+n
	var serr error
	cerr := sc.Control(func(sfd uintptr) {
		for pos < end && serr == nil {
			var m int64
			werr := dc.Write(func(dfd uintptr) bool {
				for {
					m, serr = unix.Splice(int(sfd), &pos, int(dfd), nil, int(end-pos), unix.SPLICE_F_MOVE)
					if serr != unix.EINTR {
						break
					}
				}
				return serr != unix.EAGAIN // EAGAIN: wait for room, then again
			})
			switch {
			case serr != nil:
				serr = fmt.Errorf("splice %s to %s: %w", src.Name(), dst.Name(), serr)
			case werr != nil:
				serr = werr
			case m == 0:
				serr = fmt.Errorf("reading payload bytes %d..%d: %w", pos, end, io.ErrUnexpectedEOF)
			}
		}
	})
	if serr == nil {
		serr = cerr
	}
	return pos - off, serr
}
