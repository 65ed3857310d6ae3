package tensorstream

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Limits bound every length a reader accepts from its input, so hostile input
// cannot make it allocate without bound.
type Limits struct {
	MaxRecord int   // bytes of a header, descriptor, trailer or end record
	MaxChunk  int   // bytes of one payload chunk
	MaxTensor int64 // payload bytes of one tensor
	MaxName   int   // bytes of a tensor name
	MaxDims   int   // dimensions of a shape
}

// DefaultLimits are generous for any real model and small enough that no record
// makes a reader allocate more than a few MiB.
var DefaultLimits = Limits{
	MaxRecord: 16 << 20,
	MaxChunk:  64 << 20,
	MaxTensor: 1 << 46,
	MaxName:   4096,
	MaxDims:   16,
}

const readBufferSize = 256 << 10

// Reader reads a tensor stream. It is an io.Reader over the payload of the tensor
// that Next returned last.
type Reader struct {
	br     *bufio.Reader
	lim    Limits
	off    int64 // stream bytes consumed
	err    error // sticky
	header *Header
	end    *End

	cur        *Tensor
	curOff     int64  // offset of the current tensor's descriptor frame
	tensorLeft int64  // payload bytes of cur not yet read
	chunkLeft  int64  // bytes of the current chunk not yet read
	chunkLen   int64  // bytes of the current chunk
	chunkOff   int64  // offset of the current chunk frame
	chunkWant  uint32 // CRC-32C the current chunk frame declared
	chunkCRC   uint32
	payloadCRC uint32
	payloadEOF bool // the trailer of cur was read

	tensors int64
	bytes   int64
	body    []byte // record scratch, reused
}

// NewReader returns a reader with DefaultLimits.
func NewReader(r io.Reader) *Reader { return NewReaderLimits(r, DefaultLimits) }

// NewReaderLimits returns a reader that enforces lim.
func NewReaderLimits(r io.Reader, lim Limits) *Reader {
	return &Reader{br: bufio.NewReaderSize(r, readBufferSize), lim: lim}
}

func (r *Reader) fail(tensor string, off int64, err error) error {
	if r.err == nil {
		r.err = &Error{Tensor: tensor, Offset: off, Err: err}
	}
	return r.err
}

// readFull reads exactly len(b) bytes, turning any early end into io.ErrUnexpectedEOF.
func (r *Reader) readFull(b []byte) error {
	n, err := io.ReadFull(r.br, b)
	r.off += int64(n)
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Header reads the magic and the header record, once; later calls return the same.
func (r *Reader) Header() (*Header, error) {
	if r.header != nil || r.err != nil {
		return r.header, r.err
	}
	var m [magicLen]byte
	if err := r.readFull(m[:]); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) && r.off == 0 {
			return nil, r.fail("", 0, fmt.Errorf("empty input, expected a tensor stream: %w", io.ErrUnexpectedEOF))
		}
		return nil, r.fail("", 0, err)
	}
	if [4]byte(m[:4]) != magic {
		return nil, r.fail("", 0, fmt.Errorf("%w: input does not start with a tensor stream's magic %q (got %q)", ErrCorrupt, magic[:], m[:4]))
	}
	major, minor := int(m[4]), int(m[5])
	if major != MajorVersion {
		return nil, r.fail("", 4, fmt.Errorf("%w: stream is format %d.%d, this reader reads %d.x", ErrVersion, major, minor, MajorVersion))
	}
	h := new(Header)
	if err := r.readRecord(frameHeader, "", h); err != nil {
		return nil, err
	}
	h.Major, h.Minor = major, minor
	r.header = h
	return h, nil
}

// frame reads a frame header and returns its kind, length and declared CRC.
func (r *Reader) frame() (kind byte, n int64, crc uint32, err error) {
	var b [frameHeaderLen]byte
	if err := r.readFull(b[:]); err != nil {
		return 0, 0, 0, err
	}
	return b[0], int64(binary.LittleEndian.Uint32(b[1:5])), binary.LittleEndian.Uint32(b[5:9]), nil
}

