package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"unicode/utf8"
)

// ErrIncomplete: Close on a writer whose declared tensors were not all added,
// or any use of a writer after a failure, Close or Abort.
var ErrIncomplete = errors.New("safetensors: writer incomplete")

// TensorSpec declares a tensor to write.
type TensorSpec struct {
	Name  string
	DType DType
	Shape []int64
}

// Writer writes one safetensors file byte-identical to what Python's
// safetensors (serialize / save_file, Rust core) writes for the same tensors
// and metadata. Tensors may be added in any order. The file appears at its
// path only when Close succeeds (written to a temporary name in the same
// directory, fsynced, renamed); after any failure, or Abort, nothing is left.
//
// A Writer made by NewWriterFor knows the layout in advance: it writes the
// header first and each payload straight to its place. One made by NewWriter
// spools payloads to a temporary file beside the target (written from a
// goroutine of its own, through a few large buffers) and assembles the file at
// Close (copy_file_range on Linux, with the finished part of the file sent to
// the device while the rest is copied). While payloads are spooled, the final
// file is allocated (fallocate) as far as the spool is written, so that the
// copy at Close finds its blocks, on tmpfs its pages, there already; it takes
// the spool's size again in disk space before Close (given back if the spool
// runs out of space). Either way memory stays bounded: a
// spooling Writer holds spoolBufs × spoolBufSize bytes. Close or Abort must be
// called, to remove the temporary files and stop the spooling goroutine.
type Writer struct {
	path     string
	metadata map[string]string
	planned  bool
	out      *os.File // the final file under a temporary name
	dataOff  int64    // where out's data section starts (planned mode)
	spool    *os.File // payloads in arrival order (spool mode)
	spw      *spoolWriter
	spoolEnd int64
	// entries: planned mode, the final layout; spool mode, Begin/End are
	// positions in the spool, or in out where direct says so.
	entries []TensorInfo
	direct  []bool       // spool mode: the entry went straight to out (Expect)
	exp     *expectation // spool mode: the layout Expect announced, or nil
	wb      *writeback   // with exp: writeback of out as it is written
	byName  map[string]int
	added   []bool
	err     error // sticky: first failure, or ErrIncomplete after Close/Abort
}

var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// NewWriter starts a file at path for tensors not known in advance.
func NewWriter(path string, metadata map[string]string) (*Writer, error) {
	if err := checkMetadata(metadata); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	spool, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".spool-*")
	if err != nil {
		return nil, err
	}
	out, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		spool.Close()
		os.Remove(spool.Name())
		return nil, err
	}
	return &Writer{path: path, metadata: metadata, out: out, spool: spool, spw: newSpoolWriter(spool), byName: map[string]int{}}, nil
}

// NewWriterFor starts a file at path holding exactly the tensors in specs;
// Add must then be called once for each of them.
func NewWriterFor(path string, metadata map[string]string, specs []TensorSpec) (*Writer, error) {
	w := &Writer{path: path, metadata: metadata, planned: true, byName: map[string]int{}}
	if err := checkMetadata(metadata); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, s := range specs {
		size, err := w.check(s.Name, s.DType, s.Shape)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		w.byName[s.Name] = -1
		w.entries = append(w.entries, TensorInfo{Name: s.Name, DType: s.DType, Shape: cloneShape(s.Shape), End: size})
	}
	header, err := layout(w.entries, metadata)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for i, e := range w.entries {
		w.byName[e.Name] = i
	}
	w.added = make([]bool, len(w.entries))
	out, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, err
	}
	w.out = out
	w.dataOff = 8 + int64(len(header))
	if err := writePreamble(out, header); err != nil {
		w.Abort()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return w, nil
}

func cloneShape(s []int64) []int64 { return append([]int64{}, s...) }

func checkMetadata(m map[string]string) error {
	for k, v := range m {
		if !utf8.ValidString(k) || !utf8.ValidString(v) {
			return fmt.Errorf("%w: metadata %q is not valid UTF-8", ErrHeader, k)
		}
	}
	return nil
}

