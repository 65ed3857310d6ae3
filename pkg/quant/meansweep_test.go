package quant

import (
	"encoding/binary"
	"errors"
	"math"
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// meanSweep is the sequence d of scripts/real-stack/torch_mean_sweep.py, bit for
// bit: positive float32 values like a tensor's absmax (0: full float32
// precision in [0.01, 0.1); 1: the same rounded to bfloat16; 2: heavy-tailed
// over 16 binades; 3: rounded to float16's 11 significant bits).
func meanSweep(d, n int) []float32 {
	mix := func(h uint32) uint32 {
		h *= 0x9E3779B1
		h ^= h >> 15
		h *= 0x85EBCA77
		h ^= h >> 13
		h *= 0xC2B2AE3D
		h ^= h >> 16
		return h
	}
	out := make([]float32, n)
	for i := range out {
		h := mix(uint32(uint64(i) + uint64(d)*0x01000193))
		h2 := mix(h ^ 0x5BD1E995)
		u := float32(h>>8) * float32(1.0/(1<<24))
		var v float32
		if d == 2 {
			v = (float32(1) + u) * float32(math.Ldexp(1, int(h2%16)-10))
		} else {
			v = float32(0.01) + float32(0.09)*u
		}
		b := math.Float32bits(v)
		switch d {
		case 1:
			b = (b + 0x7FFF + ((b >> 16) & 1)) & 0xFFFF0000
		case 3:
			b = (b + 0xFFF + ((b >> 13) & 1)) & 0xFFFFE000
		}
		out[i] = math.Float32frombits(b)
	}
	return out
}

// torchMean is one record of torch_mean_sweep.py's output: torch's float32
// mean and sum of the first N values of meanSweep(Dist).
type torchMean struct {
	Dist      int
	N         int
	Mean, Sum float32
}

func readTorchMeans(path string) ([]torchMean, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if len(b)%13 != 0 {
		return nil, errors.New("torch means: length not a multiple of 13")
	}
	recs := make([]torchMean, 0, len(b)/13)
	for ; len(b) > 0; b = b[13:] {
		recs = append(recs, torchMean{
			Dist: int(b[0]),
			N:    int(binary.LittleEndian.Uint32(b[1:])),
			Mean: math.Float32frombits(binary.LittleEndian.Uint32(b[5:])),
			Sum:  math.Float32frombits(binary.LittleEndian.Uint32(b[9:])),
		})
	}
	return recs, nil
}

// checkTorchMeans demands MeanF32 equal torch's mean, and its sum (MeanF32
// before the factor) equal torch's sum, for every record.
func checkTorchMeans(t *testing.T, recs []torchMean) {
	seqs := map[int][]float32{}
	for _, r := range recs {
		if len(seqs[r.Dist]) < r.N {
			seqs[r.Dist] = meanSweep(r.Dist, r.N)
		}
	}
	bad := 0
	for _, r := range recs {
		a := seqs[r.Dist][:r.N]
		got := MeanF32(a)
		if got != r.Mean {
			bad++
			if bad <= 10 {
				t.Errorf("dist %d n=%d: MeanF32 %v (%#08x), torch %v (%#08x), geometry %+v",
					r.Dist, r.N, got, math.Float32bits(got), r.Mean, math.Float32bits(r.Mean),
					MeanGeometryFor(int64(r.N), DefaultReduceGPU))
			}
		}
	}
	assert.Zero(t, bad, "offsets differing from torch's, of %d", len(recs))
}

// TestMeanF32Torch checks MeanF32 against torch 2.11's absmax.mean() on an
// H200: every count to 4096 (to 2048 for the heavy-tailed and float16
// sequences), a thinned band to 70,000 and a tenth of 300 random counts up to
// 2*10^7, each on the sequences above (13,824 of the 145,356 cases the device
// sweep checked; all of them matched).
func TestMeanF32Torch(t *testing.T) {
	recs, err := readTorchMeans("testdata/torchmean/h200-torch2.11.bin")
	require.NoError(t, err)
	require.Len(t, recs, 13824)
	checkTorchMeans(t, recs)
}

// TestMeanF32TorchSweep checks a whole sweep written on a GPU machine by
// scripts/real-stack/torch_mean_sweep.py (NF4PIPE_TORCH_MEANS=its torchmean.bin).
func TestMeanF32TorchSweep(t *testing.T) {
	path := os.Getenv("NF4PIPE_TORCH_MEANS")
	if path == "" {
		t.Skip("NF4PIPE_TORCH_MEANS is not set: the full sweep needs torch's output from a GPU machine (scripts/real-stack/torch_mean_sweep.py)")
	}
	recs, err := readTorchMeans(path)
	require.NoError(t, err)
	checkTorchMeans(t, recs)
}

func TestMeanGeometry(t *testing.T) {
	h100, a100 := DefaultReduceGPU, ReduceGPU{SMs: 108, ThreadsPerSM: 2048}
	for _, tc := range []struct {
		n    int64
		gpu  ReduceGPU
		want MeanGeometry
	}{
		{1, h100, MeanGeometry{Threads: 1, CTAs: 1}},
		{5, h100, MeanGeometry{Threads: 4, CTAs: 1}},
		{127, h100, MeanGeometry{Threads: 64, CTAs: 1}},
		{128, h100, MeanGeometry{Threads: 32, CTAs: 1, Vectorized: true}},
		{4096, h100, MeanGeometry{Threads: 512, CTAs: 1, Vectorized: true}},
		{131072, h100, MeanGeometry{Threads: 512, CTAs: 16, Vectorized: true}},
		{3670016, h100, MeanGeometry{Threads: 512, CTAs: 448, Vectorized: true}},
		{3670016, a100, MeanGeometry{Threads: 512, CTAs: 432, Vectorized: true}},
		{8208384, h100, MeanGeometry{Threads: 512, CTAs: 528, Vectorized: true}},
	} {
		assert.Equal(t, tc.want, MeanGeometryFor(tc.n, tc.gpu), "n=%d on %v", tc.n, tc.gpu)
	}
}

// TestMeanF32OnGPUs: the geometry changes the offset only past the point where
// the GPU's resident-block target caps the CTAs.
func TestMeanF32OnGPUs(t *testing.T) {
	a := meanSweep(0, 3670016) // a Llama-3.1-70B MLP weight's absmax count
	h, a100 := MeanF32On(a, DefaultReduceGPU), MeanF32On(a, ReduceGPU{SMs: 108, ThreadsPerSM: 2048})
	assert.NotEqual(t, math.Float32bits(h), math.Float32bits(a100), "a 70B MLP's offset should depend on the GPU")
	small := a[:262144]
	assert.Equal(t, MeanF32On(small, DefaultReduceGPU), MeanF32On(small, ReduceGPU{SMs: 40, ThreadsPerSM: 1024}))
}

func TestParseReduceGPU(t *testing.T) {
	g, err := ParseReduceGPU("80x1536")
	require.NoError(t, err)
	assert.Equal(t, ReduceGPU{80, 1536}, g)
	for _, bad := range []string{"", "a100", "0x2048", "80x256", "x", "12x"} {
		_, err := ParseReduceGPU(bad)
		assert.ErrorIs(t, err, ErrParams, bad)
	}
}