// readRecord reads a frame that must be of kind want and decodes its body into v.
func (r *Reader) readRecord(want byte, tensor string, v any) error {
	off := r.off
	kind, n, crc, err := r.frame()
	if err != nil {
		return r.fail(tensor, off, err)
	}
	if kind != want {
		return r.fail(tensor, off, fmt.Errorf("%w: frame kind %q where %q was expected", ErrCorrupt, kind, want))
	}
	return r.readBody(kind, n, crc, off, tensor, v)
}

func (r *Reader) readBody(kind byte, n int64, crc uint32, off int64, tensor string, v any) error {
	if n > int64(r.lim.MaxRecord) {
		return r.fail(tensor, off, fmt.Errorf("%w: %q record of %d bytes exceeds %d", ErrLimit, kind, n, r.lim.MaxRecord))
	}
	if int64(cap(r.body)) < n {
		r.body = make([]byte, n)
	}
	body := r.body[:n]
	if err := r.readFull(body); err != nil {
		return r.fail(tensor, off, err)
	}
	if got := crc32.Checksum(body, castagnoli); got != crc {
		return r.fail(tensor, off, fmt.Errorf("%w: %q record has CRC-32C %08x, frame says %08x", ErrChecksum, kind, got, crc))
	}
	if err := unmarshal(body, v); err != nil {
		return r.fail(tensor, off, fmt.Errorf("%w: %q record: %v", ErrCorrupt, kind, err))
	}
	return nil
}

// Next advances to the next tensor, skipping what is left of the current payload
// (its checksums are still verified). It returns io.EOF after the end record.
func (r *Reader) Next() (*Tensor, error) {
	if r.err != nil {
		return nil, r.err
	}
	if r.end != nil {
		return nil, io.EOF
	}
	if _, err := r.Header(); err != nil {
		return nil, err
	}
	if r.cur != nil && !r.payloadEOF {
		if _, err := io.Copy(io.Discard, r); err != nil {
			return nil, err
		}
	}
	off := r.off
	kind, n, crc, err := r.frame()
	if err != nil {
		return nil, r.fail("", off, err)
	}
	switch kind {
	case frameTensor:
		t := new(Tensor)
		if err := r.readBody(kind, n, crc, off, "", t); err != nil {
			return nil, err
		}
		if err := t.validate(r.lim); err != nil {
			return nil, r.fail(t.Name, off, fmt.Errorf("%w: descriptor: %v", ErrCorrupt, err))
		}
		r.cur, r.curOff = t, off
		r.tensors++
		r.chunkLeft, r.payloadCRC = 0, 0
		r.tensorLeft = t.Size
		if t.NoData {
			r.tensorLeft = 0
		}
		r.payloadEOF = false
		if r.tensorLeft == 0 {
			if err := r.readTrailer(); err != nil {
				return nil, err
			}
		}
		return t, nil
	case frameEnd:
		end := new(End)
		if err := r.readBody(kind, n, crc, off, "", end); err != nil {
			return nil, err
		}
		if end.Tensors != r.tensors || end.Bytes != r.bytes {
			return nil, r.fail("", off, fmt.Errorf("%w: end record counts %d tensors and %d payload bytes, the stream held %d and %d",
				ErrCorrupt, end.Tensors, end.Bytes, r.tensors, r.bytes))
		}
		r.end, r.cur = end, nil
		return nil, io.EOF
	default:
		return nil, r.fail("", off, fmt.Errorf("%w: frame kind %q where a tensor or the end record was expected", ErrCorrupt, kind))
	}
}

// Read reads the current tensor's payload. It returns io.EOF once the whole
// payload and its trailer have been read and verified.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.cur == nil || r.payloadEOF {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	name := r.cur.Name
	if r.chunkLeft == 0 {
		if err := r.beginChunk(); err != nil {
			return 0, err
		}
	}
	if int64(len(p)) > r.chunkLeft {
		p = p[:r.chunkLeft]
	}
	n, err := r.br.Read(p)
	r.off += int64(n)
	r.chunkCRC = crc32.Update(r.chunkCRC, castagnoli, p[:n])
	r.chunkLeft -= int64(n)
	r.tensorLeft -= int64(n)
	r.bytes += int64(n)
	if err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return n, r.fail(name, r.off, err)
	}
	if r.chunkLeft == 0 {
		if err := r.endChunk(); err != nil {
			return n, err
		}
	}
	return n, nil
}

