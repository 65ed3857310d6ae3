package checkpoint

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Checkpoint is a checkpoint directory opened for reading: a bitsandbytes
// 4-bit one (written by nf4pipe, transformers or anyone else) or a plain one,
// single-file or sharded. Its 4-bit weights come back as bnb4 stream tensors
// with their complete quant state, everything else as raw tensors.
type Checkpoint struct {
	// Path is what Open was given; Dir the directory holding the files.
	Path, Dir string
	// Config is config.json's bytes, nil when there is none.
	Config []byte
	// QuantConfig is config.json's quantization_config, nil when absent.
	QuantConfig *QuantizationConfig
	// Tensors are the stream descriptors, sorted by name. For bnb4 tensors
	// Quant is complete, NestedOffset included.
	Tensors []*tensorstream.Tensor

	st    *safetensors.Checkpoint
	parts map[string][]safetensors.TensorInfo // per tensor, the entries its payload is made of
}

// Open reads the checkpoint at path (a directory, a .safetensors file or an
// index JSON, as safetensors.Open takes them) and its config.json, and groups
// the state-dict entries of every 4-bit weight into one stream tensor, checking
// that they form the layout bitsandbytes writes: every component present with
// the right dtype and size, the code books equal to bitsandbytes' own, and the
// quant_state JSON consistent with them.
func Open(path string) (*Checkpoint, error) {
	st, err := safetensors.Open(path)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: path, Dir: st.Dir, st: st, parts: map[string][]safetensors.TensorInfo{}}
	if err := c.readConfig(); err != nil {
		st.Close()
		return nil, err
	}
	if err := c.group(); err != nil {
		st.Close()
		return nil, err
	}
	return c, nil
}

func (c *Checkpoint) readConfig() error {
	p := filepath.Join(c.Dir, "config.json")
	f, err := os.Open(p)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if len(data) > maxConfigSize {
		return fmt.Errorf("%s: %w: over %d bytes", p, ErrConfig, maxConfigSize)
	}
	qc, err := ParseQuantizationConfig(data)
	if err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	c.Config, c.QuantConfig = data, qc
	return nil
}

// group turns the state dict into stream tensors.
func (c *Checkpoint) group() error {
	all := c.st.TensorsByName()
	used := make(map[string]bool, len(all))
	var quantized []*tensorstream.Tensor
	for _, e := range all {
		i := strings.LastIndex(e.Name, SuffixQuantState)
		if i < 0 {
			continue
		}
		t, parts, err := c.quantized(e.Name[:i], e)
		if err != nil {
			return fmt.Errorf("%s: tensor %q: %w", c.Dir, e.Name[:i], err)
		}
		for _, p := range parts {
			used[p.Name] = true
		}
		quantized = append(quantized, t)
	}
	for _, e := range all {
		if used[e.Name] {
			continue
		}
		for _, s := range []string{SuffixAbsmax, SuffixQuantMap, SuffixNestedAbsmax, SuffixNestedQuantMap} {
			if w, ok := strings.CutSuffix(e.Name, s); ok {
				if _, has := c.st.Tensor(w); has {
					return fmt.Errorf("%s: tensor %q: %w: %s without a quant_state entry", c.Dir, w, ErrLayout, e.Name)
				}
			}
		}
		if strings.Contains(e.Name, SuffixQuantState) {
			return fmt.Errorf("%s: %q: %w: a quant_state entry of an unknown quant type", c.Dir, e.Name, ErrLayout)
		}
		dt := e.DType
		if !tensorstream.CanCarry(dt) {
			return fmt.Errorf("%s: tensor %q: %w: %s cannot travel in a stream", c.Dir, e.Name, ErrDType, e.DType)
		}
		t := &tensorstream.Tensor{Name: e.Name, DType: dt, Shape: append([]int64(nil), e.Shape...), Encoding: tensorstream.Raw, Size: e.Size()}
		c.parts[e.Name] = []safetensors.TensorInfo{e}
		c.Tensors = append(c.Tensors, t)
	}
	c.Tensors = append(c.Tensors, quantized...)
	sortTensors(c.Tensors)
	return nil
}