// check validates a tensor declaration and returns its payload size.
func (w *Writer) check(name string, dtype DType, shape []int64) (int64, error) {
	if !utf8.ValidString(name) {
		return 0, fmt.Errorf("tensor %q: %w: name is not valid UTF-8", name, ErrHeader)
	}
	if name == metadataKey {
		return 0, fmt.Errorf("tensor %q: %w: the name is reserved", name, ErrHeader)
	}
	if _, dup := w.byName[name]; dup && !w.planned {
		return 0, fmt.Errorf("tensor %q: %w: added twice", name, ErrDuplicate)
	}
	if w.planned && w.added == nil {
		if _, dup := w.byName[name]; dup {
			return 0, fmt.Errorf("tensor %q: %w: declared twice", name, ErrDuplicate)
		}
	}
	size, err := ByteLen(dtype, shape)
	if err != nil {
		return 0, fmt.Errorf("tensor %q: %w", name, err)
	}
	return size, nil
}

// layout sorts entries into write order, sets their offsets (entries' End must
// hold their sizes on entry) and returns the padded header.
func layout(entries []TensorInfo, metadata map[string]string) ([]byte, error) {
	sortForWrite(entries, func(t *TensorInfo) (DType, string) { return t.DType, t.Name })
	var off int64
	for i := range entries {
		size := entries[i].End
		entries[i].Begin, entries[i].End = off, off+size
		off += size
	}
	header := EncodeHeader(metadata, entries)
	if len(header) > MaxHeaderSize {
		return nil, fmt.Errorf("%w: header would be %d bytes, over the %d-byte limit", ErrHeader, len(header), MaxHeaderSize)
	}
	return header, nil
}

func writePreamble(out *os.File, header []byte) error {
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	if _, err := out.Write(n[:]); err != nil {
		return err
	}
	_, err := out.Write(header)
	return err
}

// Add writes a tensor whose payload, exactly ByteLen(dtype, shape) bytes, is
// read from r (and nothing more is read). With NewWriterFor the tensor must
// be one of the declared specs, with the same dtype and shape.
func (w *Writer) Add(name string, dtype DType, shape []int64, r io.Reader) error {
	if w.err != nil {
		return w.err
	}
	err := w.add(name, dtype, shape, r)
	if err != nil {
		w.err = fmt.Errorf("%s: %w", w.path, err)
		return w.err
	}
	return nil
}

func (w *Writer) add(name string, dtype DType, shape []int64, r io.Reader) error {
	size, err := w.check(name, dtype, shape)
	if err != nil {
		return err
	}
	if !w.planned {
		var at int64
		direct := false
		if w.exp != nil {
			at, direct = w.exp.arrive(name, dtype, shape, size)
		} else if len(w.entries) == 0 {
			w.spw.preallocate(w.out)
		}
		if direct {
			w.spw.to(w.out, at)
		} else {
			at = w.spoolEnd
			w.spw.to(w.spool, at)
			w.spoolEnd += size
		}
		w.byName[name] = len(w.entries)
		w.entries = append(w.entries, TensorInfo{Name: name, DType: dtype, Shape: cloneShape(shape), Begin: at, End: at + size})
		w.direct = append(w.direct, direct)
		n, err := w.spw.ReadFrom(io.LimitReader(r, size))
		return payloadErr(name, n, size, err)
	}
	i, ok := w.byName[name]
	if !ok {
		return fmt.Errorf("tensor %q: %w: not declared to NewWriterFor", name, ErrNotFound)
	}
	e := w.entries[i]
	if w.added[i] {
		return fmt.Errorf("tensor %q: %w: added twice", name, ErrDuplicate)
	}
	if e.DType != dtype || !equalShape(e.Shape, shape) {
		return fmt.Errorf("tensor %q: %w: added as %s%v, declared as %s%v", name, ErrShape, dtype, shape, e.DType, e.Shape)
	}
	w.added[i] = true
	dst := io.NewOffsetWriter(w.out, w.dataOff+e.Begin)
	buf := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(buf)
	n, err := io.CopyBuffer(onlyWriter{dst}, io.LimitReader(r, size), *buf)
	return payloadErr(name, n, size, err)
}

