package tensorstream

import (
	"bufio"
	"fmt"
	"hash/crc32"
	"io"
)

// DefaultChunkSize is the payload chunk a writer emits unless told otherwise.
const DefaultChunkSize = 4 << 20

// Writer writes a tensor stream. Calls go WriteHeader, then for each tensor
// WriteTensor followed by its payload through Write or ReadFrom, then Close.
type Writer struct {
	bw        *bufio.Writer
	dst       io.Writer // what bw writes to: WriteFrom may splice into it (writefrom.go)
	chunkSize int
	off       int64
	err       error // sticky

	headerDone bool
	closed     bool

	cur        *Tensor
	curLeft    int64 // payload bytes still expected for cur
	payloadCRC uint32
	buf        []byte // pending chunk, len(buf) bytes filled
	frame      [frameHeaderLen]byte

	tensors int64
	bytes   int64

	splice spliceState // WriteFrom's fast path, per platform
}

// NewWriter returns a writer that emits chunks of DefaultChunkSize.
func NewWriter(w io.Writer) *Writer { return NewWriterSize(w, DefaultChunkSize) }

// NewWriterSize returns a writer that emits payload chunks of at most chunkSize bytes.
func NewWriterSize(w io.Writer, chunkSize int) *Writer {
	if chunkSize <= 0 || chunkSize > DefaultLimits.MaxChunk {
		chunkSize = DefaultChunkSize
	}
	return &Writer{bw: bufio.NewWriterSize(w, 64<<10), dst: w, chunkSize: chunkSize}
}

func (w *Writer) fail(tensor string, err error) error {
	if w.err == nil {
		w.err = &Error{Tensor: tensor, Offset: w.off, Err: err}
	}
	return w.err
}

func (w *Writer) writeFrame(kind byte, body []byte) error {
	return w.writeFrameCRC(kind, body, crc32.Checksum(body, castagnoli))
}

func (w *Writer) writeFrameCRC(kind byte, body []byte, crc uint32) error {
	putFrameHeader(w.frame[:], kind, len(body), crc)
	if _, err := w.bw.Write(w.frame[:]); err != nil {
		return err
	}
	if _, err := w.bw.Write(body); err != nil {
		return err
	}
	w.off += int64(frameHeaderLen + len(body))
	return nil
}

func (w *Writer) writeRecord(kind byte, tensor string, v any) error {
	body, err := marshal(v)
	if err != nil {
		return w.fail(tensor, fmt.Errorf("encoding %q record: %w", kind, err))
	}
	if len(body) > DefaultLimits.MaxRecord {
		return w.fail(tensor, fmt.Errorf("%w: %q record of %d bytes exceeds %d", ErrLimit, kind, len(body), DefaultLimits.MaxRecord))
	}
	if err := w.writeFrame(kind, body); err != nil {
		return w.fail(tensor, err)
	}
	return nil
}

// WriteHeader writes the magic and the header record; it must come first.
func (w *Writer) WriteHeader(h *Header) error {
	if w.err != nil {
		return w.err
	}
	if w.headerDone {
		return w.fail("", fmt.Errorf("%w: header written twice", ErrState))
	}
	m := [magicLen]byte{magic[0], magic[1], magic[2], magic[3], MajorVersion, MinorVersion}
	if _, err := w.bw.Write(m[:]); err != nil {
		return w.fail("", err)
	}
	w.off += magicLen
	w.headerDone = true
	return w.writeRecord(frameHeader, "", h)
}

// WriteTensor finishes the previous tensor and writes t's descriptor. Unless
// t.NoData is set, exactly t.Size payload bytes must follow. The writer keeps t
// until the tensor is finished and writes the trailer from it then, so a caller
// may set t.Quant.NestedOffset after writing the payload.
func (w *Writer) WriteTensor(t *Tensor) error {
	if err := w.EndTensor(); err != nil {
		return err
	}
	if !w.headerDone || w.closed {
		return w.fail(t.Name, fmt.Errorf("%w: tensor outside header..close", ErrState))
	}
	if err := t.validate(DefaultLimits); err != nil {
		return w.fail(t.Name, fmt.Errorf("%w: descriptor: %v", ErrCorrupt, err))
	}
	if err := w.writeRecord(frameTensor, t.Name, t); err != nil {
		return err
	}
	w.cur, w.curLeft, w.payloadCRC = t, t.Size, 0
	if t.NoData {
		w.curLeft = 0
	}
	w.tensors++
	return nil
}

// Write appends payload bytes of the current tensor.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.cur == nil {
		return 0, w.fail("", fmt.Errorf("%w: payload bytes without a tensor", ErrState))
	}
	if int64(len(p)) > w.curLeft {
		return 0, w.fail(w.cur.Name, fmt.Errorf("%w: %d more payload bytes than the %d declared", ErrSize, int64(len(p))-w.curLeft, w.cur.Size))
	}
	n := len(p)
	for len(p) > 0 {
		if len(w.buf) == 0 && len(p) >= w.chunkSize {
			if err := w.emit(p[:w.chunkSize]); err != nil {
				return n - len(p), err
			}
			p = p[w.chunkSize:]
			continue
		}
		if len(w.buf) == 0 && int64(len(p)) == w.curLeft {
			// The payload's last, short chunk, whole: the frame it would
			// get from the buffer at EndTensor, without copying it there.
			if err := w.emit(p); err != nil {
				return n - len(p), err
			}
			break
		}
		if w.buf == nil {
			w.buf = make([]byte, 0, w.chunkSize)
		}
		k := copy(w.buf[len(w.buf):cap(w.buf)], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		if len(w.buf) == cap(w.buf) {
			if err := w.flushChunk(); err != nil {
				return n - len(p), err
			}
		}
	}
	return n, nil
}

