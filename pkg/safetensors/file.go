package safetensors

import (
	"encoding/binary"
	"fmt"
	"io"
	"os"
)

// File is an open safetensors file. Its header is read and validated once;
// payloads are read on demand with positioned reads, so memory stays bounded
// whatever the file size. A File is safe for concurrent readers.
type File struct {
	Path string
	Header
	f      *os.File
	size   int64
	byName map[string]int
}

// OpenFile opens and validates one safetensors file. Errors name the file and,
// where there is one, the tensor, and wrap a sentinel of this package.
func OpenFile(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s: %w: %v", path, ErrNotFound, err)
		}
		return nil, err
	}
	sf, err := newFile(path, f)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return sf, nil
}

func newFile(path string, f *os.File) (*File, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%w: not a regular file", ErrHeader)
	}
	h, err := ReadHeader(f, st.Size())
	if err != nil {
		return nil, err
	}
	sf := &File{Path: path, Header: *h, f: f, size: st.Size(), byName: make(map[string]int, len(h.Tensors))}
	for i := range sf.Tensors {
		sf.Tensors[i].File = path
		sf.byName[sf.Tensors[i].Name] = i
	}
	return sf, nil
}

// ReadHeader reads and validates the header of a safetensors image of the
// given size, read through r.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	if size < 8 {
		return nil, fmt.Errorf("%w: %d bytes, shorter than the 8-byte header length", ErrTruncated, size)
	}
	var lenBuf [8]byte
	if err := readFullAt(r, lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header length %d is over the %d-byte limit", ErrHeader, n, MaxHeaderSize)
	}
	if int64(n) > size-8 {
		return nil, fmt.Errorf("%w: header length %d runs past the end of the file (%d bytes)", ErrTruncated, n, size)
	}
	text := make([]byte, n)
	if err := readFullAt(r, text, 8); err != nil {
		return nil, fmt.Errorf("reading header: %w", err)
	}
	return ParseHeader(text, size-8-int64(n))
}

// readFullAt fills b from r at off; io.ReaderAt may report io.EOF along with
// a full read.
func readFullAt(r io.ReaderAt, b []byte, off int64) error {
	n, err := r.ReadAt(b, off)
	if n == len(b) {
		return nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("%w: %v", ErrTruncated, err)
}

// Tensor returns the tensor of that name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// Size returns the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// Section returns a reader over t's payload. Reads are positioned (pread), so
// any number of sections may be read at once.
func (f *File) Section(t TensorInfo) *io.SectionReader {
	return io.NewSectionReader(f.f, t.Offset, t.Size())
}

// ReadTensor reads the whole payload of the named tensor into memory; use
// Section to stream large ones.
func (f *File) ReadTensor(name string) ([]byte, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.Path, name, ErrNotFound)
	}
	buf := make([]byte, t.Size())
	if _, err := io.ReadFull(f.Section(t), buf); err != nil {
		return nil, fmt.Errorf("%s: tensor %q: %w", f.Path, name, err)
	}
	return buf, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }
