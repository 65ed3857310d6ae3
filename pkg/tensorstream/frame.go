package tensorstream

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"

	"github.com/vmihailenco/msgpack/v5"
)

// Errors a reader or writer reports, wrapped in *Error. Test with errors.Is.
var (
	// ErrCorrupt: bytes that are not a well-formed stream (bad magic, unknown
	// frame, malformed record, records out of order, counts that disagree).
	ErrCorrupt = errors.New("tensorstream: corrupt stream")
	// ErrChecksum: a frame or payload whose CRC-32C does not match.
	ErrChecksum = errors.New("tensorstream: checksum mismatch")
	// ErrVersion: a stream of a newer major format version than this reader's.
	ErrVersion = errors.New("tensorstream: unsupported format version")
	// ErrLimit: a declared length over the reader's limits.
	ErrLimit = errors.New("tensorstream: length over limit")
	// ErrSize: a writer given more or fewer payload bytes than the descriptor declared.
	ErrSize = errors.New("tensorstream: payload size mismatch")
	// ErrState: a writer call out of order (a tensor before the header, a write after Close).
	ErrState = errors.New("tensorstream: call out of order")
)

// Error locates a stream error: the tensor being read or written, if any, and the
// byte offset in the stream where the offending frame starts.
type Error struct {
	Tensor string
	Offset int64
	Err    error
}

func (e *Error) Error() string {
	if e.Tensor != "" {
		return fmt.Sprintf("tensor %q at byte %d: %v", e.Tensor, e.Offset, e.Err)
	}
	return fmt.Sprintf("at byte %d: %v", e.Offset, e.Err)
}

func (e *Error) Unwrap() error { return e.Err }

// The stream starts with magic, then the major and minor version and two zero bytes.
var magic = [4]byte{'N', 'F', '4', 'S'}

const magicLen = 8

// Frame kinds. Every frame is kind (1 byte), body length (uint32 LE), CRC-32C of
// the body (uint32 LE), body.
const (
	frameHeader  byte = 'H'
	frameTensor  byte = 'T'
	frameChunk   byte = 'C'
	frameTrailer byte = 'Z'
	frameEnd     byte = 'E'
)

const frameHeaderLen = 9

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func putFrameHeader(b []byte, kind byte, n int, crc uint32) {
	b[0] = kind
	binary.LittleEndian.PutUint32(b[1:5], uint32(n))
	binary.LittleEndian.PutUint32(b[5:9], crc)
}

// marshal encodes v compactly with sorted map keys, so equal values give equal bytes.
func marshal(v any) ([]byte, error) {
	var buf bytes.Buffer
	enc := msgpack.NewEncoder(&buf)
	enc.UseCompactInts(true)
	enc.UseCompactFloats(false)
	enc.SetSortMapKeys(true)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// unmarshal decodes one record body. It first walks the body to check that every
// length it declares fits in the bytes that remain, since the msgpack decoder
// allocates a declared array length up front.
func unmarshal(b []byte, v any) error {
	if err := checkLengths(b); err != nil {
		return err
	}
	br := bytes.NewReader(b)
	dec := msgpack.NewDecoder(br)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if br.Len() != 0 {
		return errors.New("trailing bytes after record")
	}
	return nil
}

// maxDepth bounds the nesting of msgpack values in a record.
const maxDepth = 32

// checkLengths verifies that b holds exactly one msgpack value whose declared
// string, binary, array and map lengths all fit in the bytes of b.
func checkLengths(b []byte) error {
	rest, err := skipValue(b, 0)
	if err != nil {
		return err
	}
	if len(rest) != 0 {
		return errors.New("trailing bytes after record")
	}
	return nil
}

var errShort = errors.New("msgpack value runs past the end of its record")

func skipValue(b []byte, depth int) ([]byte, error) {
	if depth > maxDepth {
		return nil, errors.New("msgpack values nested too deep")
	}
	if len(b) == 0 {
		return nil, errShort
	}
	c, b := b[0], b[1:]
	var n, items uint64 // n bytes of data follow, or items values (maps: 2 per entry)
	switch {
	case c <= 0x7f || c >= 0xe0 || c == 0xc0 || c == 0xc2 || c == 0xc3:
		return b, nil
	case c >= 0x80 && c <= 0x8f:
		items = uint64(c&0x0f) * 2
	case c >= 0x90 && c <= 0x9f:
		items = uint64(c & 0x0f)
	case c >= 0xa0 && c <= 0xbf:
		n = uint64(c & 0x1f)
	case c == 0xcc || c == 0xd0:
		n = 1
	case c == 0xcd || c == 0xd1:
		n = 2
	case c == 0xca || c == 0xce || c == 0xd2:
		n = 4
	case c == 0xcb || c == 0xcf || c == 0xd3:
		n = 8
	case c == 0xd4:
		n = 2
	case c == 0xd5:
		n = 3
	case c == 0xd6:
		n = 5
	case c == 0xd7:
		n = 9
	case c == 0xd8:
		n = 17
	case c == 0xc4 || c == 0xd9: // bin8, str8
		l, r, err := uintN(b, 1)
		if err != nil {
			return nil, err
		}
		n, b = l, r
	case c == 0xc5 || c == 0xda:
		l, r, err := uintN(b, 2)
		if err != nil {
			return nil, err
		}
		n, b = l, r
	case c == 0xc6 || c == 0xdb:
		l, r, err := uintN(b, 4)
		if err != nil {
			return nil, err
		}
		n, b = l, r
	case c == 0xc7: // ext8: length, type, data
		l, r, err := uintN(b, 1)
		if err != nil {
			return nil, err
		}
		n, b = l+1, r
	case c == 0xc8:
		l, r, err := uintN(b, 2)
		if err != nil {
			return nil, err
		}
		n, b = l+1, r
	case c == 0xc9:
		l, r, err := uintN(b, 4)
		if err != nil {
			return nil, err
		}
		n, b = l+1, r
	case c == 0xdc:
		l, r, err := uintN(b, 2)
		if err != nil {
			return nil, err
		}
		items, b = l, r
	case c == 0xdd:
		l, r, err := uintN(b, 4)
		if err != nil {
			return nil, err
		}
		items, b = l, r
	case c == 0xde:
		l, r, err := uintN(b, 2)
		if err != nil {
			return nil, err
		}
		items, b = l*2, r
	case c == 0xdf:
		l, r, err := uintN(b, 4)
		if err != nil {
			return nil, err
		}
		items, b = l*2, r
	default:
		return nil, fmt.Errorf("msgpack type byte 0x%02x is not allowed", c)
	}
	if n > uint64(len(b)) || items > uint64(len(b)) {
		return nil, errShort
	}
	b = b[n:]
	for i := uint64(0); i < items; i++ {
		var err error
		if b, err = skipValue(b, depth+1); err != nil {
			return nil, err
		}
	}
	return b, nil
}

func uintN(b []byte, size int) (uint64, []byte, error) {
	if len(b) < size {
		return 0, nil, errShort
	}
	var v uint64
	for _, x := range b[:size] {
		v = v<<8 | uint64(x)
	}
	return v, b[size:], nil
}
