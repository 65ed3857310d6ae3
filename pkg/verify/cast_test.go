package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"github.com/stretchr/testify/require"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/detect"
	"github.com/nf4pipe/nf4pipe/pkg/place"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/quantize"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// castSpecials are F32 values whose narrowing exercises every rule of the
// cast: NaNs with payloads and signs, infinities, overflow, ties, F16
// subnormals and underflow.
var castSpecials = []uint32{
	0x7FC00000, 0xFFC00001, 0x7F800001, 0xFFA12345, // NaNs: quiet, signed, signalling, payload
	0x7F800000, 0xFF800000, // ±Inf
	0x477FF000, 0x7F7FFFFF, // rounds to F16 Inf, to BF16 Inf
	0x3F808000, 0x3F818000, // BF16 ties (to even: down, up)
	0x3F801000, 0x3F803000, // F16 ties
	0x33800000, 0x33000000, 0x33000001, 0x80000001, // F16 smallest subnormal, half of it, just above, -tiny
}

// mixedLlama writes the repo's tiny llama with its kept tensors in three
// dtypes: the norms in F32 (the BF16 values nudged off the BF16 grid, the
// first one holding castSpecials), the embedding in F16, the rest in BF16.
func mixedLlama(t *testing.T) string {
	t.Helper()
	src := fixtures.Path(t, "models", "llama")
	dir := filepath.Join(t.TempDir(), "llama-mixed")
	require.NoError(t, os.Mkdir(dir, 0o755))
	for _, f := range []string{"config.json", "generation_config.json"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		require.NoError(t, err)
		require.NoError(t, os.WriteFile(filepath.Join(dir, f), b, 0o644))
	}
	s := readST(t, filepath.Join(src, safetensors.SingleFileName))
	specials := true
	for i := range s.tensors {
		st := &s.tensors[i]
		if st.DType != safetensors.BF16 {
			t.Fatalf("%s: %s, the fixture was all BF16", st.Name, st.DType)
		}
		n := len(st.Data) / 2
		val := func(j int) float32 { return quant.BF16ToF32(binary.LittleEndian.Uint16(st.Data[2*j:])) }
		switch {
		case strings.HasSuffix(st.Name, "norm.weight"):
			b := make([]byte, 4*n)
			for j := range n {
				bits := math.Float32bits(val(j)) | uint32(j*2654435761)>>16 // low bits: off the grid
				if specials && j < len(castSpecials) {
					bits = castSpecials[j]
				}
				binary.LittleEndian.PutUint32(b[4*j:], bits)
			}
			if specials && n < len(castSpecials) {
				t.Fatalf("%s: %d elements, too few for the specials", st.Name, n)
			}
			specials = false
			st.DType, st.Data = safetensors.F32, b
		case strings.HasSuffix(st.Name, "embed_tokens.weight"):
			b := make([]byte, 2*n)
			for j := range n {
				binary.LittleEndian.PutUint16(b[2*j:], quant.F32ToF16(val(j)))
			}
			st.DType, st.Data = safetensors.F16, b
		}
	}
	require.NoError(t, safetensors.WriteFile(filepath.Join(dir, safetensors.SingleFileName), s.tensors, s.meta))
	return dir
}

// castPipeline is detect MODEL | quantize --cast to, in-process.
func castPipeline(t *testing.T, model string, to tensorstream.DType) []byte {
	t.Helper()
	m, err := detect.Open(model, arch.Policy{})
	require.NoError(t, err)
	defer m.Close()
	var det, out bytes.Buffer
	require.NoError(t, m.Stream(&det, tensorstream.Stage{Name: "detect", Version: "test"}))
	o := quantize.DefaultOptions()
	o.Device, o.Cast = "cpu", to
	if _, err := quantize.Run(&det, &out, o); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// placeStream is place --out DIR.
func placeStream(t *testing.T, stream []byte) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "nf4")
	if _, err := place.Place(context.Background(), bytes.NewReader(stream), place.Options{Out: dir}); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestCastPipeline: detect | quantize --cast T | place verifies clean for
