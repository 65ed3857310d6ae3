// Package progress is what a library stage tells of its work, for a caller
// that draws a progress line (internal/cli does, on a terminal) or counts it.
// Libraries take a Meter; a nil Meter is allowed and means nobody listens.
package progress

import "io"

// Meter is told of a stage's work as it goes, from any goroutine.
type Meter interface {
	// Expect gives the tensors and bytes expected, once known; 0 leaves a
	// total as it was.
	Expect(tensors int, bytes int64)
	// Tensor says that the tensor called name begins.
	Tensor(name string)
	// Add counts n more bytes done.
	Add(n int64)
}

// Or is m, or a Meter that does nothing when m is nil.
func Or(m Meter) Meter {
	if m == nil {
		return nop{}
	}
	return m
}

type nop struct{}

func (nop) Expect(int, int64) {}
func (nop) Tensor(string)     {}
func (nop) Add(int64)         {}

// Reader returns r counting what is read from it into m; r itself when m is nil.
func Reader(m Meter, r io.Reader) io.Reader {
	if m == nil {
		return r
	}
	return &reader{r: r, m: m}
}

// ReaderAt returns r counting what is read from it into m, safe for concurrent
// ReadAt calls as r is; r itself when m is nil.
func ReaderAt(m Meter, r io.ReaderAt) io.ReaderAt {
	if m == nil {
		return r
	}
	return &readerAt{r: r, m: m}
}

type reader struct {
	r io.Reader
	m Meter
}

func (r *reader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.m.Add(int64(n))
	return n, err
}

type readerAt struct {
	r io.ReaderAt
	m Meter
}

func (r *readerAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(b, off)
	r.m.Add(int64(n))
	return n, err
}
