package verify

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
	"github.com/nf4pipe/nf4pipe/pkg/progress"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Options say what to verify. At least one of Stream and Checkpoint is needed.
type Options struct {
	// Stream is a tensor stream to verify; nil for none. With Checkpoint as
	// well, the checkpoint must read back to exactly what the stream carries,
	// and the comparison with the reference is made on the checkpoint.
	Stream io.Reader
	// Checkpoint is a bitsandbytes 4-bit checkpoint (directory, .safetensors
	// file or index JSON); "" for none.
	Checkpoint string
	// Reference is the original model (directory, .safetensors file or index
	// JSON, or a model id ORG/NAME in the local Hugging Face cache when no
	// such path exists); "" checks integrity only.
	Reference string
	// ReferenceRevision is the revision of a Reference id ("" for main).
	ReferenceRevision string
	// Tolerance is the envelope factor over the Gaussian error
	// (DefaultTolerance when 0).
	Tolerance float64
	// SpoolDir and SpoolMemory say where a stream's 4-bit payloads wait for
	// comparison: in memory up to SpoolMemory bytes (DefaultSpoolMemory when 0),
	// else in a temporary file in SpoolDir (os.TempDir() when "").
	SpoolDir    string
	SpoolMemory int64
	// Progress, when not nil, is told of every input tensor found in the
	// reference and of the reference bytes read for comparison, per chunk,
	// of all the reference's.
	Progress progress.Meter
}

// Run verifies what opts name. The returned error is for a verification that
// could not be carried out (no input, a reference or stream that cannot be
// read); problems found in the data are in the report, and Report.Err turns
// them into an error.
func Run(opts Options) (*Report, error) {
	if opts.Stream == nil && opts.Checkpoint == "" {
		return nil, fmt.Errorf("%w: nothing to verify: give a stream or a checkpoint", ErrInput)
	}
	v := &run{
		rep:  &Report{Stream: opts.Stream != nil, Checkpoint: opts.Checkpoint, Reference: opts.Reference},
		c:    &checker{tol: opts.Tolerance},
		seen: map[string]bool{},
	}
	if opts.Reference != "" {
		path, err := locate("reference", opts.Reference, opts.ReferenceRevision)
		if err != nil {
			return nil, err
		}
		ref, err := safetensors.Open(path)
		if err != nil {
			return nil, fmt.Errorf("%w: reference: %w", ErrInput, err)
		}
		defer ref.Close()
		v.ref = ref
		if opts.Progress != nil {
			all := ref.TensorsByName()
			var n int64
			for _, t := range all {
				n += t.Size()
			}
			opts.Progress.Expect(len(all), n)
			v.prog = opts.Progress
		}
	}
	var err error
	if opts.Checkpoint != "" && opts.Stream != nil {
		// The checkpoint is the work of the stage before (place), which
		// completes it before the stream's end record: so the stream is read
		// to its end before the checkpoint is opened, and a stream that does
		// not end well means the checkpoint is not this run's.
		spooled, done, serr := spoolStream(opts.Stream, opts.SpoolDir)
		if serr != nil {
			return nil, serr
		}
		defer done()
		if serr := completeStream(spooled); serr != nil {
			if errors.Is(serr, ErrInput) {
				return nil, serr
			}
			v.rep.RoundTrip = &RoundTrip{}
			err = v.streamFailure(serr)
			if err == nil {
				v.find("", KindStream, "%s was not read: the stream did not reach its end record, so the checkpoint is not this run's output", opts.Checkpoint)
			}
		} else if _, serr := spooled.Seek(0, io.SeekStart); serr != nil {
			return nil, serr
		} else {
			opts.Stream = spooled
			err = v.locatedCheckpoint(opts)
		}
	} else if opts.Checkpoint != "" {
		err = v.locatedCheckpoint(opts)
	} else {
		sp := &spool{limit: opts.SpoolMemory, dir: opts.SpoolDir}
		if sp.limit <= 0 {
			sp.limit = DefaultSpoolMemory
		}
		defer sp.close()
		err = v.stream(opts.Stream, sp)
	}
	if err != nil {
		return nil, err
	}
	if v.ref != nil && !v.aborted {
		for _, t := range v.ref.TensorsByName() {
			if !v.seen[t.Name] {
				v.find(t.Name, KindMissing, "in the reference, not in the input")
			}
		}
	}
	v.rep.all = v.c.all
	v.rep.finish()
	return v.rep, nil
}

