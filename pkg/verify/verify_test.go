package verify

import (
	"bytes"
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestFixtureCheckpoints validates the transformers-written checkpoints
// against their source models: all must pass, every 4-bit tensor within a few
// percent of the Gaussian error (the tiny models' weights are normal).
func TestFixtureCheckpoints(t *testing.T) {
	for _, m := range models {
		t.Run(m, func(t *testing.T) {
			rep, err := Run(Options{Checkpoint: fixtures.Model(t, m+"-bnb-nf4"), Reference: fixtures.Model(t, m)})
			require.NoError(t, err)
			require.NoError(t, rep.Err())
			tt := rep.Totals
			require.NotZero(t, tt.Quantized, "quantized tensors")
			require.Equal(t, tt.Quantized, tt.Compared, "compared")
			require.Equal(t, tt.Tensors, tt.Kept+tt.Quantized, "kept + quantized")
			// 4.127 bits plus each tensor's constants, which weigh more in
			// the smallest fixtures (qwen2_moe's 64-element shared_expert_gate).
			assert.InDelta(t, 4.13, tt.BitsPerWeight, 0.01, "bits per weight, about 4.127")
			for _, r := range rep.Tensors {
				assert.Equal(t, StatusOK, r.Status, r.Name)
				// The error of a few hundred values drifts by several
				// percent from the Gaussian figure by chance alone.
				if r.Metrics != nil && r.Metrics.Elements >= 4096 {
					assert.InDelta(t, 1, r.Ratio, 0.05, "%s: error ratio to the Gaussian figure", r.Name)
					assert.GreaterOrEqual(t, r.Metrics.Cosine, 0.995, "%s: cosine", r.Name)
				}
			}
		})
	}
}

// TestStream verifies the stream a checkpoint becomes, with payloads spooled
// in memory and in a file; both give the checkpoint's own figures.
func TestStream(t *testing.T) {
	ck, ref := fixtures.Model(t, "llama-bnb-nf4"), fixtures.Model(t, "llama")
	want, err := Run(Options{Checkpoint: ck, Reference: ref})
	require.NoError(t, err)
	stream := streamOf(t, ck)
	for _, mem := range []int64{0, 1} {
		rep, err := Run(Options{Stream: bytes.NewReader(stream), Reference: ref, SpoolMemory: mem, SpoolDir: t.TempDir()})
		require.NoError(t, err)
		require.NoError(t, rep.Err())
		require.True(t, slices.EqualFunc(rep.Tensors, want.Tensors, func(a, b TensorResult) bool {
			return a.Name == b.Name && a.Status == b.Status && (a.Metrics == nil) == (b.Metrics == nil) && (a.Metrics == nil || *a.Metrics == *b.Metrics)
		}), "spool %d: stream results differ from the checkpoint's", mem)
	}
	// without a reference: integrity only
	rep, err := Run(Options{Stream: bytes.NewReader(stream)})
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	assert.Zero(t, rep.Totals.Compared)
}

// TestRoundTrip: a checkpoint with the stream it was written from; gemma3's
// has QK-norm and a vision tower beside the 4-bit decoder.
func TestRoundTrip(t *testing.T) {
	const up = "language_model.model.layers.0.mlp.up_proj.weight"
	ck, ref := fixtures.Model(t, "gemma3-bnb-nf4"), fixtures.Model(t, "gemma3")
	stream := streamOf(t, ck)
	rep, err := Run(Options{Stream: bytes.NewReader(stream), Checkpoint: ck, Reference: ref})
	require.NoError(t, err)
	require.NoError(t, rep.Err())
	rt := rep.RoundTrip
	require.NotNil(t, rt)
	assert.Equal(t, len(rep.Tensors), rt.Tensors)
	assert.Equal(t, rt.Tensors, rt.Identical)
	// a checkpoint whose packed byte differs from the stream's
	bad := copyModel(t, "gemma3-bnb-nf4", func(s *stFile) { s.get(t, up).Data[100] ^= 0xff })
	rep, err = Run(Options{Stream: bytes.NewReader(stream), Checkpoint: bad})
	require.NoError(t, err)
	expectFinding(t, rep, KindRoundTrip, up, cli.ExitIntegrity)
}

func expectFinding(t *testing.T, rep *Report, kind, tensor string, status int) {
	t.Helper()
	require.True(t, slices.ContainsFunc(rep.Findings, func(f Finding) bool { return f.Kind == kind && (tensor == "" || f.Tensor == tensor) }),
		"no %s finding for %q among %v", kind, tensor, rep.Findings)
	require.Equal(t, status, statusOf(rep.Err()), "status (%v)", rep.Err())
}

// TestCorruption: each kind of damage to a copy of the tiny llama checkpoint
// is found, with the integrity status.
func TestCorruption(t *testing.T) {
	const w = "model.layers.0.self_attn.q_proj.weight"
	ref := fixtures.Model(t, "llama")
	setF32 := func(b []byte, i int, v float32) { binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v)) }
	cases := []struct {
		name, kind, tensor string
		edit               func(*stFile)
	}{
		{"flipped payload byte", KindCodes, w, func(s *stFile) { s.get(t, w).Data[1234] ^= 0xff }},
		{"quant state shape, same count", KindShape, w, func(s *stFile) {
			st := s.get(t, w+".quant_state.bitsandbytes__nf4")
			st.Data = bytes.Replace(st.Data, []byte(`"shape": [128, 128]`), []byte(`"shape": [64, 256]`), 1)
			st.Shape = []int64{int64(len(st.Data))}
		}},
		{"quant state shape, other count", KindQuantState, "", func(s *stFile) {
			st := s.get(t, w+".quant_state.bitsandbytes__nf4")
			st.Data = bytes.Replace(st.Data, []byte(`"shape": [128, 128]`), []byte(`"shape": [128, 64]`), 1)
			st.Shape = []int64{int64(len(st.Data))}
		}},
		{"missing tensor", KindMissing, "model.norm.weight", func(s *stFile) { s.remove("model.norm.weight") }},
		{"extra tensor", KindExtra, "model.extra.weight", func(s *stFile) {
			n := *s.get(t, "model.norm.weight")
			n.Name = "model.extra.weight"
			s.tensors = append(s.tensors, n)
		}},
		{"NaN nested absmax", KindAbsmax, w, func(s *stFile) { setF32(s.get(t, w+".nested_absmax").Data, 0, float32(math.NaN())) }},
		{"negative nested absmax", KindAbsmax, w, func(s *stFile) { setF32(s.get(t, w+".nested_absmax").Data, 0, -1) }},
		{"kept tensor changed", KindKeptBytes, "model.norm.weight", func(s *stFile) { s.get(t, "model.norm.weight").Data[7] ^= 1 }},
		{"non-standard quant_map", KindQuantState, "", func(s *stFile) { setF32(s.get(t, w+".quant_map").Data, 3, 0.5) }},
		{"absmax code changed", KindAbsmax, w, func(s *stFile) { s.get(t, w+".absmax").Data[5] ^= 0x80 }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := copyModel(t, "llama-bnb-nf4", c.edit)
			rep, err := Run(Options{Checkpoint: dir, Reference: ref})
			require.NoError(t, err)
			expectFinding(t, rep, c.kind, c.tensor, cli.ExitIntegrity)
			require.ErrorIs(t, rep.Err(), ErrIntegrity)
		})
	}
	// a flipped byte in a stream payload fails its checksum
	stream := streamOf(t, fixtures.Model(t, "llama-bnb-nf4"))
	i := bytes.Index(stream, []byte(w)) + 4096 // inside the first tensor after that name's descriptor
	stream[i] ^= 0xff
	rep, err := Run(Options{Stream: bytes.NewReader(stream), Reference: ref})
	require.NoError(t, err)
	expectFinding(t, rep, KindChecksum, "", cli.ExitIntegrity)
}

