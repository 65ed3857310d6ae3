package safetensors

import (
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/pyjson"
)

// DefaultMaxShardSize is "5GB" as huggingface_hub parses it (decimal). Note
// that transformers 5's save_pretrained defaults to "50GB".
const DefaultMaxShardSize int64 = 5_000_000_000

// ParseSize parses a shard size: plain bytes ("1000"), a decimal unit as
// huggingface_hub's parse_size_to_int reads it ("5GB", "500MB", "1.5GB", "2TB",
// "10KB"; case-insensitive, value may be fractional, result truncated), or a
// binary unit ("2GiB", "512MiB", "64KiB", "1TiB").
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	units := []struct {
		suffix string
		mult   float64
	}{
		{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	}
	mult := 1.0
	upper := strings.ToUpper(t)
	for _, u := range units {
		if strings.HasSuffix(upper, u.suffix) {
			t, mult = strings.TrimSpace(t[:len(t)-len(u.suffix)]), u.mult
			break
		}
	}
	if mult == 1 {
		if n, err := strconv.ParseInt(t, 10, 64); err == nil && n > 0 {
			return n, nil
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || t == "" || strings.ContainsAny(t, "xXpP_") {
		return 0, fmt.Errorf("%w: %q: want a number and a unit, like 5GB, 500MB or 2GiB", ErrSize, s)
	}
	b := v * mult
	if math.IsNaN(b) || b < 1 || b >= math.MaxInt64 {
		return 0, fmt.Errorf("%w: %q is out of range", ErrSize, s)
	}
	return int64(b), nil
}

// Shard is one file of a sharding plan.
type Shard struct {
	File    string       // base name: model.safetensors or model-0000i-of-0000n.safetensors
	Tensors []TensorSpec // in the order given to PlanShards
	Size    int64        // sum of payload sizes
}

// ShardPlan assigns tensors to files the way transformers' save_pretrained
// does (huggingface_hub split_state_dict_into_shards_factory).
type ShardPlan struct {
	Shards    []Shard
	TotalSize int64
	shardOf   map[string]int
}

// PlanShards splits tensors, given in state-dict order, into shards of at
// most maxShardSize payload bytes: a greedy fill in order, starting a new
// shard when the next tensor would tip the current one over the limit; a
// tensor larger than the limit gets a shard of its own, appended at once
// (so before the shard still being filled). One shard is model.safetensors;
// several are model-%05d-of-%05d.safetensors.
func PlanShards(tensors []TensorSpec, maxShardSize int64) (*ShardPlan, error) {
	if maxShardSize <= 0 {
		return nil, fmt.Errorf("%w: max shard size %d", ErrSize, maxShardSize)
	}
	p := &ShardPlan{shardOf: map[string]int{}}
	var shards [][]TensorSpec
	var sizes []int64
	var cur []TensorSpec
	var curSize int64
	seen := map[string]bool{}
	for _, t := range tensors {
		if seen[t.Name] {
			return nil, fmt.Errorf("tensor %q: %w: listed twice", t.Name, ErrDuplicate)
		}
		seen[t.Name] = true
		size, err := ByteLen(t.DType, t.Shape)
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		p.TotalSize += size
		if size > maxShardSize {
			shards = append(shards, []TensorSpec{t})
			sizes = append(sizes, size)
			continue
		}
		if curSize+size > maxShardSize {
			shards = append(shards, cur)
			sizes = append(sizes, curSize)
			cur, curSize = nil, 0
		}
		cur = append(cur, t)
		curSize += size
	}
	if len(cur) > 0 || len(shards) == 0 {
		shards = append(shards, cur)
		sizes = append(sizes, curSize)
	}
	for i, s := range shards {
		name := SingleFileName
		if len(shards) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(shards))
		}
		p.Shards = append(p.Shards, Shard{File: name, Tensors: s, Size: sizes[i]})
		for _, t := range s {
			p.shardOf[t.Name] = i
		}
	}
	return p, nil
}

// Sharded reports whether the plan has more than one file (and so an index).
func (p *ShardPlan) Sharded() bool { return len(p.Shards) > 1 }

// ShardOf returns the position in Shards of the named tensor's shard.
func (p *ShardPlan) ShardOf(name string) (int, bool) {
	i, ok := p.shardOf[name]
	return i, ok
}

// Index returns the index transformers 5 writes for the plan:
// metadata {total_parameters, total_size} and the weight map. totalParameters
// is the model's num_parameters(); pass a negative value to leave it out, as
// transformers 4 did.
func (p *ShardPlan) Index(totalParameters int64) *Index {
	ix := &Index{Metadata: map[string]any{"total_size": p.TotalSize}, WeightMap: map[string]string{}}
	if totalParameters >= 0 {
		ix.Metadata["total_parameters"] = totalParameters
	}
	for _, s := range p.Shards {
		for _, t := range s.Tensors {
			ix.WeightMap[t.Name] = s.File
		}
	}
	return ix
}