// locatedCheckpoint verifies the checkpoint, a path or a model id in the
// local Hugging Face cache, resolved only now: after the stream's end, when
// the stage before has completed it.
func (v *run) locatedCheckpoint(opts Options) error {
	path, err := locate("checkpoint", opts.Checkpoint, "")
	if err != nil {
		return err
	}
	opts.Checkpoint = path
	v.rep.Checkpoint = path
	return v.checkpoint(opts)
}

// locate resolves a path or a model id in the local Hugging Face cache.
func locate(what, model, revision string) (string, error) {
	path, err := hfcache.Locate(model, revision)
	if errors.Is(err, hfcache.ErrNotCached) {
		return "", fmt.Errorf("%w: %s: %w", ErrInput, what, err)
	}
	if err != nil {
		return "", fmt.Errorf("%s: %w", what, err) // a bad revision: a usage error
	}
	return path, nil
}

type run struct {
	rep     *Report
	c       *checker
	ref     *safetensors.Checkpoint
	seen    map[string]bool
	aborted bool // the input could not be read to its end
	prog    progress.Meter
}

func (v *run) find(tensor, kind, format string, args ...any) {
	v.rep.Findings = append(v.rep.Findings, Finding{Tensor: tensor, Kind: kind, Detail: fmt.Sprintf(format, args...)})
}

// reference accounts for an input tensor and returns its reference, nil when
// there is no reference or the reference lacks it (an extra tensor).
func (v *run) reference(name string) *refTensor {
	if v.seen[name] {
		v.find(name, KindDuplicate, "appears twice in the input")
	}
	v.seen[name] = true
	if v.ref == nil {
		return nil
	}
	info, ok := v.ref.Tensor(name)
	if !ok {
		v.find(name, KindExtra, "in the input, not in the reference")
		return nil
	}
	progress.Or(v.prog).Tensor(name)
	return &refTensor{name: name, dtype: info.DType, shape: info.Shape, size: info.Size(), r: progress.ReaderAt(v.prog, v.ref.Section(info))}
}

// streamFailure turns a stream read error into a finding (a checksum) or a
// verification error (anything else: the input is not a usable stream).
func (v *run) streamFailure(err error) error {
	v.aborted = true
	if errors.Is(err, tensorstream.ErrChecksum) {
		var se *tensorstream.Error
		name := ""
		if errors.As(err, &se) {
			name = se.Tensor
		}
		v.find(name, KindChecksum, "%v", err)
		return nil
	}
	return fmt.Errorf("%w: stream: %w", ErrInput, err)
}

func (v *run) stream(in io.Reader, sp *spool) error {
	r := tensorstream.NewReader(in)
	if _, err := r.Header(); err != nil {
		return v.streamFailure(err)
	}
	for {
		t, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return v.streamFailure(err)
		}
		ref := v.reference(t.Name)
		if t.NoData {
			res := newResult(t)
			res.Status = StatusUnchecked
			v.rep.add(res, nil)
			continue
		}
		var (
			res      TensorResult
			findings []Finding
		)
		if t.Encoding == tensorstream.BNB4 {
			// the reader verifies the trailer (checksum, nested offset) as it
			// serves the payload's last byte
			data, err := sp.fill(r, t.Size)
			if err != nil {
				return v.streamFailure(err)
			}
			res, findings, err = v.c.quant(sectionsOf(t, data), ref)
			if err != nil {
				return err
			}
		} else {
			res, findings, err = v.c.raw(t, r, ref)
			if err != nil {
				return v.streamFailure(err)
			}
		}
		if _, err := io.Copy(io.Discard, r); err != nil {
			return v.streamFailure(err)
		}
		v.rep.add(res, findings)
	}
}

