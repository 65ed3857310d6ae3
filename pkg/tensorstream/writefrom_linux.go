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

type crcJob struct {
	off int64
	n   int64
	out chan<- crcResult
}

type crcResult struct {
	crc uint32
	err error
}

// spliceChunks writes the n bytes of src at off as chunks whose payload is
// spliced from src to the destination pipe, and returns how many bytes it
// wrote: 0 when the destination is not a pipe. w.buf is empty and n is a whole
// number of chunks. Goroutines read and checksum the chunks ahead of the one
// being spliced, since a chunk's frame, which goes first, holds its CRC.
func (w *Writer) spliceChunks(src *os.File, off, n int64) (int64, error) {
	dst := w.splicePipe()
	if dst == nil || n == 0 {
		return 0, nil
	}
	cs := int64(w.chunkSize)
	chunks := int((n + cs - 1) / cs)
	workers := min(runtime.GOMAXPROCS(0), maxCRCWorkers, chunks)
	window := min(chunks, 2*workers)
	jobs := make(chan crcJob, window)
	slots := make([]chan crcResult, window)
	for i := range slots {
		slots[i] = make(chan crcResult, 1) // one job per slot at a time: sends never block
	}
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := crcBufs.Get().(*[]byte)
			defer crcBufs.Put(buf)
			for j := range jobs {
				crc, err := checksumAt(src, j.off, j.n, *buf)
				j.out <- crcResult{crc, err}
			}
		}()
	}
	defer func() {
		close(jobs)
		wg.Wait()
	}()
	submit := func(i int) {
		o := int64(i) * cs
		jobs <- crcJob{off: off + o, n: min(cs, n-o), out: slots[i%window]}
	}
	for i := range window {
		submit(i)
	}
	var done int64
	for i := range chunks {
		r := <-slots[i%window]
		if i+window < chunks {
			submit(i + window)
		}
		if r.err != nil {
			return done, w.failSource(r.err)
		}
		k := min(cs, n-done)
		if err := w.spliceChunk(dst, src, off+done, k, r.crc); err != nil {
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
