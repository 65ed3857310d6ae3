// Package detect is the logic of the detect tool: it finds a model's
// config.json and weights, identifies the architecture with pkg/arch, annotates
// every tensor with its role, layer and quantization decision, and writes the
// model as a tensor stream (descriptors only when there is only a config).
package detect

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/dtype"
	"github.com/nf4pipe/nf4pipe/pkg/hfcache"
	"github.com/nf4pipe/nf4pipe/pkg/progress"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Sentinel errors of this package; errors from pkg/arch and pkg/safetensors
// pass through wrapped, so errors.Is finds theirs too.
var (
	ErrInput  = errors.New("detect: no model at path")
	ErrConfig = errors.New("detect: bad config.json")
)

// maxConfigSize bounds how much of a config.json is read.
const maxConfigSize = 16 << 20

// Source is the stream header's "source" section (pkg/sections).
type Source = sections.Source

// Model is an opened model: its facts and annotated tensors, and the open
// checkpoint when there are weights.
type Model struct {
	Source  Source
	Arch    *arch.Model // nil without config.json
	Facts   *arch.Facts
	Tensors []arch.Tensor
	// Progress, when not nil, is told of every tensor Stream writes and of
	// the checkpoint bytes it reads, per read.
	Progress progress.Meter

	ck    *safetensors.Checkpoint
	infos []safetensors.TensorInfo // parallel to Tensors when ck != nil

	// a checkpoint already in 4 bits, read through pkg/checkpoint instead
	qck *checkpoint.Checkpoint
	qts []*tensorstream.Tensor // parallel to Tensors when qck != nil
}

// Open reads the model at path: a directory (config.json with model.safetensors
// or a sharded index), a .safetensors file, an index JSON, or a config.json
// alone; or, when no such path exists, a model id (ORG/NAME) in the local
// Hugging Face cache at its main revision. The policy decides which tensors
// are marked for quantization.
func Open(path string, pol arch.Policy) (*Model, error) { return OpenRevision(path, "", pol) }

// OpenRevision is Open with the revision of a model id (a branch, a tag or a
// commit hash; "" for main). A revision with a local path is an error
// (hfcache.ErrRevision).
func OpenRevision(model, revision string, pol arch.Policy) (*Model, error) {
	if err := pol.Validate(); err != nil {
		return nil, err
	}
	path, err := hfcache.Locate(model, revision)
	if err != nil {
		return nil, err
	}
	m, err := open(path, pol)
	if err != nil {
		return nil, err
	}
	if path != model {
		m.Source.ID, m.Source.Revision = model, revision
		if revision == "" {
			m.Source.Revision = hfcache.DefaultRevision
		}
	}
	return m, nil
}