// beginChunk reads the frame header of the next chunk of the current payload.
func (r *Reader) beginChunk() error {
	name := r.cur.Name
	off := r.off
	kind, n, crc, err := r.frame()
	if err != nil {
		return r.fail(name, off, err)
	}
	switch {
	case kind != frameChunk:
		return r.fail(name, off, fmt.Errorf("%w: frame kind %q inside a payload with %d bytes to go", ErrCorrupt, kind, r.tensorLeft))
	case n > int64(r.lim.MaxChunk):
		return r.fail(name, off, fmt.Errorf("%w: chunk of %d bytes exceeds %d", ErrLimit, n, r.lim.MaxChunk))
	case n == 0 || n > r.tensorLeft:
		return r.fail(name, off, fmt.Errorf("%w: chunk of %d bytes where %d payload bytes remain", ErrCorrupt, n, r.tensorLeft))
	}
	r.chunkLeft, r.chunkLen, r.chunkOff, r.chunkWant, r.chunkCRC = n, n, off, crc, 0
	return nil
}

// endChunk verifies a chunk that has been read whole, folds its CRC into the
// payload's, and reads the trailer after the last chunk.
func (r *Reader) endChunk() error {
	if r.chunkCRC != r.chunkWant {
		return r.fail(r.cur.Name, r.chunkOff, fmt.Errorf("%w: chunk has CRC-32C %08x, frame says %08x", ErrChecksum, r.chunkCRC, r.chunkWant))
	}
	r.payloadCRC = crcCombine(r.payloadCRC, r.chunkCRC, r.chunkLen)
	if r.tensorLeft == 0 {
		return r.readTrailer()
	}
	return nil
}

// nextChunk reads the next chunk of the current payload whole into buf, when it
// fits, and returns it with its verified CRC. When it does not fit it returns
// nil and leaves the reader at the start of the chunk, for Read to serve.
func (r *Reader) nextChunk(buf []byte) ([]byte, uint32, error) {
	if err := r.beginChunk(); err != nil {
		return nil, 0, err
	}
	if r.chunkLen > int64(cap(buf)) {
		return nil, 0, nil
	}
	p := buf[:r.chunkLen]
	if err := r.readFull(p); err != nil {
		return nil, 0, r.fail(r.cur.Name, r.off, err)
	}
	r.chunkCRC = crc32.Checksum(p, castagnoli)
	r.chunkLeft = 0
	r.tensorLeft -= r.chunkLen
	r.bytes += r.chunkLen
	if err := r.endChunk(); err != nil {
		return nil, 0, err
	}
	return p, r.chunkWant, nil
}

// A Piece is payload bytes that ReadPiece read without checksumming them,
// with the CRC-32C their chunk frames declared, so that Verify can check them
// on another goroutine while the reader goes on reading.
type Piece struct {
	Data    []byte // the payload bytes read, a prefix of the buffer given
	tensor  string
	chunks  []pieceChunk // whole chunk frames in Data, in order
	checked bool         // the chunks were verified on reading (ReadPieceChecked)
}

type pieceChunk struct {
	at   int    // where the chunk starts in Data
	n    int    // its length
	off  int64  // stream offset of its frame
	want uint32 // the CRC-32C its frame declared
}

// Verify checks the bytes of p against the CRC-32C their chunk frames
// declared; it may run on any goroutine. The error, an *Error wrapping
// ErrChecksum, names the tensor and the chunk frame's offset, as Read's does.
func (p *Piece) Verify() error {
	if p.checked {
		return nil
	}
	for _, c := range p.chunks {
		if got := crc32.Checksum(p.Data[c.at:c.at+c.n], castagnoli); got != c.want {
			return &Error{Tensor: p.tensor, Offset: c.off, Err: fmt.Errorf("%w: chunk has CRC-32C %08x, frame says %08x", ErrChecksum, got, c.want)}
		}
	}
	return nil
}