// every target, as a stream, a checkpoint and both, and the report names the
// casts.
func TestCastPipeline(t *testing.T) {
	ref := mixedLlama(t)
	for _, to := range []tensorstream.DType{tensorstream.BF16, tensorstream.F16, tensorstream.F32} {
		t.Run(string(to), func(t *testing.T) {
			stream := castPipeline(t, ref, to)
			ck := placeStream(t, stream)
			for _, o := range []Options{
				{Stream: bytes.NewReader(stream)},
				{Checkpoint: ck},
				{Stream: bytes.NewReader(stream), Checkpoint: ck},
			} {
				o.Reference = ref
				rep, err := Run(o)
				require.NoError(t, err)
				if err := rep.Err(); err != nil {
					t.Fatalf("stream %v checkpoint %v: %v", o.Stream != nil, o.Checkpoint != "", err)
				}
				casts := map[string]int{}
				for _, r := range rep.Tensors {
					if r.CastFrom != "" {
						if r.DType != string(to) || r.CastFrom == r.DType || r.Status != StatusOK {
							t.Errorf("%s: %+v", r.Name, r)
						}
						casts[r.CastFrom+"→"+r.DType]++
					}
				}
				// the fixture's kept tensors: 2 layers × 2 norms + the final
				// norm in F32, the embedding in F16, lm_head in BF16
				want := map[string]int{}
				for from, n := range map[string]int{"F32": 5, "F16": 1, "BF16": 1} {
					if from != string(to) {
						want[from+"→"+string(to)] = n
					}
				}
				if fmt.Sprint(casts) != fmt.Sprint(want) {
					t.Errorf("casts %v, want %v", casts, want)
				}
				var table bytes.Buffer
				require.NoError(t, rep.WriteTable(&table))
				for c := range want {
					if !strings.Contains(table.String(), "cast "+c) {
						t.Errorf("table does not say %q:\n%s", "cast "+c, table.String())
					}
				}
			}
		})
	}
}

// TestCastFlippedByte: a cast tensor one bit off the cast of the reference is
// an integrity failure, wherever the bit is.
func TestCastFlippedByte(t *testing.T) {
	ref := mixedLlama(t)
	for _, to := range []tensorstream.DType{tensorstream.BF16, tensorstream.F16, tensorstream.F32} {
		ck := placeStream(t, castPipeline(t, ref, to))
		path := filepath.Join(ck, safetensors.SingleFileName)
		orig := readST(t, path)
		for _, c := range []struct {
			name string
			byte int
		}{
			{"model.layers.0.input_layernorm.weight", 0}, // the first NaN
			{"model.layers.0.input_layernorm.weight", 9}, // among the specials
			{"model.norm.weight", 6},
			{"model.embed_tokens.weight", 1000},
		} {
			s := readST(t, path)
			st := s.get(t, c.name)
			if st.DType != safetensors.DType(to) {
				t.Fatalf("%s is %s after --cast %s", c.name, st.DType, to)
			}
			st.Data[c.byte] ^= 1
			require.NoError(t, safetensors.WriteFile(path, s.tensors, s.meta))
			rep, err := Run(Options{Checkpoint: ck, Reference: ref})
			require.NoError(t, err)
			f := rep.Findings
			if !errors.Is(rep.Err(), ErrIntegrity) || len(f) != 1 || f[0].Kind != KindKeptBytes || f[0].Tensor != c.name ||
				!strings.Contains(f[0].Detail+" ", fmt.Sprintf("at byte %d ", c.byte)) {
				t.Errorf("--cast %s, %s byte %d flipped: %v", to, c.name, c.byte, f)
			}
			require.NoError(t, safetensors.WriteFile(path, orig.tensors, orig.meta))
		}
	}
}

