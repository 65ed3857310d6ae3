package checkpoint

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// DirWriter writes a state dict whose tensors arrive one at a time, in
// state-dict order, as the safetensors files transformers' save_pretrained
// writes: model.safetensors, or shards of at most MaxShardSize payload bytes
// named model-0000i-of-0000n.safetensors with model.safetensors.index.json.
// It shards as safetensors.PlanShards does (a greedy fill in arrival order; a
// tensor over the limit gets a shard of its own, placed before the shard
// being filled) without knowing the tensors in advance: each shard is spooled
// under a temporary name and renamed once the number of shards is known.
// A full shard is assembled and fsynced in the background while the next one
// is received (one at a time). Memory stays bounded; each shard needs its
// size again in disk space while it is assembled, which may overlap with
// spooling the next.
type DirWriter struct {
	dir      string
	max      int64
	metadata map[string]string
	done     []*shard // finished shards, in file order
	cur      *shard   // the shard being filled
	temps    int
	total    int64
	files    []string
	closed   bool
	err      error
	pending  chan error // the background finish of the last full shard; nil if none
	// plan and exact: the shards the entries announced to Expect make, and
	// which of their sizes are certain; nil plan when none were.
	plan    *safetensors.ShardPlan
	exact   map[string]bool
	inPlace int64 // bytes the finished shards' writers wrote straight to their places
}

type shard struct {
	tmp   string // the shard's temporary path
	w     *safetensors.Writer
	size  int64
	names []string
}

// NewDirWriter prepares to write into dir, which must exist. maxShardSize <= 0
// means safetensors.DefaultMaxShardSize. Every file carries metadata;
// transformers writes {"format": "pt"}.
func NewDirWriter(dir string, maxShardSize int64, metadata map[string]string) *DirWriter {
	if maxShardSize <= 0 {
		maxShardSize = safetensors.DefaultMaxShardSize
	}
	return &DirWriter{dir: dir, max: maxShardSize, metadata: metadata}
}

// Expect announces the entries to come, in the order they will come (sizes
// that are guesses marked so), so that each shard's writer can put them
// straight in their places (safetensors.Writer.Expect) instead of spooling
// and assembling them at the end. What arrives decides the files, as
// without it; an announcement that does not hold costs only speed. Call it
// before the first Add.
func (d *DirWriter) Expect(entries []safetensors.Expected) error {
	if d.err != nil {
		return d.err
	}
	if d.total > 0 || len(d.done) > 0 || d.cur != nil {
		return fmt.Errorf("%s: %w: Expect comes before the first Add", d.dir, safetensors.ErrIncomplete)
	}
	specs := make([]safetensors.TensorSpec, len(entries))
	exact := make(map[string]bool, len(entries))
	for i, e := range entries {
		specs[i], exact[e.Name] = e.TensorSpec, e.Exact
	}
	plan, err := safetensors.PlanShards(specs, d.max)
	if err != nil {
		return fmt.Errorf("%s: %w", d.dir, err)
	}
	d.plan, d.exact = plan, exact
	return nil
}

func (d *DirWriter) plannedShard(name string) (int, bool) {
	if d.plan == nil {
		return 0, false
	}
	return d.plan.ShardOf(name)
}

// ExpectTensors announces the entries the stream tensors ts, descriptors
// given ahead of their payloads in the order they will come, become
// (ExpectedEntries); see Expect.
func (d *DirWriter) ExpectTensors(ts []*tensorstream.Tensor) error {
	var entries []safetensors.Expected
	for _, t := range ts {
		e, err := ExpectedEntries(t)
		if err != nil {
			return err
		}
		entries = append(entries, e...)
	}
	return d.Expect(entries)
}

// newShard starts the shard whose first entry is first.
func (d *DirWriter) newShard(first string) (*shard, error) {
	d.temps++
	s := &shard{tmp: filepath.Join(d.dir, fmt.Sprintf(".shard-%05d.safetensors.partial", d.temps))}
	w, err := safetensors.NewWriter(s.tmp, d.metadata)
	if err != nil {
		return nil, err
	}
	s.w = w
	if i, ok := d.plannedShard(first); ok {
		var exp []safetensors.Expected
		for _, t := range d.plan.Shards[i].Tensors {
			exp = append(exp, safetensors.Expected{TensorSpec: t, Exact: d.exact[t.Name]})
		}
		if err := w.Expect(exp); err != nil {
			w.Abort()
			return nil, err
		}
	}
	return s, nil
}

func (d *DirWriter) fail(err error) error {
	d.err = err
	d.Abort()
	return err
}