// ReadPiece reads payload bytes of the current tensor into buf, whole chunk
// frames while they fit, and leaves their checksums to the returned Piece's
// Verify, so that a reading goroutine only moves bytes. The payload's trailer
// is checked here as by Read, against the CRCs the chunk frames declared;
// only Verify tells whether the bytes match those. A chunk frame larger than
// buf is read in parts of len(buf) and checksummed here, as Read does (Verify
// then has nothing left to check for it). ReadPiece returns io.EOF once the
// payload and its trailer have been read. It may be mixed with Read.
func (r *Reader) ReadPiece(buf []byte) (Piece, error) { return r.readPiece(buf, false) }

// ReadPieceChecked is ReadPiece that checksums each chunk as its bytes
// arrive, a read at a time, while they are still in the cache of the core
// that read them, and fails as Read does on a mismatch: the returned Piece
// is verified (its Verify has nothing left to check). Checksumming data just
// read costs a fraction of checksumming it later, once it left the cache, so
// where cores are few this is cheaper than ReadPiece and Verify elsewhere;
// where they are many, ReadPiece keeps the reading goroutine to moving bytes.
func (r *Reader) ReadPieceChecked(buf []byte) (Piece, error) { return r.readPiece(buf, true) }

// checkedRead bounds the bytes checksummed after one read, so that they are
// still in a core's second-level cache (1 MiB on the development VM's EPYC,
// 2 MiB on the Xeons), the pipe's size: a read from a pipe returns at most that.
const checkedRead = 1 << 20

// readFullCRC is readFull that also returns the CRC-32C of what it read,
// computed after each read of at most checkedRead bytes.
func (r *Reader) readFullCRC(b []byte) (uint32, error) {
	var crc uint32
	for k := 0; k < len(b); {
		n, err := r.br.Read(b[k:min(len(b), k+checkedRead)])
		r.off += int64(n)
		crc = crc32.Update(crc, castagnoli, b[k:k+n])
		k += n
		if err != nil && k < len(b) {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return crc, err
		}
	}
	return crc, nil
}

func (r *Reader) readPiece(buf []byte, check bool) (Piece, error) {
	if r.err != nil {
		return Piece{}, r.err
	}
	if r.cur == nil || r.payloadEOF {
		return Piece{}, io.EOF
	}
	p := Piece{tensor: r.cur.Name, checked: check}
	if len(buf) == 0 {
		return p, nil
	}
	if r.chunkLeft != 0 { // inside a chunk that Read began
		n, err := io.ReadFull(r, buf[:min(int64(len(buf)), r.chunkLeft)])
		p.Data = buf[:n]
		return p, err
	}
	n := 0
	for !r.payloadEOF && n < len(buf) {
		if n > 0 {
			hdr, err := r.br.Peek(frameHeaderLen)
			if err != nil || hdr[0] != frameChunk || int64(binary.LittleEndian.Uint32(hdr[1:5])) > int64(len(buf)-n) {
				break // the next chunk does not fit, or is bad: it starts the next piece
			}
		}
		if err := r.beginChunk(); err != nil {
			p.Data = buf[:n]
			return p, err
		}
		if r.chunkLen > int64(len(buf)) { // n == 0 here: read the part that fits, checksummed
			k, err := io.ReadFull(r, buf)
			p.Data = buf[:k]
			return p, err
		}
		b := buf[n : n+int(r.chunkLen)]
		if check {
			crc, err := r.readFullCRC(b)
			if err != nil {
				p.Data = buf[:n]
				return p, r.fail(r.cur.Name, r.off, err)
			}
			if crc != r.chunkWant {
				p.Data = buf[:n]
				return p, r.fail(r.cur.Name, r.chunkOff, fmt.Errorf("%w: chunk has CRC-32C %08x, frame says %08x", ErrChecksum, crc, r.chunkWant))
			}
		} else if err := r.readFull(b); err != nil {
			p.Data = buf[:n]
			return p, r.fail(r.cur.Name, r.off, err)
		}
		p.chunks = append(p.chunks, pieceChunk{at: n, n: len(b), off: r.chunkOff, want: r.chunkWant})
		n += len(b)
		r.chunkLeft = 0
		r.tensorLeft -= r.chunkLen
		r.bytes += r.chunkLen
		r.payloadCRC = crcCombine(r.payloadCRC, r.chunkWant, r.chunkLen)
		if r.tensorLeft == 0 {
			if err := r.readTrailer(); err != nil {
				p.Data = buf[:n]
				return p, err
			}
		}
	}
	p.Data = buf[:n]
	return p, nil
}