func sortTensors(ts []*tensorstream.Tensor) {
	slices.SortFunc(ts, func(a, b *tensorstream.Tensor) int { return strings.Compare(a.Name, b.Name) })
}

// quantized checks the entries of the 4-bit weight w and returns its stream
// descriptor and the entries, payload sections first.
func (c *Checkpoint) quantized(w string, stateEntry safetensors.TensorInfo) (*tensorstream.Tensor, []safetensors.TensorInfo, error) {
	typeName := strings.TrimPrefix(stateEntry.Name, w+SuffixQuantState)
	if stateEntry.DType != safetensors.U8 {
		return nil, nil, fmt.Errorf("%w: %s is %s, not U8", ErrLayout, stateEntry.Name, stateEntry.DType)
	}
	raw, err := c.readSmall(stateEntry, maxQuantStateJSON)
	if err != nil {
		return nil, nil, err
	}
	qs, err := ParseQuantStateJSON(raw)
	if err != nil {
		return nil, nil, err
	}
	if qs.QuantType != typeName {
		return nil, nil, fmt.Errorf("%w: quant_type %q in an entry named for %q", ErrQuantState, qs.QuantType, typeName)
	}
	t := &tensorstream.Tensor{Name: w, DType: qs.DType, Shape: qs.Shape, Encoding: tensorstream.BNB4, Quant: qs.StreamQuant()}
	n := t.NumElements()
	packedLen, absmaxLen, nestedLen := t.Quant.Sections(n)
	t.Size = packedLen + absmaxLen + nestedLen

	get := func(name string) (safetensors.TensorInfo, error) {
		e, ok := c.st.Tensor(name)
		if !ok {
			return e, fmt.Errorf("%w: %s is missing", ErrLayout, name)
		}
		return e, nil
	}
	packed, err := get(w)
	if err != nil {
		return nil, nil, err
	}
	// quant storage other than uint8 holds the same bytes under another dtype
	if packed.Size() != packedLen || (packed.DType != safetensors.U8 && !tensorstream.CanCarry(packed.DType)) {
		return nil, nil, fmt.Errorf("%w: %s is %s %v (%d bytes); %d elements pack into %d bytes", ErrLayout, w, packed.DType, packed.Shape, packed.Size(), n, packedLen)
	}
	absmax, err := get(w + SuffixAbsmax)
	if err != nil {
		return nil, nil, err
	}
	wantAbsmax := safetensors.F32
	if qs.Nested {
		wantAbsmax = safetensors.U8
	}
	if absmax.DType != wantAbsmax || absmax.Size() != absmaxLen {
		return nil, nil, fmt.Errorf("%w: %s is %s %v; %d blocks need %d bytes of %s", ErrLayout, absmax.Name, absmax.DType, absmax.Shape, t.Quant.Blocks(n), absmaxLen, wantAbsmax)
	}
	qmap, err := get(w + SuffixQuantMap)
	if err != nil {
		return nil, nil, err
	}
	info, err := qtype.Lookup(qs.QuantType)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrQuantState, err)
	}
	if err := c.checkTable(qmap, info.Map[:]); err != nil {
		return nil, nil, err
	}
	parts := []safetensors.TensorInfo{packed, absmax}
	extra := []safetensors.TensorInfo{qmap, stateEntry}
	if qs.Nested {
		nested, err := get(w + SuffixNestedAbsmax)
		if err != nil {
			return nil, nil, err
		}
		if nested.DType != safetensors.F32 || nested.Size() != nestedLen {
			return nil, nil, fmt.Errorf("%w: %s is %s %v; %d nested blocks need %d bytes of F32", ErrLayout, nested.Name, nested.DType, nested.Shape, nestedLen/4, nestedLen)
		}
		nmap, err := get(w + SuffixNestedQuantMap)
		if err != nil {
			return nil, nil, err
		}
		if err := c.checkTable(nmap, quant.NestedMap[:]); err != nil {
			return nil, nil, err
		}
		parts = append(parts, nested)
		extra = append(extra, nmap)
	} else {
		for _, s := range []string{SuffixNestedAbsmax, SuffixNestedQuantMap} {
			if _, ok := c.st.Tensor(w + s); ok {
				return nil, nil, fmt.Errorf("%w: %s present, but the quant state has no nested keys", ErrLayout, w+s)
			}
		}
	}
	c.parts[w] = parts
	return t, append(parts, extra...), nil
}