func open(path string, pol arch.Policy) (*Model, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrInput, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrInput, withoutPath(err))
	}
	m := &Model{Source: Source{Path: abs, Dir: abs}}
	var configPath, weights string
	switch {
	case st.IsDir():
		configPath = filepath.Join(abs, "config.json")
		if hasWeights(abs) {
			weights = abs
		} else if other := otherWeights(abs); other != "" {
			return nil, fmt.Errorf("%s: %w: it holds %s, not .safetensors; only safetensors weights are read "+
				"(convert them: in Python, AutoModelForCausalLM.from_pretrained(DIR).save_pretrained(NEW_DIR) writes safetensors)", path, ErrInput, other)
		}
	case strings.HasSuffix(abs, ".safetensors"):
		m.Source.Dir = filepath.Dir(abs)
		configPath, weights = filepath.Join(m.Source.Dir, "config.json"), abs
	case strings.HasSuffix(abs, ".index.json"):
		m.Source.Dir = filepath.Dir(abs)
		configPath, weights = filepath.Join(m.Source.Dir, "config.json"), abs
	default: // a config.json, whatever its name
		m.Source.Dir = filepath.Dir(abs)
		configPath = abs
	}
	data, err := readConfig(configPath)
	switch {
	case errors.Is(err, os.ErrNotExist) && weights != "":
		// Weights without config.json: classify by names, dimensions unknown.
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("%s: %w: no config.json and no .safetensors weights", path, ErrInput)
	case err != nil:
		return nil, err
	default:
		cfg, err := arch.ParseConfig(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", configPath, err)
		}
		if m.Arch, err = arch.Resolve(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", configPath, err)
		}
		m.Source.Config = data
	}

	var pq *arch.Prequantized
	if m.Source.Config != nil {
		pq = arch.PrequantizedFromConfig(m.Source.Config)
	}
	var descs []arch.Desc
	switch {
	case weights != "" && pq != nil:
		if err := m.openPrequantized(weights, pol, pq); err != nil {
			return nil, err
		}
	case weights == "":
		m.Source.NoData = true
		descs = m.Arch.Tensors()
	default:
		ck, err := safetensors.Open(weights)
		if err != nil {
			return nil, err
		}
		if hasQuantState(ck) {
			// 4-bit weights whose config.json does not say so (or is absent)
			ck.Close()
			pq = &arch.Prequantized{Method: "bitsandbytes"}
			if err := m.openPrequantized(weights, pol, pq); err != nil {
				return nil, err
			}
			break
		}
		m.ck = ck
		m.Source.Files = len(ck.Files)
		// In name order, across files: the order of a one-file checkpoint,
		// so that place finds every tensor's final offset certain when it
		// arrives (a sharded source's files each start again at "lm_head",
		// "model.layers.0", ...), and so that place's shards hold runs of
		// names.
		m.infos = ck.TensorsByName()
		for _, ti := range m.infos {
			descs = append(descs, arch.Desc{Name: ti.Name, DType: string(ti.DType), Shape: ti.Shape})
		}
	}
	if m.qck == nil {
		m.Tensors = arch.Annotate(descs, pol)
		if pq != nil { // a config alone: what the checkpoint it describes holds
			arch.KeepSkipModules(m.Tensors, pq)
		}
		if m.Arch != nil {
			arch.KeepF32Tensors(m.Tensors, m.Arch.Family)
		}
	}
	m.Facts = arch.Summarize(m.Arch, m.Tensors)
	m.Facts.SourceDType = dominantDType(m.Tensors)
	m.Facts.Prequantized = pq
	if m.qck != nil {
		m.Facts.Bytes.Source = m.PayloadBytes() // what is stored, not 16 bits a weight
	}
	return m, nil
}

func hasWeights(dir string) bool {
	for _, n := range []string{safetensors.IndexFileName, safetensors.SingleFileName} {
		if _, err := os.Stat(filepath.Join(dir, n)); err == nil {
			return true
		}
	}
	found, _ := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	return len(found) > 0
}

// otherWeights names a weights file of another format in dir (PyTorch's
// pickles, GGUF), "" when there is none.
func otherWeights(dir string) string {
	for _, pat := range []string{"pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "*.gguf"} {
		if found, _ := filepath.Glob(filepath.Join(dir, pat)); len(found) > 0 {
			return filepath.Base(found[0])
		}
	}
	return ""
}

func readConfig(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("%s: %w: %v", path, ErrConfig, withoutPath(err))
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigSize+1))
	if err != nil {
		return nil, fmt.Errorf("%s: %w: %v", path, ErrConfig, withoutPath(err))
	}
	if len(data) > maxConfigSize {
		return nil, fmt.Errorf("%s: %w: larger than %d bytes", path, ErrConfig, maxConfigSize)
	}
	return data, nil
}

// withoutPath returns what went wrong in err without the path an *fs.PathError
// repeats ("permission denied", not "open /x/config.json: permission denied"):
// the messages here name the path first.
func withoutPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// dominantDType returns the dtype holding the most bytes among the weights.
func dominantDType(ts []arch.Tensor) string {
	by := map[string]int64{}
	best := ""
	for _, t := range ts {
		if t.Role == arch.RoleScale {
			continue
		}
		by[t.DType] += t.Elements() * int64(dtype.DType(t.DType).Size())
		if best == "" || by[t.DType] > by[best] {
			best = t.DType
		}
	}
	return best
}

// PayloadBytes is the bytes of tensor data Stream reads from the checkpoint;
// 0 for a config alone.
func (m *Model) PayloadBytes() int64 {
	var n int64
	for _, t := range m.qts {
		n += t.Size
	}
	for _, ti := range m.infos {
		n += ti.Size()
	}
	return n
}