// CopyPiece writes a piece that passed Verify to w's current tensor. While
// the payload comes in whole chunk frames that fit the writer's chunk size,
// they go out as they came, with the CRC their frames declared (checked by
// Verify), so each byte is checksummed once. Once a piece holds part of a
// chunk frame, or a frame larger than the writer's chunk size, the rest of
// the payload goes through Write, which cuts chunks of its own size: rechunk
// says whether that has happened yet in this payload (false for its first
// piece) and CopyPiece returns what it is after p. With buffers for
// ReadPiece of at least the writer's chunk size, the frames written are
// those CopyTensor writes.
func CopyPiece(w *Writer, p *Piece, rechunk bool) (bool, error) {
	if w.err != nil {
		return rechunk, w.err
	}
	if w.cur == nil {
		return rechunk, w.fail("", fmt.Errorf("%w: payload bytes without a tensor", ErrState))
	}
	if int64(len(p.Data)) > w.curLeft {
		return rechunk, w.fail(w.cur.Name, fmt.Errorf("%w: %d more payload bytes than the %d declared", ErrSize, int64(len(p.Data))-w.curLeft, w.cur.Size))
	}
	at := 0
	for _, c := range p.chunks {
		if rechunk || c.at != at || len(w.buf) != 0 || c.n > w.chunkSize {
			rechunk = true
			break
		}
		if err := w.emitCRC(p.Data[c.at:c.at+c.n], c.want); err != nil {
			return rechunk, err
		}
		at = c.at + c.n
	}
	if at < len(p.Data) {
		rechunk = true
		if _, err := w.Write(p.Data[at:]); err != nil {
			return rechunk, err
		}
	}
	return rechunk, nil
}

func (r *Reader) readTrailer() error {
	t := r.cur
	off := r.off
	var tr trailer
	if err := r.readRecord(frameTrailer, t.Name, &tr); err != nil {
		return err
	}
	size := t.Size
	if t.NoData {
		size = 0
	}
	if tr.Size != size {
		return r.fail(t.Name, off, fmt.Errorf("%w: trailer says %d payload bytes, the payload had %d", ErrCorrupt, tr.Size, size))
	}
	if tr.Checksum != r.payloadCRC {
		return r.fail(t.Name, off, fmt.Errorf("%w: payload has CRC-32C %08x, trailer says %08x", ErrChecksum, r.payloadCRC, tr.Checksum))
	}
	if (tr.Quant == nil) != (t.Quant == nil) {
		return r.fail(t.Name, off, fmt.Errorf("%w: trailer and descriptor disagree on the quant state", ErrCorrupt))
	}
	if tr.Quant != nil {
		q := *tr.Quant
		if q.Type != t.Quant.Type || q.BlockSize != t.Quant.BlockSize || q.DoubleQuant != t.Quant.DoubleQuant || q.NestedBlockSize != t.Quant.NestedBlockSize {
			return r.fail(t.Name, off, fmt.Errorf("%w: trailer's quant state %+v differs from the descriptor's %+v", ErrCorrupt, q, *t.Quant))
		}
		t.Quant.NestedOffset = q.NestedOffset
	}
	t.Checksum = tr.Checksum
	r.payloadEOF = true
	return nil
}

// End returns the end record once Next has returned io.EOF, else nil.
func (r *Reader) End() *End { return r.end }

// Offset returns the number of stream bytes consumed so far.
func (r *Reader) Offset() int64 { return r.off }