// checkTable requires e to be F32 holding exactly table, bit for bit.
func (c *Checkpoint) checkTable(e safetensors.TensorInfo, table []float32) error {
	if e.DType != safetensors.F32 || e.Size() != int64(4*len(table)) {
		return fmt.Errorf("%w: %s is %s %v, not F32 [%d]", ErrLayout, e.Name, e.DType, e.Shape, len(table))
	}
	b, err := c.readSmall(e, 4*len(table))
	if err != nil {
		return err
	}
	for i, want := range table {
		got := binary.LittleEndian.Uint32(b[4*i:])
		if got != math.Float32bits(want) {
			return fmt.Errorf("%w: %s[%d] is %g, bitsandbytes' table has %g", ErrLayout, e.Name, i, math.Float32frombits(got), want)
		}
	}
	return nil
}

func (c *Checkpoint) readSmall(e safetensors.TensorInfo, limit int) ([]byte, error) {
	if e.Size() > int64(limit) {
		return nil, fmt.Errorf("%w: %s has %d bytes, over the %d expected", ErrLayout, e.Name, e.Size(), limit)
	}
	b := make([]byte, e.Size())
	if _, err := io.ReadFull(c.st.Section(e), b); err != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, err)
	}
	return b, nil
}

// Payload returns a reader of t's payload in the stream's layout: the raw
// bytes, or for bnb4 the packed codes, absmax and nested absmax one after the
// other. t must be one of c.Tensors.
func (c *Checkpoint) Payload(t *tensorstream.Tensor) (io.Reader, error) {
	parts, ok := c.parts[t.Name]
	if !ok {
		return nil, fmt.Errorf("%s: tensor %q: %w", c.Dir, t.Name, safetensors.ErrNotFound)
	}
	rs := make([]io.Reader, len(parts))
	for i, p := range parts {
		rs[i] = c.st.Section(p)
	}
	return io.MultiReader(rs...), nil
}

// Source is the stream header's "source" section, as detect writes it (pkg/sections).
type Source = sections.Source

// Header returns a stream header whose "source" section names the checkpoint.
func (c *Checkpoint) Header() (*tensorstream.Header, error) {
	h := &tensorstream.Header{}
	abs, err := filepath.Abs(c.Path)
	if err != nil {
		return nil, err
	}
	dir, err := filepath.Abs(c.Dir)
	if err != nil {
		return nil, err
	}
	if err := sections.SetSource(h, &Source{Path: abs, Dir: dir, Config: c.Config, Files: len(c.st.Files)}); err != nil {
		return nil, err
	}
	return h, nil
}

// WriteTensors writes every tensor with its payload to w, whose header the
// caller has written.
func (c *Checkpoint) WriteTensors(w *tensorstream.Writer) error {
	for _, t := range c.Tensors {
		if err := w.WriteTensor(t.Clone()); err != nil {
			return err
		}
		r, err := c.Payload(t)
		if err != nil {
			return err
		}
		if _, err := io.Copy(w, r); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", c.Dir, t.Name, err)
		}
	}
	return nil
}

// WriteStream writes the whole checkpoint as a stream: h (Header() when nil),
// every tensor, and the end record.
func (c *Checkpoint) WriteStream(w *tensorstream.Writer, h *tensorstream.Header) error {
	if h == nil {
		var err error
		if h, err = c.Header(); err != nil {
			return err
		}
	}
	if err := w.WriteHeader(h); err != nil {
		return err
	}
	if err := c.WriteTensors(w); err != nil {
		return err
	}
	return w.Close()
}

// Files returns how many safetensors files the checkpoint has.
func (c *Checkpoint) Files() int { return len(c.st.Files) }

// Close closes the checkpoint's files.
func (c *Checkpoint) Close() error { return c.st.Close() }