// TestQualityFlag: a heavy-tailed tensor quantizes correctly but far above the
// Gaussian envelope; it is flagged and named as worth keeping in 16 bits.
func TestQualityFlag(t *testing.T) {
	p := quant.Params{Type: quant.NF4, BlockSize: 64}
	normal := gaussian(128*256, 0.02, 5)
	outliers := gaussian(128*256, 0.02, 6)
	for i := 0; i < len(outliers); i += 97 { // about one outlier a block, 20 sigma
		outliers[i] = 0.4
	}
	dir := t.TempDir()
	ref, stream := writeSynth(t, dir, []synthTensor{
		synth(t, "normal.weight", []int64{128, 256}, normal, p),
		synth(t, "outlier.weight", []int64{128, 256}, outliers, quant.DefaultParams()),
	})
	rep, err := Run(Options{Stream: bytes.NewReader(stream), Reference: ref})
	require.NoError(t, err)
	require.Empty(t, rep.Findings)
	require.Equal(t, []string{"outlier.weight"}, rep.KeepIn16, "keep in 16 bits")
	require.Equal(t, StatusFlagged, rep.Tensors[0].Status, "worst %+v", rep.Tensors[0])
	require.Equal(t, cli.ExitQuality, statusOf(rep.Err()), "status (%v)", rep.Err())
	// a looser tolerance passes it
	rep, _ = Run(Options{Stream: bytes.NewReader(stream), Reference: ref, Tolerance: 10})
	require.NoError(t, rep.Err())
	var sb strings.Builder
	require.NoError(t, rep.WriteTable(&sb))
	assert.Contains(t, sb.String(), "outlier.weight")
}