// Marshal returns the index file as transformers writes it:
// json.dumps(index, indent=2, sort_keys=True) + "\n" (ensure_ascii on).
// Metadata values are what pyjson.MarshalIndent writes: those ParseIndex
// returns (numbers as json.Number), ints and int64s.
func (ix *Index) Marshal() ([]byte, error) {
	meta := ix.Metadata
	if meta == nil {
		meta = map[string]any{}
	}
	wm := make(map[string]any, len(ix.WeightMap))
	for k, v := range ix.WeightMap {
		wm[k] = v
	}
	b, err := pyjson.MarshalIndent(map[string]any{"metadata": meta, "weight_map": wm})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	return append(b, '\n'), nil
}

// CheckpointWriter writes a checkpoint directory following a ShardPlan: each
// shard through its own Writer (layout known in advance, no spool), opened
// when its first tensor arrives and closed when its last one has; at Close
// the index (sharded plans only), written atomically. Tensors may arrive in
// any order. On failure or Abort every file it wrote is removed.
type CheckpointWriter struct {
	dir       string
	plan      *ShardPlan
	metadata  map[string]string
	index     *Index
	writers   []*Writer
	remaining []int
	done      []string // finished files, removed by Abort
	err       error
}

// NewCheckpointWriter prepares to write plan's files into dir (which must
// exist) with metadata in every shard (transformers writes {"format": "pt"}).
// index is written as model.safetensors.index.json when the plan is sharded;
// nil means plan.Index(-1).
func NewCheckpointWriter(dir string, plan *ShardPlan, metadata map[string]string, index *Index) *CheckpointWriter {
	if index == nil {
		index = plan.Index(-1)
	}
	cw := &CheckpointWriter{dir: dir, plan: plan, metadata: metadata, index: index,
		writers: make([]*Writer, len(plan.Shards)), remaining: make([]int, len(plan.Shards))}
	for i, s := range plan.Shards {
		cw.remaining[i] = len(s.Tensors)
	}
	return cw
}

// Add writes one tensor's payload, read from r, to its shard.
func (cw *CheckpointWriter) Add(name string, dtype DType, shape []int64, r io.Reader) error {
	if cw.err != nil {
		return cw.err
	}
	i, ok := cw.plan.ShardOf(name)
	if !ok {
		cw.err = fmt.Errorf("%s: tensor %q: %w: not in the shard plan", cw.dir, name, ErrNotFound)
		return cw.err
	}
	s := cw.plan.Shards[i]
	if cw.writers[i] == nil {
		if cw.remaining[i] == 0 {
			cw.err = fmt.Errorf("%s: tensor %q: %w: added twice", cw.dir, name, ErrDuplicate)
			return cw.err
		}
		w, err := NewWriterFor(filepath.Join(cw.dir, s.File), cw.metadata, s.Tensors)
		if err != nil {
			cw.err = err
			return err
		}
		cw.writers[i] = w
	}
	if err := cw.writers[i].Add(name, dtype, shape, r); err != nil {
		cw.err = err
		return err
	}
	cw.remaining[i]--
	if cw.remaining[i] == 0 {
		err := cw.writers[i].Close()
		cw.writers[i] = nil
		if err != nil {
			cw.err = err
			return err
		}
		cw.done = append(cw.done, filepath.Join(cw.dir, s.File))
	}
	return nil
}

// Close finishes the checkpoint. Every planned tensor must have been added.
// On failure everything written is removed.
func (cw *CheckpointWriter) Close() error {
	if cw.err != nil {
		cw.Abort()
		return cw.err
	}
	for i, s := range cw.plan.Shards {
		if cw.remaining[i] > 0 || (len(s.Tensors) == 0 && cw.writers[i] == nil) {
			if len(s.Tensors) == 0 { // an empty model: one empty file
				w, err := NewWriterFor(filepath.Join(cw.dir, s.File), cw.metadata, nil)
				if err == nil {
					err = w.Close()
				}
				if err != nil {
					cw.err = err
					cw.Abort()
					return err
				}
				cw.done = append(cw.done, filepath.Join(cw.dir, s.File))
				continue
			}
			cw.err = fmt.Errorf("%s: %w: %d tensors of %s never added", cw.dir, ErrIncomplete, cw.remaining[i], s.File)
			cw.Abort()
			return cw.err
		}
	}
	if cw.plan.Sharded() {
		data, err := cw.index.Marshal()
		if err == nil {
			err = writeFileAtomic(filepath.Join(cw.dir, IndexFileName), data)
		}
		if err != nil {
			cw.err = err
			cw.Abort()
			return err
		}
	}
	cw.err = fmt.Errorf("%s: %w: already closed", cw.dir, ErrIncomplete)
	return nil
}

// Abort removes every file written so far and any temporary file.
func (cw *CheckpointWriter) Abort() error {
	for i, w := range cw.writers {
		if w != nil {
			w.Abort()
			cw.writers[i] = nil
		}
	}
	for _, p := range cw.done {
		os.Remove(p)
	}
	cw.done = nil
	if cw.err == nil {
		cw.err = fmt.Errorf("%s: %w: aborted", cw.dir, ErrIncomplete)
	}
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
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
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return err
	}
	syncDir(filepath.Dir(path))
	return nil
}
