package tensorstream

import (
	"fmt"
	"io"
	"os"
)

// spliceMin is the smallest chunk WriteFrom splices; smaller ones are copied
// through the writer's buffer, where they batch with the frames around them
// into fewer writes. A variable so that tests can splice small chunks.
var spliceMin = 64 << 10

// WriteFrom appends n payload bytes of the current tensor, read from src at
// offset off. The stream is byte for byte what Write would give for the same
// bytes: the same chunks, each with the CRC-32C of what was read from src.
//
// When src is an *os.File and the writer's destination a pipe, on Linux,
// whole chunks move from the file to the pipe by splice(2): page-cache pages
// are passed to the pipe by reference instead of being copied through user
// space, and the bytes are read only to checksum them, ahead of the splice,
// on other goroutines. Elsewhere the bytes are read into the chunk buffer and
// written, as ReadFrom does.
//
// A src that ends before off+n is an error wrapping io.ErrUnexpectedEOF. Any
// error leaves the writer failed (errors are sticky), since a chunk frame may
// already be out.
func (w *Writer) WriteFrom(src io.ReaderAt, off, n int64) error {
	if w.err != nil {
		return w.err
	}
	if w.cur == nil {
		return w.fail("", fmt.Errorf("%w: payload bytes without a tensor", ErrState))
	}
	if n < 0 || off < 0 {
		return w.fail(w.cur.Name, fmt.Errorf("%w: negative range %d+%d", ErrState, off, n))
	}
	if left := w.curLeft - int64(len(w.buf)); n > left {
		return w.fail(w.cur.Name, fmt.Errorf("%w: %d more payload bytes than the %d declared", ErrSize, n-left, w.cur.Size))
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, w.chunkSize)
	}
	// Complete a chunk that earlier calls left pending.
	if len(w.buf) > 0 && n > 0 {
		k := min(n, int64(cap(w.buf)-len(w.buf)))
		if err := w.readSource(src, w.buf[len(w.buf):len(w.buf)+int(k)], off); err != nil {
			return err
		}
		w.buf = w.buf[:len(w.buf)+int(k)]
		off, n = off+k, n-k
		if len(w.buf) == cap(w.buf) || int64(len(w.buf)) == w.curLeft {
			if err := w.flushChunk(); err != nil {
				return err
			}
		}
	}
	// Whole chunks: every full one, and the tensor's last one when this call
	// ends the tensor. What is left starts a chunk that a later call completes.
	whole := n - n%int64(w.chunkSize)
	if n == w.curLeft {
		whole = n
	}
	if whole > 0 {
		if err := w.writeChunksFrom(src, off, whole); err != nil {
			return err
		}
	}
	if rest := n - whole; rest > 0 {
		if err := w.readSource(src, w.buf[:rest], off+whole); err != nil {
			return err
		}
		w.buf = w.buf[:rest]
	}
	return nil
}

// writeChunksFrom writes the n bytes of src at off as chunks; w.buf is empty
// and n is a whole number of chunks, the last one possibly short.
func (w *Writer) writeChunksFrom(src io.ReaderAt, off, n int64) error {
	if f, ok := src.(*os.File); ok && w.chunkSize >= spliceMin {
		spliced := n
		if last := n % int64(w.chunkSize); last != 0 && last < int64(spliceMin) {
			spliced -= last // a short last chunk goes through the buffer
		}
		done, err := w.spliceChunks(f, off, spliced)
		if err != nil {
			return err
		}
		off, n = off+done, n-done
	}
	for n > 0 {
		k := min(n, int64(w.chunkSize))
		p := w.buf[:k]
		if err := w.readSource(src, p, off); err != nil {
			return err
		}
		if err := w.emit(p); err != nil {
			return err
		}
		off, n = off+k, n-k
	}
	return nil
}

// readSource fills p from src at off; a short source fails the writer.
func (w *Writer) readSource(src io.ReaderAt, p []byte, off int64) error {
	if err := readFullAt(src, p, off); err != nil {
		return w.failSource(err)
	}
	return nil
}

// failSource makes err, from reading the payload's source, the writer's
// sticky error. It is not wrapped in *Error: the caller knows the source and
// names it, and the stream is not at fault.
func (w *Writer) failSource(err error) error {
	if w.err == nil {
		w.err = err
	}
	return w.err
}

// readFullAt fills p from src at off; io.ReaderAt may report io.EOF with a
// full read, and a short one becomes io.ErrUnexpectedEOF.
func readFullAt(src io.ReaderAt, p []byte, off int64) error {
	n, err := src.ReadAt(p, off)
	if n == len(p) {
		return nil
	}
	if err == nil || err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("reading payload bytes %d..%d: %w", off, off+int64(len(p)), err)
}
