package detect

import (
	"bytes"
	"encoding/json"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// tinyModels: every tiny model with a transformers-written 4-bit checkpoint,
// those in testdata/models (never skipped) first.
var tinyModels = append(append([]string(nil), fixtures.RepoModels...), fixtures.SharedModels...)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// fileCRCs computes the CRC-32C of each tensor's bytes straight from the file,
// independently of pkg/safetensors' sections: header length, JSON, offsets.
func fileCRCs(t *testing.T, path string) map[string]uint32 {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n := int64(0)
	for i := 7; i >= 0; i-- {
		n = n<<8 | int64(data[i])
	}
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(data[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint32{}
	for name, raw := range hdr {
		if name == "__metadata__" {
			continue
		}
		var ti struct {
			Offsets [2]int64 `json:"data_offsets"`
		}
		if err := json.Unmarshal(raw, &ti); err != nil {
			t.Fatal(err)
		}
		out[name] = crc32.Checksum(data[8+n+ti.Offsets[0]:8+n+ti.Offsets[1]], castagnoli)
	}
	return out
}

type streamed struct {
	header  *tensorstream.Header
	source  Source
	facts   arch.Facts
	tensors []*tensorstream.Tensor
	crcs    map[string]uint32
}

func readStream(t *testing.T, r io.Reader) *streamed {
	t.Helper()
	sr := tensorstream.NewReader(r)
	h, err := sr.Header()
	if err != nil {
		t.Fatal(err)
	}
	s := &streamed{header: h, crcs: map[string]uint32{}}
	if ok, err := h.Get(tensorstream.SectionSource, &s.source); !ok || err != nil {
		t.Fatalf("source section: %v %v", ok, err)
	}
	if ok, err := h.Get(tensorstream.SectionModel, &s.facts); !ok || err != nil {
		t.Fatalf("model section: %v %v", ok, err)
	}
	for {
		tt, err := sr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		c := crc32.New(castagnoli)
		if _, err := io.Copy(c, sr); err != nil {
			t.Fatal(err)
		}
		s.crcs[tt.Name] = c.Sum32()
		if tt.Checksum != c.Sum32() {
			t.Fatalf("%s: trailer checksum %08x, payload %08x", tt.Name, tt.Checksum, c.Sum32())
		}
		s.tensors = append(s.tensors, tt)
	}
	return s
}

func streamModel(t *testing.T, path string, pol arch.Policy) *streamed {
	t.Helper()
	m, err := Open(path, pol)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var buf bytes.Buffer
	if err := m.Stream(&buf, tensorstream.Stage{Name: "detect", Version: "test"}); err != nil {
		t.Fatal(err)
	}
	return readStream(t, &buf)
}

func bnbQuantized(t *testing.T, name string) map[string]bool {
	ck, err := safetensors.Open(fixtures.Model(t, name+"-bnb-nf4"))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out := map[string]bool{}
	for _, ti := range ck.Tensors() {
		if base, ok := strings.CutSuffix(ti.Name, ".quant_state.bitsandbytes__nf4"); ok {
			out[base] = true
		}
	}
	return out
}

func TestTinyModelsStream(t *testing.T) {
	for _, name := range tinyModels {
		t.Run(name, func(t *testing.T) {
			dir := fixtures.Model(t, name)
			s := streamModel(t, dir, arch.Policy{})
			want := fileCRCs(t, filepath.Join(dir, "model.safetensors"))
			if len(s.tensors) != len(want) || s.facts.Tensors != len(want) {
				t.Fatalf("%d tensors streamed, facts say %d, file has %d", len(s.tensors), s.facts.Tensors, len(want))
			}
			for n, c := range want {
				if s.crcs[n] != c {
					t.Errorf("%s: streamed CRC-32C %08x, file bytes %08x", n, s.crcs[n], c)
				}
			}
			cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
			if !bytes.Equal(s.source.Config, cfg) || s.source.Dir != dir || s.source.NoData {
				t.Errorf("source section: dir %q nodata %v config %d bytes", s.source.Dir, s.source.NoData, len(s.source.Config))
			}
			// Policy in the stream equals what transformers stored 4-bit.
			bnb := bnbQuantized(t, name)
			var nq int
			for _, tt := range s.tensors {
				q := tt.AnnBool(tensorstream.AnnQuantize)
				if q != bnb[tt.Name] {
					t.Errorf("%s: quantize=%v, transformers: %v", tt.Name, q, bnb[tt.Name])
				}
				if q {
					nq++
				}
				if tt.AnnString(tensorstream.AnnRole) == "" || tt.AnnString(tensorstream.AnnReason) == "" {
					t.Errorf("%s: missing role or reason", tt.Name)
				}
				if _, ok := tt.AnnInt(tensorstream.AnnLayer); !ok {
					t.Errorf("%s: missing layer", tt.Name)
				}
			}
			if nq != len(bnb) || s.facts.QuantizedTensors != nq {
				t.Errorf("quantized %d, facts %d, transformers %d", nq, s.facts.QuantizedTensors, len(bnb))
			}

			// The config alone gives the same descriptors and counts.
			c := streamModel(t, filepath.Join(dir, "config.json"), arch.Policy{})
			if !c.source.NoData || c.facts.Params != s.facts.Params || c.facts.Bytes != s.facts.Bytes {
				t.Errorf("config-only facts %+v %+v, weights %+v %+v", c.facts.Params, c.facts.Bytes, s.facts.Params, s.facts.Bytes)
			}
			byName := map[string]*tensorstream.Tensor{}
			for _, tt := range s.tensors {
				byName[tt.Name] = tt
			}
			for _, ct := range c.tensors {
				wt := byName[ct.Name]
				if !ct.NoData || wt == nil || ct.Size != wt.Size || ct.DType != wt.DType ||
					ct.AnnBool(tensorstream.AnnQuantize) != wt.AnnBool(tensorstream.AnnQuantize) {
					t.Errorf("%s: config-only descriptor differs from the weights' one", ct.Name)
				}
			}
			if len(c.tensors) != len(s.tensors) {
				t.Errorf("config-only %d tensors, weights %d", len(c.tensors), len(s.tensors))
			}
		})
	}
}

// TestRepoConfigOnly runs without the shared data, on the repository's copies.
func TestRepoConfigOnly(t *testing.T) {
	s := streamModel(t, fixtures.Path(t, "configs", "meta-llama__Llama-3.1-8B.json"), arch.Policy{})
	if s.facts.Params.Total != 8_030_261_248 || s.facts.Family != "llama" || len(s.tensors) != 291 {
		t.Fatalf("total %d family %s tensors %d", s.facts.Params.Total, s.facts.Family, len(s.tensors))
	}
	// 7 linears x 32 layers quantized; lm_head and embeddings kept.
	if s.facts.QuantizedTensors != 224 || s.facts.Params.Kept != 2*128256*4096+65*4096 {
		t.Fatalf("quantized %d, kept %d", s.facts.QuantizedTensors, s.facts.Params.Kept)
	}
	for _, tt := range s.tensors {
		if !tt.NoData || s.crcs[tt.Name] != 0 {
			t.Fatalf("%s: config-only tensor with data", tt.Name)
		}
	}
}

func copyDir(t *testing.T, src string) string {
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func TestHostileInputs(t *testing.T) {
	tiny := fixtures.Path(t, "configs", "tiny-llama.json")
	cfg, _ := os.ReadFile(tiny)
	write := func(dir, name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct {
		name  string
		setup func(dir string) string
		want  error
	}{
		{"missing path", func(dir string) string { return filepath.Join(dir, "nope") }, ErrInput},
		{"empty dir", func(dir string) string { return dir }, ErrInput},
		{"invalid config", func(dir string) string { write(dir, "config.json", "{not json"); return dir }, arch.ErrConfig},
		{"config bad dims", func(dir string) string {
			write(dir, "config.json", `{"model_type":"llama","hidden_size":-1}`)
			return dir
		}, arch.ErrShape},
		{"missing shard", func(dir string) string {
			write(dir, "config.json", string(cfg))
			write(dir, "model.safetensors.index.json",
				`{"metadata":{},"weight_map":{"model.embed_tokens.weight":"model-00001-of-00002.safetensors"}}`)
			return dir
		}, safetensors.ErrMissingShard},
		{"truncated weights", func(dir string) string {
			write(dir, "config.json", string(cfg))
			write(dir, "model.safetensors", "\x40\x00\x00\x00\x00\x00\x00\x00{")
			return dir
		}, safetensors.ErrTruncated},
		{"garbage header", func(dir string) string {
			write(dir, "model.safetensors", "\x02\x00\x00\x00\x00\x00\x00\x00[]")
			return dir
		}, safetensors.ErrHeader},
		{"bad pattern", nil, arch.ErrPattern},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if c.setup == nil {
				_, err := Open(tiny, arch.Policy{Only: []string{"[x"}})
				if !errors.Is(err, c.want) {
					t.Fatalf("err %v, want %v", err, c.want)
				}
				return // the command's status for it: cmd/detect and e2e
			}
			path := c.setup(t.TempDir())
			_, err := Open(path, arch.Policy{})
			if !errors.Is(err, c.want) {
				t.Fatalf("err %v, want errors.Is %v", err, c.want)
			}
		})
	}
}

// TestWeightsWithoutConfig: a weights file alone, its config.json gone, gets
// the fallback facts and, for every in-repo family, the quantization choices
// transformers made with the config.
func TestWeightsWithoutConfig(t *testing.T) {
	for _, name := range fixtures.RepoModels {
		t.Run(name, func(t *testing.T) {
			dir := copyDir(t, fixtures.Model(t, name))
			layers := 2
			if name == "mllama" {
				layers = 4 // the fixture's cross-attention layer needs layers on either side
			}
			require.NoError(t, os.Remove(filepath.Join(dir, "config.json")))
			s := streamModel(t, filepath.Join(dir, "model.safetensors"), arch.Policy{})
			assert.True(t, s.facts.Fallback, "fallback")
			assert.Nil(t, s.source.Config)
			assert.EqualValues(t, layers, s.facts.Layers)
			bnb := bnbQuantized(t, name)
			for _, tt := range s.tensors {
				assert.Equal(t, bnb[tt.Name], tt.AnnBool(tensorstream.AnnQuantize), "%s: quantize without config", tt.Name)
			}
		})
	}
}

// TestFileCutWhileStreaming: a weights file truncated after Open (its header
// still claims the data) fails Stream with one line naming the file and the
// tensor, on a pipe (the payload spliced, on Linux) and into a buffer.
func TestFileCutWhileStreaming(t *testing.T) {
	for _, to := range []string{"buffer", "pipe"} {
		t.Run(to, func(t *testing.T) {
			dir := copyDir(t, fixtures.Shared(t, "models", "llama"))
			m, err := Open(dir, arch.Policy{})
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			weights := filepath.Join(dir, "model.safetensors")
			st, err := os.Stat(weights)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(weights, st.Size()/2); err != nil {
				t.Fatal(err)
			}
			stage := tensorstream.Stage{Name: "detect", Version: "test"}
			if to == "buffer" {
				err = m.Stream(io.Discard, stage)
			} else {
				pr, pw, perr := os.Pipe()
				if perr != nil {
					t.Fatal(perr)
				}
				go io.Copy(io.Discard, pr)
				err = m.Stream(pw, stage)
				pw.Close()
			}
			if !errors.Is(err, safetensors.ErrTruncated) {
				t.Fatalf("err %v, want errors.Is safetensors.ErrTruncated", err)
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, weights+": tensor ") || strings.Contains(msg, "\n") {
				t.Errorf("message %q: want one line starting with the file and the tensor", msg)
			}
		})
	}
}