func payloadErr(name string, n, size int64, err error) error {
	if err == nil && n < size {
		err = io.ErrUnexpectedEOF
	}
	if err != nil {
		return fmt.Errorf("tensor %q: payload: %w (%d of %d bytes)", name, err, n, size)
	}
	return nil
}

// onlyWriter hides ReadFrom so that CopyBuffer uses the large buffer given.
type onlyWriter struct{ io.Writer }

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Close finishes the file: assembles it (spool mode), fsyncs it and renames it
// into place. On failure nothing is left at path, and the temporary files
// are removed.
func (w *Writer) Close() error {
	if w.err != nil {
		err := w.err
		w.Abort()
		return err
	}
	if err := w.finish(); err != nil {
		w.err = fmt.Errorf("%s: %w", w.path, err)
		err := w.err
		w.Abort()
		return err
	}
	w.err = fmt.Errorf("%s: %w: already closed", w.path, ErrIncomplete)
	return nil
}

func (w *Writer) finish() error {
	if w.planned {
		for i, ok := range w.added {
			if !ok {
				return fmt.Errorf("tensor %q: %w: declared but never added", w.entries[i].Name, ErrIncomplete)
			}
		}
	} else {
		punched, err := w.assemble()
		if err != nil {
			return err
		}
		// The spool is no longer needed: free the rest of its pages while
		// fsync waits for the device.
		spool, removed := w.spool, make(chan struct{})
		w.spool = nil
		go func() {
			<-punched
			spool.Close()
			os.Remove(spool.Name())
			close(removed)
		}()
		defer func() { <-removed }()
	}
	if err := w.out.Sync(); err != nil {
		return err
	}
	if err := w.out.Close(); err != nil {
		return err
	}
	if err := os.Rename(w.out.Name(), w.path); err != nil {
		return err
	}
	w.out = nil
	syncDir(filepath.Dir(w.path))
	return nil
}

// writebackEvery is how many bytes written make the Writer hand the kernel
// the finished part of the file to write out (see writeback).
const writebackEvery = 64 << 20

// assemble completes the final file: the header, and every entry not at its
// place yet copied there, from the spool or, where an entry written straight
// to out is not where the layout of what arrived puts it, into a new file
// from wherever each entry's bytes are. The spool's pages are freed behind
// the copy; punched is closed when that is done (it may go on after assemble
// has returned without error).
func (w *Writer) assemble() (punched <-chan struct{}, err error) {
	if err := w.spw.finish(); err != nil {
		return nil, err
	}
	if w.wb != nil {
		w.wb.stop()
	}
	final := append([]TensorInfo(nil), w.entries...)
	type source struct {
		f  *os.File
		at int64
	}
	from := make(map[string]source, len(final))
	for i := range final {
		f := w.spool
		if w.direct[i] {
			f = w.out
		}
		from[final[i].Name] = source{f, final[i].Begin}
		final[i].End -= final[i].Begin // size, for layout
	}
	header, err := layout(final, w.metadata)
	if err != nil {
		return nil, err
	}
	dataOff := 8 + int64(len(header))
	inPlace := true
	for _, t := range final {
		if src := from[t.Name]; src.f == w.out && src.at != dataOff+t.Begin {
			inPlace = false
			break
		}
	}
	out := w.out
	if !inPlace {
		// Some entry is not at its place in out: out becomes a source, and
		// the file is made anew.
		if out, err = os.CreateTemp(filepath.Dir(w.path), "."+filepath.Base(w.path)+".tmp-*"); err != nil {
			return nil, err
		}
		old := w.out
		w.out = out
		defer func() {
			old.Close()
			os.Remove(old.Name())
		}()
	}
	// A spooling writer's out is allocated already as far as the spool was
	// written (never beyond: it is smaller than the file).
	if _, err := out.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	if err := writePreamble(out, header); err != nil {
		return nil, err
	}
	// Free the spool's pages behind the copy, on another core: removing a
	// whole spool after it would add that work to Close.
	copied, freed := make(chan [2]int64, 64), make(chan struct{})
	spool := w.spool // finish clears w.spool while this goroutine may go on
	go func() {
		for r := range copied {
			punchHole(spool, r[0], r[1])
		}
		close(freed)
	}()
	defer func() {
		close(copied)
		if err != nil {
			<-freed // before Abort closes the spool
		}
	}()
	wb := newWriteback(out)
	defer wb.stop()
	for _, t := range final {
		src := from[t.Name]
		if src.f == out {
			continue // at its place
		}
		if _, err := out.Seek(dataOff+t.Begin, io.SeekStart); err != nil {
			return nil, err
		}
		if _, err := src.f.Seek(src.at, io.SeekStart); err != nil {
			return nil, err
		}
		// *os.File.ReadFrom of an io.LimitedReader over an *os.File uses
		// copy_file_range on Linux: the kernel copies, page cache to page cache.
		n, err := io.Copy(out, &io.LimitedReader{R: src.f, N: t.Size()})
		if err == nil && n < t.Size() {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return nil, fmt.Errorf("tensor %q: copying from the spool: %w", t.Name, err)
		}
		if src.f == spool && n >= minPunch {
			copied <- [2]int64{src.at, n}
		}
		wb.wrote(dataOff+t.Begin, n)
	}
	end := dataOff
	if len(final) > 0 {
		end += final[len(final)-1].End
	}
	if err := out.Truncate(end); err != nil {
		return nil, err
	}
	return freed, nil
}

