package verify

import (
	"bytes"
	"encoding/binary"
	"errors"
	"github.com/stretchr/testify/require"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// models: every tiny model with a transformers-written 4-bit fixture, those
// in the repository first (they never skip).
var models = append(append([]string(nil), fixtures.RepoModels...), fixtures.SharedModels...)

// streamOf returns the checkpoint at dir as a stream, as place passes it on.
func streamOf(t testing.TB, dir string) []byte {
	t.Helper()
	ck, err := checkpoint.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	var b bytes.Buffer
	require.NoError(t, ck.WriteStream(tensorstream.NewWriter(&b), nil))
	return b.Bytes()
}

// stFile is a safetensors file held in memory, to corrupt.
type stFile struct {
	tensors []safetensors.Tensor
	meta    map[string]string
}

func readST(t testing.TB, path string) *stFile {
	t.Helper()
	f, err := safetensors.OpenFile(path)
	require.NoError(t, err)
	defer f.Close()
	s := &stFile{meta: f.Metadata}
	for _, ti := range f.Tensors {
		data, err := f.ReadTensor(ti.Name)
		require.NoError(t, err)
		s.tensors = append(s.tensors, safetensors.Tensor{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Data: data})
	}
	return s
}

func (s *stFile) get(t testing.TB, name string) *safetensors.Tensor {
	for i := range s.tensors {
		if s.tensors[i].Name == name {
			return &s.tensors[i]
		}
	}
	t.Fatalf("no tensor %q", name)
	return nil
}

func (s *stFile) remove(name string) {
	for i := range s.tensors {
		if s.tensors[i].Name == name {
			s.tensors = append(s.tensors[:i], s.tensors[i+1:]...)
			return
		}
	}
}

// copyModel copies the fixture model dir into a temporary directory after
// letting edit change its model.safetensors.
func copyModel(t *testing.T, name string, edit func(*stFile)) string {
	t.Helper()
	src := fixtures.Model(t, name)
	dst := filepath.Join(t.TempDir(), name)
	require.NoError(t, os.Mkdir(dst, 0o755))
	entries, _ := os.ReadDir(src)
	for _, e := range entries {
		if e.Name() == safetensors.SingleFileName {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644))
	}
	s := readST(t, filepath.Join(src, safetensors.SingleFileName))
	if edit != nil {
		edit(s)
	}
	require.NoError(t, safetensors.WriteFile(filepath.Join(dst, safetensors.SingleFileName), s.tensors, s.meta))
	return dst
}

// bf16 encodes values as BF16 bytes (truncating: these are test inputs).
func bf16(x []float32) []byte {
	b := make([]byte, 2*len(x))
	for i, v := range x {
		binary.LittleEndian.PutUint16(b[2*i:], uint16(math.Float32bits(v)>>16))
	}
	return b
}

// gaussian returns n N(0, sigma²) values, deterministic for a seed.
func gaussian(n int, sigma float64, seed uint64) []float32 {
	r := rand.New(rand.NewPCG(seed, 1))
	x := make([]float32, n)
	for i := range x {
		x[i] = float32(r.NormFloat64() * sigma)
	}
	return x
}

// synthTensor is one tensor of a synthetic model: its reference values and
// its quantization by pkg/quant.
type synthTensor struct {
	name  string
	shape []int64
	ref   []byte // BF16
	q     *quant.Quantized
}

func synth(t testing.TB, name string, shape []int64, x []float32, p quant.Params) synthTensor {
	t.Helper()
	ref := bf16(x)
	q, err := quant.Quantize(ref, quant.BF16, p, quant.CPU(1))
	require.NoError(t, err)
	return synthTensor{name, shape, ref, q}
}

// writeSynth writes the reference model file and the stream of the tensors.
func writeSynth(t testing.TB, dir string, ts []synthTensor) (refPath string, stream []byte) {
	t.Helper()
	var st []safetensors.Tensor
	var b bytes.Buffer
	w := tensorstream.NewWriter(&b)
	require.NoError(t, w.WriteHeader(&tensorstream.Header{}))
	for _, s := range ts {
		st = append(st, safetensors.Tensor{Name: s.name, DType: safetensors.BF16, Shape: s.shape, Data: s.ref})
		q := s.q
		desc := &tensorstream.Tensor{Name: s.name, DType: tensorstream.BF16, Shape: s.shape, Encoding: tensorstream.BNB4,
			Quant: &tensorstream.QuantState{Type: string(q.Params.Type), BlockSize: q.Params.BlockSize, DoubleQuant: q.Params.DoubleQuant}}
		if q.Params.DoubleQuant {
			desc.Quant.NestedBlockSize = quant.NestedBlockSize
		}
		desc.Size = desc.ExpectedSize()
		require.NoError(t, w.WriteTensor(desc))
		desc.Quant.NestedOffset = q.NestedOffset
		for _, p := range [][]byte{q.Packed, q.Absmax, q.Nested} {
			_, err := w.Write(p)
			require.NoError(t, err)
		}
	}
	require.NoError(t, w.Close())
	refPath = filepath.Join(dir, "ref.safetensors")
	require.NoError(t, safetensors.WriteFile(refPath, st, nil))
	return refPath, b.Bytes()
}

// statusOf is the exit status cmd/verify gives err: 6, 7 or 3 by sentinel.
func statusOf(err error) int {
	switch {
	case err == nil:
		return 0
	case errors.Is(err, ErrIntegrity):
		return 6
	case errors.Is(err, ErrQuality):
		return 7
	case errors.Is(err, ErrInput):
		return 3
	}
	return 1
}