// sectionsOf splits a payload in the stream's layout into its sections.
func sectionsOf(t *tensorstream.Tensor, data io.ReaderAt) *quantTensor {
	p, a, n := t.Quant.Sections(t.NumElements())
	return &quantTensor{t: t,
		packed: io.NewSectionReader(data, 0, p),
		absmax: io.NewSectionReader(data, p, a),
		nested: io.NewSectionReader(data, p+a, n),
	}
}

// checkpointInput is an open checkpoint: pkg/checkpoint validates the layout
// and describes the tensors, and safetensors serves positioned reads of the
// entries a tensor is made of, so chunks of codes and absmax can be read side by
// side (checkpoint.Payload is sequential).
type checkpointInput struct {
	ck *checkpoint.Checkpoint
	st *safetensors.Checkpoint
}

func openCheckpoint(path string) (*checkpointInput, error) {
	ck, err := checkpoint.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := safetensors.Open(path)
	if err != nil {
		ck.Close()
		return nil, err
	}
	return &checkpointInput{ck, st}, nil
}

func (c *checkpointInput) Close() {
	c.ck.Close()
	c.st.Close()
}

func (c *checkpointInput) section(name string) *io.SectionReader {
	info, ok := c.st.Tensor(name)
	if !ok { // checkpoint.Open found it; a reader that fails is enough here
		return io.NewSectionReader(bytes.NewReader(nil), 0, 0)
	}
	return c.st.Section(info)
}

func (c *checkpointInput) quantTensor(t *tensorstream.Tensor) *quantTensor {
	qt := &quantTensor{t: t, packed: c.section(t.Name), absmax: c.section(t.Name + checkpoint.SuffixAbsmax)}
	if t.Quant.DoubleQuant {
		qt.nested = c.section(t.Name + checkpoint.SuffixNestedAbsmax)
	}
	return qt
}

// layoutError reports whether err from opening a checkpoint is a fault of its
// content (an integrity finding) rather than of its absence.
func layoutError(err error) bool {
	for _, s := range []error{checkpoint.ErrLayout, checkpoint.ErrQuantState, checkpoint.ErrDType,
		safetensors.ErrHeader, safetensors.ErrTruncated, safetensors.ErrDType, safetensors.ErrShape,
		safetensors.ErrOffsets, safetensors.ErrDuplicate, safetensors.ErrMissingShard, safetensors.ErrIndex} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

func (v *run) checkpoint(opts Options) error {
	ci, err := openCheckpoint(opts.Checkpoint)
	if err != nil {
		if layoutError(err) {
			v.aborted = true
			v.find("", KindQuantState, "%v", err)
			return nil
		}
		return fmt.Errorf("%w: checkpoint: %w", ErrInput, err)
	}
	defer ci.Close()
	if opts.Stream != nil {
		if err := v.roundTrip(opts.Stream, ci); err != nil {
			return err
		}
	}
	for _, t := range ci.ck.Tensors {
		ref := v.reference(t.Name)
		var (
			res      TensorResult
			findings []Finding
			err      error
		)
		if t.Encoding == tensorstream.BNB4 {
			res, findings, err = v.c.quant(ci.quantTensor(t), ref)
		} else {
			res, findings, err = v.c.raw(t, ci.section(t.Name), ref)
		}
		if err != nil {
			return err
		}
		v.rep.add(res, findings)
	}
	return nil
}

// roundTrip compares the stream with the checkpoint tensor by tensor: the
// descriptor, every payload byte, and the nested offset from the trailer.
func (v *run) roundTrip(in io.Reader, ci *checkpointInput) error {
	byName := map[string]*tensorstream.Tensor{}
	for _, t := range ci.ck.Tensors {
		byName[t.Name] = t
	}
	rt := &RoundTrip{}
	v.rep.RoundTrip = rt
	inStream := map[string]bool{}
	r := tensorstream.NewReader(in)
	if _, err := r.Header(); err != nil {
		return v.streamFailure(err)
	}
	var sbuf, cbuf []byte
	for {
		t, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return v.streamFailure(err)
		}
		rt.Tensors++
		inStream[t.Name] = true
		ct := byName[t.Name]
		if ct == nil {
			v.find(t.Name, KindRoundTrip, "in the stream, not in the checkpoint")
			continue
		}
		if d := descDiff(t, ct); d != "" {
			v.find(t.Name, KindRoundTrip, "%s", d)
			continue
		}
		if t.NoData {
			v.find(t.Name, KindRoundTrip, "the stream carries no data for it")
			continue
		}
		cp, err := ci.ck.Payload(ct)
		if err != nil {
			return fmt.Errorf("%w: checkpoint: %w", ErrInput, err)
		}
		sbuf, cbuf = grow(sbuf, rawChunk), grow(cbuf, rawChunk)
		same := true
		for off := int64(0); off < t.Size && same; off += rawChunk {
			n := min(rawChunk, t.Size-off)
			if _, err := io.ReadFull(r, sbuf[:n]); err != nil {
				return v.streamFailure(err)
			}
			if _, err := io.ReadFull(cp, cbuf[:n]); err != nil {
				return fmt.Errorf("%w: checkpoint: tensor %q: %w", ErrInput, t.Name, err)
			}
			if !bytes.Equal(sbuf[:n], cbuf[:n]) {
				i := int64(0)
				for sbuf[i] == cbuf[i] {
					i++
				}
				v.find(t.Name, KindRoundTrip, "payload byte %d is %#02x in the stream, %#02x in the checkpoint", off+i, sbuf[i], cbuf[i])
				same = false
			}
		}
		if _, err := io.Copy(io.Discard, r); err != nil { // trailer: nested offset
			return v.streamFailure(err)
		}
		if !same {
			continue
		}
		if t.Quant != nil && math.Float32bits(t.Quant.NestedOffset) != math.Float32bits(ct.Quant.NestedOffset) {
			v.find(t.Name, KindRoundTrip, "nested offset %v in the stream, %v in the checkpoint", t.Quant.NestedOffset, ct.Quant.NestedOffset)
			continue
		}
		rt.Identical++
	}
	for _, t := range ci.ck.Tensors {
		if !inStream[t.Name] {
			v.find(t.Name, KindRoundTrip, "in the checkpoint, not in the stream")
		}
	}
	return nil
}