// Close releases the checkpoint's files.
func (m *Model) Close() error {
	if m.qck != nil {
		return m.qck.Close()
	}
	if m.ck != nil {
		return m.ck.Close()
	}
	return nil
}

// Descriptor returns the stream descriptor of tensor i with its annotations.
func (m *Model) Descriptor(i int) (*tensorstream.Tensor, error) {
	t := m.Tensors[i]
	d := &tensorstream.Tensor{Name: t.Name, DType: tensorstream.DType(t.DType),
		Shape: append([]int64(nil), t.Shape...), Encoding: tensorstream.Raw,
		Size: t.Elements() * int64(dtype.DType(t.DType).Size()), NoData: m.ck == nil && m.qck == nil}
	switch {
	case m.qck != nil:
		d = m.qts[i].Clone() // bnb4 with its quant state, nested offset included
	case m.ck != nil:
		d.Size = m.infos[i].Size()
	}
	for k, v := range map[string]any{tensorstream.AnnRole: t.Role, tensorstream.AnnLayer: t.Layer,
		tensorstream.AnnQuantize: t.Quantize, tensorstream.AnnReason: t.Reason} {
		if err := d.SetAnn(k, v); err != nil {
			return nil, err
		}
	}
	if t.Store != "" {
		if err := d.SetAnn(tensorstream.AnnStore, t.Store); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// Stream writes the header (sections "source", "model" and, with weights,
// "tensors") and every tensor, payloads read in chunks from the checkpoint
// (spliced when w is a pipe), to w. stage is recorded in the header's stage
// list.
func (m *Model) Stream(w io.Writer, stage tensorstream.Stage) error {
	h := &tensorstream.Header{}
	h.AddStage(stage.Name, stage.Version, stage.Args)
	if err := sections.SetSource(h, &m.Source); err != nil {
		return err
	}
	if err := sections.SetModel(h, m.Facts); err != nil {
		return err
	}
	if m.ck != nil || m.qck != nil {
		// Announced, so that place can write each payload to its final place.
		ds := make([]*tensorstream.Tensor, len(m.Tensors))
		for i := range m.Tensors {
			d, err := m.Descriptor(i)
			if err != nil {
				return err
			}
			ds[i] = d
		}
		if _, err := sections.SetTensors(h, ds); err != nil {
			return err
		}
	}
	sw := tensorstream.NewWriter(w)
	if err := sw.WriteHeader(h); err != nil {
		return err
	}
	if m.ck != nil || m.qck != nil {
		progress.Or(m.Progress).Expect(len(m.Tensors), m.PayloadBytes())
	}
	for i := range m.Tensors {
		d, err := m.Descriptor(i)
		if err != nil {
			return err
		}
		if err := sw.WriteTensor(d); err != nil {
			return err
		}
		if m.qck != nil {
			progress.Or(m.Progress).Tensor(d.Name)
			if err := m.copyPrequantized(sw, i); err != nil {
				return err
			}
			continue
		}
		if m.ck == nil {
			continue
		}
		progress.Or(m.Progress).Tensor(d.Name)
		if err := m.writePayload(sw, i); err != nil {
			return fmt.Errorf("%s: tensor %q: %w", m.infos[i].File, d.Name, err)
		}
	}
	return sw.Close()
}

// payloadPiece is how much of a tensor's payload Stream hands the writer at a
// time, so that progress moves within large tensors. A multiple of the chunk
// size, so that every piece is whole chunks the writer may splice.
const payloadPiece = 16 * tensorstream.DefaultChunkSize

// writePayload writes tensor i's payload from its file: by WriteFrom, which
// splices it from the page cache when the stream goes to a pipe.
func (m *Model) writePayload(sw *tensorstream.Writer, i int) error {
	src, off, n := m.ck.Section(m.infos[i]).Outer()
	for n > 0 {
		k := min(n, payloadPiece)
		if err := sw.WriteFrom(src, off, k); err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				// The header was checked against the file's size at Open.
				return fmt.Errorf("%w: the file shrank while being read: %v", safetensors.ErrTruncated, err)
			}
			return err
		}
		progress.Or(m.Progress).Add(k)
		off, n = off+k, n-k
	}
	return nil
}
