package verify

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

// DefaultSpoolMemory is the largest 4-bit stream payload held in memory; a
// larger one goes to a temporary file. A stream payload carries all packed codes
// before the first absmax, so it cannot be dequantized as it arrives.
const DefaultSpoolMemory = 64 << 20

// spool holds one payload at a time with random access.
type spool struct {
	limit int64
	dir   string
	mem   []byte
	f     *os.File
}

// fill reads size bytes from r and returns them as a ReaderAt, valid until the
// next fill.
func (s *spool) fill(r io.Reader, size int64) (io.ReaderAt, error) {
	if size <= s.limit {
		s.mem = grow(s.mem, int(size))
		if _, err := io.ReadFull(r, s.mem); err != nil {
			return nil, err
		}
		return bytes.NewReader(s.mem), nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "nf4pipe-verify-*")
		if err != nil {
			return nil, fmt.Errorf("verify: spool file: %w", err)
		}
		os.Remove(f.Name()) // unlinked: the file goes away with the process
		s.f = f
	}
	if err := s.f.Truncate(0); err != nil {
		return nil, err
	}
	if _, err := s.f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	n, err := io.Copy(s.f, io.LimitReader(r, size))
	if err != nil {
		return nil, err
	}
	if n != size {
		return nil, io.ErrUnexpectedEOF
	}
	return s.f, nil
}

func (s *spool) close() {
	if s.f != nil {
		s.f.Close()
		s.f = nil
	}
}
