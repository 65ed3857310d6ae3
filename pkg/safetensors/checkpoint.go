package safetensors

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// File names transformers uses.
const (
	SingleFileName = "model.safetensors"
	IndexFileName  = "model.safetensors.index.json"
)

// maxIndexSize bounds how much of an index file is read.
const maxIndexSize = 100_000_000

// Index is the content of model.safetensors.index.json.
type Index struct {
	// Metadata is the "metadata" object; numbers are json.Number when parsed.
	// transformers 5 writes total_parameters and total_size.
	Metadata map[string]any
	// WeightMap maps each tensor name to the base name of its shard.
	WeightMap map[string]string
}

// Shards returns the distinct shard names in sorted order, the order
// transformers loads them in (sorted(set(weight_map.values()))).
func (ix *Index) Shards() []string {
	var out []string
	for _, f := range ix.WeightMap {
		out = append(out, f)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// Checkpoint is a model's weights: one safetensors file, or the shards that a
// model.safetensors.index.json lists.
type Checkpoint struct {
	// Dir is the directory holding the files.
	Dir string
	// Index is the parsed index, nil for a single-file checkpoint.
	Index *Index
	// Files are the open files, shards in index order.
	Files   []*File
	tensors []TensorInfo
	byName  map[string]int
}

// Open opens a checkpoint at path: a .safetensors file, an index JSON file, or
// a directory holding model.safetensors.index.json, model.safetensors, or a
// single other *.safetensors file. Every file is validated, and the set of
// tensors is checked against the index: no missing shard, no tensor in two
// places, every index entry present in its shard and every shard tensor in
// the index.
func Open(path string) (*Checkpoint, error) {
	st, err := os.Stat(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s: %w: no such file or directory", path, ErrNotFound)
		}
		return nil, err
	}
	if !st.IsDir() {
		if strings.HasSuffix(path, ".json") {
			return openIndexed(path)
		}
		return openSingle(path)
	}
	if _, err := os.Stat(filepath.Join(path, IndexFileName)); err == nil {
		return openIndexed(filepath.Join(path, IndexFileName))
	}
	if _, err := os.Stat(filepath.Join(path, SingleFileName)); err == nil {
		return openSingle(filepath.Join(path, SingleFileName))
	}
	found, err := filepath.Glob(filepath.Join(path, "*.safetensors"))
	if err != nil {
		return nil, err
	}
	switch len(found) {
	case 0:
		return nil, fmt.Errorf("%s: %w: no %s, %s or other .safetensors file", path, ErrNotFound, IndexFileName, SingleFileName)
	case 1:
		return openSingle(found[0])
	}
	return nil, fmt.Errorf("%s: %w: %d .safetensors files and no %s to say how they fit together", path, ErrIndex, len(found), IndexFileName)
}

func openSingle(path string) (*Checkpoint, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Dir: filepath.Dir(path), Files: []*File{f}}
	c.collect()
	return c, nil
}

func (c *Checkpoint) collect() {
	c.byName = map[string]int{}
	for i, f := range c.Files {
		for _, t := range f.Tensors {
			t.Shard = i
			c.byName[t.Name] = len(c.tensors)
			c.tensors = append(c.tensors, t)
		}
	}
}

func openIndexed(indexPath string) (*Checkpoint, error) {
	ix, err := ReadIndex(indexPath)
	if err != nil {
		return nil, err
	}
	dir := filepath.Dir(indexPath)
	c := &Checkpoint{Dir: dir, Index: ix}
	if err := c.openShards(indexPath); err != nil {
		c.Close()
		return nil, err
	}
	c.collect()
	return c, nil
}