// Add writes one tensor, reading exactly its byte length from r.
func (d *DirWriter) Add(name string, dtype safetensors.DType, shape []int64, r io.Reader) error {
	if d.err != nil {
		return d.err
	}
	if d.pending != nil {
		select {
		case err := <-d.pending: // a background finish that failed fails now
			d.pending = nil
			if err != nil {
				return d.fail(err)
			}
		default:
		}
	}
	size, err := safetensors.ByteLen(dtype, shape)
	if err != nil {
		return d.fail(fmt.Errorf("%s: tensor %q: %w", d.dir, name, err))
	}
	target := d.cur
	switch {
	case size > d.max:
		target = nil
	case d.cur != nil && d.cur.size+size > d.max:
		if err := d.finishLater(d.cur); err != nil {
			return d.fail(err)
		}
		d.cur, target = nil, nil
	}
	if target == nil {
		if target, err = d.newShard(name); err != nil {
			return d.fail(err)
		}
		if size <= d.max {
			d.cur = target
		}
	}
	if err := target.w.Add(name, dtype, shape, r); err != nil {
		if target != d.cur {
			target.w.Abort()
		}
		return d.fail(err)
	}
	target.size += size
	target.names = append(target.names, name)
	d.total += size
	if target != d.cur {
		if err := d.finishLater(target); err != nil {
			return d.fail(err)
		}
	}
	return nil
}

// finishLater waits for the shard finishing in the background, if any, then
// appends s to done and closes its writer (which assembles, fsyncs and
// renames the file) in the background. A failed Close removes its files; so
// does finishLater when the wait fails.
func (d *DirWriter) finishLater(s *shard) error {
	if err := d.wait(); err != nil {
		s.w.Abort()
		return err
	}
	d.done = append(d.done, s)
	d.inPlace += s.w.DirectBytes()
	w, ch := s.w, make(chan error, 1)
	s.w = nil
	go func() { ch <- closeShard(w) }()
	d.pending = ch
	return nil
}

// closeShard closes a shard's writer; tests make it fail.
var closeShard = (*safetensors.Writer).Close

// wait waits for the background finish, if any, and returns its error.
func (d *DirWriter) wait() error {
	if d.pending == nil {
		return nil
	}
	err := <-d.pending
	d.pending = nil
	return err
}

// Close finishes the last shard, renames the shards to their final names and
// writes the index when there are several. totalParameters goes into the
// index metadata (transformers writes num_parameters()); a negative value
// leaves it out. It returns the base names of the files written.
func (d *DirWriter) Close(totalParameters int64) ([]string, error) {
	if d.err != nil {
		return nil, d.err
	}
	if d.cur != nil || len(d.done) == 0 {
		s := d.cur
		if s == nil {
			var err error
			if s, err = d.newShard(""); err != nil {
				return nil, d.fail(err)
			}
		}
		d.cur = nil
		if err := d.finishLater(s); err != nil {
			return nil, d.fail(err)
		}
	}
	if err := d.wait(); err != nil {
		return nil, d.fail(err)
	}
	n := len(d.done)
	ix := &safetensors.Index{Metadata: map[string]any{"total_size": d.total}, WeightMap: map[string]string{}}
	if totalParameters >= 0 {
		ix.Metadata["total_parameters"] = totalParameters
	}
	for i, s := range d.done {
		name := safetensors.SingleFileName
		if n > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, n)
		}
		if err := os.Rename(s.tmp, filepath.Join(d.dir, name)); err != nil {
			return nil, d.fail(err)
		}
		s.tmp = filepath.Join(d.dir, name)
		d.files = append(d.files, name)
		for _, t := range s.names {
			ix.WeightMap[t] = name
		}
	}
	if n > 1 {
		data, err := ix.Marshal()
		if err == nil {
			err = WriteFileSync(filepath.Join(d.dir, safetensors.IndexFileName), data)
		}
		if err != nil {
			return nil, d.fail(err)
		}
		d.files = append(d.files, safetensors.IndexFileName)
	}
	d.err = fmt.Errorf("%s: %w: already closed", d.dir, safetensors.ErrIncomplete)
	d.closed = true
	return d.files, nil
}

// InPlaceBytes returns how many payload bytes of the finished shards went
// straight to their places in the files (see Expect).
func (d *DirWriter) InPlaceBytes() int64 { return d.inPlace }

// TotalSize returns the payload bytes added so far.
func (d *DirWriter) TotalSize() int64 { return d.total }

// Abort removes every file the writer made. It is safe to call more than
// once, and does nothing after a successful Close.
func (d *DirWriter) Abort() {
	if d.closed {
		return
	}
	d.wait() // the background finish leaves its file or nothing: removed below
	if d.cur != nil && d.cur.w != nil {
		d.cur.w.Abort()
	}
	d.cur = nil
	for _, s := range d.done {
		os.Remove(s.tmp)
	}
	d.done = nil
	if d.err == nil {
		d.err = fmt.Errorf("%s: %w: aborted", d.dir, safetensors.ErrIncomplete)
	}
}

// WriteFileSync writes data to path and fsyncs it.
func WriteFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}