// ReadFrom copies the current tensor's payload from r, reading into the chunk
// buffer directly, until r ends or the declared size is reached.
func (w *Writer) ReadFrom(r io.Reader) (int64, error) {
	if w.err != nil {
		return 0, w.err
	}
	if w.cur == nil {
		return 0, w.fail("", fmt.Errorf("%w: payload bytes without a tensor", ErrState))
	}
	if w.buf == nil {
		w.buf = make([]byte, 0, w.chunkSize)
	}
	var total int64
	for {
		room := int64(cap(w.buf) - len(w.buf))
		if room > w.curLeft-int64(len(w.buf)) {
			room = w.curLeft - int64(len(w.buf))
		}
		if room == 0 {
			// Declared size reached: anything more from r is an error.
			var one [1]byte
			n, err := r.Read(one[:])
			if n > 0 {
				return total, w.fail(w.cur.Name, fmt.Errorf("%w: source has more than the %d bytes declared", ErrSize, w.cur.Size))
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
			continue
		}
		n, err := r.Read(w.buf[len(w.buf) : len(w.buf)+int(room)])
		w.buf = w.buf[:len(w.buf)+n]
		total += int64(n)
		if len(w.buf) == cap(w.buf) || int64(len(w.buf)) == w.curLeft {
			if ferr := w.flushChunk(); ferr != nil {
				return total, ferr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

func (w *Writer) flushChunk() error {
	if len(w.buf) == 0 {
		return nil
	}
	err := w.emit(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *Writer) emit(p []byte) error {
	return w.emitCRC(p, crc32.Checksum(p, castagnoli))
}

// emitCRC writes a chunk whose CRC-32C is already known.
func (w *Writer) emitCRC(p []byte, crc uint32) error {
	if err := w.writeFrameCRC(frameChunk, p, crc); err != nil {
		return w.fail(w.cur.Name, err)
	}
	w.account(crc, int64(len(p)))
	return nil
}

// account counts a chunk of n payload bytes with CRC crc as written.
func (w *Writer) account(crc uint32, n int64) {
	w.payloadCRC = crcCombine(w.payloadCRC, crc, n)
	w.curLeft -= n
	w.bytes += n
}

// EndTensor finishes the current tensor: it checks that its whole payload was
// written and writes the trailer. WriteTensor and Close call it as needed.
func (w *Writer) EndTensor() error {
	if w.err != nil {
		return w.err
	}
	t := w.cur
	if t == nil {
		return nil
	}
	if err := w.flushChunk(); err != nil {
		return err
	}
	if w.curLeft != 0 {
		return w.fail(t.Name, fmt.Errorf("%w: %d of %d payload bytes written", ErrSize, t.Size-w.curLeft, t.Size))
	}
	tr := trailer{Size: t.Size, Checksum: w.payloadCRC, Quant: t.Quant}
	if t.NoData {
		tr.Size = 0
	}
	if err := w.writeRecord(frameTrailer, t.Name, &tr); err != nil {
		return err
	}
	t.Checksum = w.payloadCRC
	w.cur = nil
	return nil
}

// Flush writes buffered frames to the underlying writer. A partial chunk stays
// pending until it fills or the tensor ends.
func (w *Writer) Flush() error {
	if w.err != nil {
		return w.err
	}
	if err := w.bw.Flush(); err != nil {
		return w.fail("", err)
	}
	return nil
}

// Close finishes the last tensor, writes the end record and flushes. It does not
// close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	if w.closed {
		return nil
	}
	if !w.headerDone {
		return w.fail("", fmt.Errorf("%w: close before the header", ErrState))
	}
	if err := w.EndTensor(); err != nil {
		return err
	}
	if err := w.writeRecord(frameEnd, "", &End{Tensors: w.tensors, Bytes: w.bytes}); err != nil {
		return err
	}
	w.closed = true
	return w.Flush()
}

// CopyTensor writes t to w and copies its payload from r, which must be positioned
// on t (just returned by r.Next). The trailer carries what r learned from t's own
// trailer, so the nested offset and checksum pass through unchanged. Chunks that
// fit the writer's chunk size are forwarded whole with the CRC the reader
// verified, so each payload byte is checksummed once.
func CopyTensor(w *Writer, r *Reader, t *Tensor) error {
	if err := w.WriteTensor(t); err != nil {
		return err
	}
	for !t.NoData && !r.payloadEOF {
		if r.err != nil {
			return r.err
		}
		if w.err != nil {
			return w.err
		}
		if r.chunkLeft != 0 || len(w.buf) != 0 {
			if _, err := io.Copy(w, r); err != nil {
				return err
			}
			break
		}
		if w.buf == nil {
			w.buf = make([]byte, 0, w.chunkSize)
		}
		p, crc, err := r.nextChunk(w.buf[:0])
		if err != nil {
			return err
		}
		if p != nil {
			if err := w.emitCRC(p, crc); err != nil {
				return err
			}
		}
	}
	return w.EndTensor()
}