func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		d.Sync()
		d.Close()
	}
}

// Abort discards everything written so far: no file is left at path and the
// temporary files are removed. It is safe to call after Close (it then does
// nothing) and more than once.
func (w *Writer) Abort() error {
	if w.wb != nil {
		w.spw.finish() // no more writes to report
		w.wb.stop()
	}
	if w.out != nil {
		w.out.Close()
		os.Remove(w.out.Name())
		w.out = nil
	}
	if w.spool != nil {
		w.spw.finish()
		w.spool.Close()
		os.Remove(w.spool.Name())
		w.spool = nil
	}
	if w.err == nil {
		w.err = fmt.Errorf("%s: %w: aborted", w.path, ErrIncomplete)
	}
	return nil
}

// Tensor is a tensor held in memory, for small files and tests.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// Serialize returns the bytes of a safetensors file holding tensors, exactly
// as the Python safetensors serialize() returns them. metadata nil writes no
// __metadata__; an empty non-nil map writes an empty one.
func Serialize(tensors []Tensor, metadata map[string]string) ([]byte, error) {
	if err := checkMetadata(metadata); err != nil {
		return nil, err
	}
	w := &Writer{byName: map[string]int{}}
	entries := make([]TensorInfo, len(tensors))
	data := make(map[string][]byte, len(tensors))
	for i, t := range tensors {
		size, err := w.check(t.Name, t.DType, t.Shape)
		if err != nil {
			return nil, err
		}
		if size != int64(len(t.Data)) {
			return nil, fmt.Errorf("tensor %q: %w: shape %v of %s is %d bytes, data has %d", t.Name, ErrShape, t.Shape, t.DType, size, len(t.Data))
		}
		w.byName[t.Name] = i
		entries[i] = TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape, End: size}
		data[t.Name] = t.Data
	}
	header, err := layout(entries, metadata)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(header)))
	b.Write(n[:])
	b.Write(header)
	for _, e := range entries {
		b.Write(data[e.Name])
	}
	return b.Bytes(), nil
}

// WriteFile writes tensors to path as Serialize lays them out, atomically.
func WriteFile(path string, tensors []Tensor, metadata map[string]string) error {
	specs := make([]TensorSpec, len(tensors))
	for i, t := range tensors {
		specs[i] = TensorSpec{t.Name, t.DType, t.Shape}
	}
	w, err := NewWriterFor(path, metadata, specs)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		if err := w.Add(t.Name, t.DType, t.Shape, bytes.NewReader(t.Data)); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Close()
}