// descDiff says how two descriptors differ in what a checkpoint can express.
func descDiff(s, c *tensorstream.Tensor) string {
	switch {
	case s.DType != c.DType:
		return fmt.Sprintf("dtype %s in the stream, %s in the checkpoint", s.DType, c.DType)
	case !slices.Equal(s.Shape, c.Shape):
		return fmt.Sprintf("shape %v in the stream, %v in the checkpoint", s.Shape, c.Shape)
	case s.Encoding != c.Encoding:
		return fmt.Sprintf("encoding %s in the stream, %s in the checkpoint", s.Encoding, c.Encoding)
	case s.Size != c.Size:
		return fmt.Sprintf("%d payload bytes in the stream, %d in the checkpoint", s.Size, c.Size)
	}
	if s.Quant != nil {
		a, b := *s.Quant, *c.Quant
		a.NestedOffset, b.NestedOffset = 0, 0
		if a != b {
			return fmt.Sprintf("quant state %+v in the stream, %+v in the checkpoint", a, b)
		}
	}
	return ""
}

// spoolStream copies in to an unlinked temporary file in dir (os.TempDir()
// when ""), and returns it with a function that closes it.
func spoolStream(in io.Reader, dir string) (*os.File, func(), error) {
	f, err := os.CreateTemp(dir, "verify-stream-*")
	if err != nil {
		return nil, nil, err
	}
	os.Remove(f.Name())
	if _, err := io.Copy(f, in); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("reading the stream: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, func() { f.Close() }, nil
}

// completeStream reads the stream in f to its end record, checking every
// checksum on the way; an empty stream is ErrInput.
func completeStream(f *os.File) error {
	if st, err := f.Stat(); err == nil && st.Size() == 0 {
		return fmt.Errorf("%w: the stream is empty: the stage before verify wrote nothing (see its message)", ErrInput)
	}
	r := tensorstream.NewReader(bufio.NewReaderSize(f, 1<<20))
	if _, err := r.Header(); err != nil {
		return err
	}
	for {
		_, err := r.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