// TestDTypeChangeNotACast: a change of dtype to or from an integer type is an
// integrity failure even when the values would convert.
func TestDTypeChangeNotACast(t *testing.T) {
	for _, c := range []struct{ ref, got tensorstream.DType }{
		{tensorstream.I32, tensorstream.I64},
		{tensorstream.I32, tensorstream.F32},
		{tensorstream.F32, tensorstream.I32},
		{tensorstream.BF16, tensorstream.I16},
	} {
		refPath := filepath.Join(t.TempDir(), "ref.safetensors")
		data := func(dt tensorstream.DType) []byte { return make([]byte, 8*dt.Size()) } // zeros: equal in any type
		require.NoError(t, safetensors.WriteFile(refPath, []safetensors.Tensor{{Name: "ids", DType: safetensors.DType(c.ref), Shape: []int64{8}, Data: data(c.ref)}}, nil))
		var b bytes.Buffer
		w := tensorstream.NewWriter(&b)
		p := data(c.got)
		require.NoError(t, w.WriteHeader(&tensorstream.Header{}))
		require.NoError(t, w.WriteTensor(&tensorstream.Tensor{Name: "ids", DType: c.got, Shape: []int64{8}, Encoding: tensorstream.Raw, Size: int64(len(p))}))
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		require.NoError(t, w.Close())
		rep, err := Run(Options{Stream: &b, Reference: refPath})
		require.NoError(t, err)
		if f := rep.Findings; !errors.Is(rep.Err(), ErrIntegrity) || len(f) != 1 || f[0].Kind != KindDType {
			t.Errorf("%s → %s: %v", c.ref, c.got, f)
		}
	}
}

// TestCastChunks: a cast tensor longer than a chunk is compared whole, and a
// difference in a later chunk is located.
func TestCastChunks(t *testing.T) {
	n := rawChunk/4 + 3 // F32 reference: the last 3 elements fall in a second chunk
	x := gaussian(n, 1, 7)
	ref := make([]byte, 4*n)
	for i, v := range x {
		binary.LittleEndian.PutUint32(ref[4*i:], math.Float32bits(v))
	}
	refPath := filepath.Join(t.TempDir(), "ref.safetensors")
	require.NoError(t, safetensors.WriteFile(refPath, []safetensors.Tensor{{Name: "w", DType: safetensors.F32, Shape: []int64{int64(n)}, Data: ref}}, nil))
	cast := quantize.Cast(make([]byte, 2*n), ref, tensorstream.F32, tensorstream.BF16)
	streamOfCast := func(p []byte) *bytes.Buffer {
		var b bytes.Buffer
		w := tensorstream.NewWriter(&b)
		require.NoError(t, w.WriteHeader(&tensorstream.Header{}))
		require.NoError(t, w.WriteTensor(&tensorstream.Tensor{Name: "w", DType: tensorstream.BF16, Shape: []int64{int64(n)}, Encoding: tensorstream.Raw, Size: int64(len(p))}))
		if _, err := w.Write(p); err != nil {
			t.Fatal(err)
		}
		require.NoError(t, w.Close())
		return &b
	}
	rep, err := Run(Options{Stream: streamOfCast(cast), Reference: refPath})
	if err != nil || rep.Err() != nil || rep.Tensors[0].CastFrom != "F32" {
		t.Fatalf("%v %v %+v", err, rep.Err(), rep.Tensors)
	}
	at := 2*n - 3 // second chunk, element n-2
	cast[at] ^= 0x80
	rep, err = Run(Options{Stream: streamOfCast(cast), Reference: refPath})
	require.NoError(t, err)
	if f := rep.Findings; len(f) != 1 || f[0].Kind != KindKeptBytes ||
		!strings.HasSuffix(f[0].Detail, fmt.Sprintf("at byte %d (element %d)", at, n-2)) {
		t.Fatalf("%v", f)
	}
}