// openShards opens the index's shards and checks them against it.
func (c *Checkpoint) openShards(indexPath string) error {
	ix, dir := c.Index, c.Dir
	firstTensor := map[string]string{}
	for name, shard := range ix.WeightMap {
		if prev, ok := firstTensor[shard]; !ok || name < prev {
			firstTensor[shard] = name
		}
	}
	for _, shard := range ix.Shards() {
		p := filepath.Join(dir, shard)
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s: %w: %s, which holds tensor %q among others, does not exist", indexPath, ErrMissingShard, shard, firstTensor[shard])
		}
		f, err := OpenFile(p)
		if err != nil {
			return err
		}
		c.Files = append(c.Files, f)
	}
	owner := map[string]string{}
	for _, f := range c.Files {
		base := filepath.Base(f.Path)
		for _, t := range f.Tensors {
			if prev, dup := owner[t.Name]; dup {
				return fmt.Errorf("%s: tensor %q: %w: also in %s", f.Path, t.Name, ErrDuplicate, prev)
			}
			owner[t.Name] = base
			want, listed := ix.WeightMap[t.Name]
			if !listed {
				return fmt.Errorf("%s: tensor %q: %w: the shard holds it but %s does not list it", f.Path, t.Name, ErrIndex, IndexFileName)
			}
			if want != base {
				return fmt.Errorf("%s: tensor %q: %w: the shard holds it but %s maps it to %s", f.Path, t.Name, ErrIndex, IndexFileName, want)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(ix.WeightMap)) {
		if _, ok := owner[name]; !ok {
			return fmt.Errorf("%s: tensor %q: %w: the index maps it to %s, which lacks it", indexPath, name, ErrIndex, ix.WeightMap[name])
		}
	}
	return nil
}

// ReadIndex reads and checks a model.safetensors.index.json: a JSON object
// with a "weight_map" object of tensor name -> shard base name (no directory
// parts), no duplicate keys.
func ReadIndex(path string) (*Index, error) {
	f, err := os.Open(path)
	if err != nil {
		if os.IsNotExist(err) {
			return nil, fmt.Errorf("%s: %w: %v", path, ErrNotFound, err)
		}
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(data) > maxIndexSize {
		return nil, fmt.Errorf("%s: %w: over %d bytes", path, ErrIndex, maxIndexSize)
	}
	ix, err := ParseIndex(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return ix, nil
}

// ParseIndex parses the text of an index file.
func ParseIndex(data []byte) (*Index, error) {
	d := json.NewDecoder(strings.NewReader(string(data)))
	d.UseNumber()
	bad := func(err error) (*Index, error) {
		if errors.Is(err, ErrDuplicate) || errors.Is(err, ErrIndex) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %v", ErrIndex, err)
	}
	if err := expectDelim(d, '{'); err != nil {
		return bad(err)
	}
	ix := &Index{}
	seen := map[string]bool{}
	for d.More() {
		key, err := stringToken(d)
		if err != nil {
			return bad(err)
		}
		if seen[key] {
			return bad(fmt.Errorf("%w: key %q appears twice in the index", ErrDuplicate, key))
		}
		seen[key] = true
		switch key {
		case "metadata":
			if err := d.Decode(&ix.Metadata); err != nil {
				return bad(fmt.Errorf("metadata: %v", err))
			}
		case "weight_map":
			if ix.WeightMap, err = decodeWeightMap(d); err != nil {
				return bad(err)
			}
		default:
			var skip json.RawMessage
			if err := d.Decode(&skip); err != nil {
				return bad(err)
			}
		}
	}
	if err := expectDelim(d, '}'); err != nil {
		return bad(err)
	}
	if _, err := d.Token(); err != io.EOF {
		return bad(fmt.Errorf("data after the index object"))
	}
	if ix.WeightMap == nil {
		return bad(fmt.Errorf("no weight_map"))
	}
	return ix, nil
}

func decodeWeightMap(d *json.Decoder) (map[string]string, error) {
	if err := expectDelim(d, '{'); err != nil {
		return nil, fmt.Errorf("weight_map: %v", err)
	}
	m := map[string]string{}
	for d.More() {
		name, err := stringToken(d)
		if err != nil {
			return nil, fmt.Errorf("weight_map: %v", err)
		}
		shard, err := stringToken(d)
		if err != nil {
			return nil, fmt.Errorf("weight_map[%q]: %v", name, err)
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("tensor %q: %w: weight_map lists it twice", name, ErrDuplicate)
		}
		if shard == "" || shard == "." || shard == ".." || strings.ContainsAny(shard, `/\`) || strings.ContainsRune(shard, 0) {
			return nil, fmt.Errorf("tensor %q: %w: shard name %q is not a plain file name", name, ErrIndex, shard)
		}
		m[name] = shard
	}
	if err := expectDelim(d, '}'); err != nil {
		return nil, fmt.Errorf("weight_map: %v", err)
	}
	return m, nil
}

// Tensors returns every tensor: shards in index order, each in data order.
// The slice is shared; do not modify it.
func (c *Checkpoint) Tensors() []TensorInfo { return c.tensors }

// TensorsByName returns every tensor sorted by name.
func (c *Checkpoint) TensorsByName() []TensorInfo {
	out := slices.Clone(c.tensors)
	slices.SortFunc(out, func(a, b TensorInfo) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// Tensor returns the tensor of that name.
func (c *Checkpoint) Tensor(name string) (TensorInfo, bool) {
	i, ok := c.byName[name]
	if !ok {
		return TensorInfo{}, false
	}
	return c.tensors[i], true
}

// Section returns a reader over t's payload (positioned reads).
func (c *Checkpoint) Section(t TensorInfo) *io.SectionReader {
	return c.Files[t.Shard].Section(t)
}

// Metadata returns the __metadata__ of the first file (transformers writes
// the same metadata into every shard); nil when there is none.
func (c *Checkpoint) Metadata() map[string]string {
	if len(c.Files) == 0 {
		return nil
	}
	return c.Files[0].Metadata
}

// Size returns the sum of the tensors' payload sizes.
func (c *Checkpoint) Size() int64 {
	var n int64
	for _, t := range c.tensors {
		n += t.Size()
	}
	return n
}

// Close closes every file.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.Files {
		errs = append(errs, f.Close())
	}
	return errors.Join(errs...)
}
