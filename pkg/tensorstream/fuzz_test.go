package tensorstream

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/stretchr/testify/require"
)

// FuzzReader feeds arbitrary bytes to the reader: it must never panic, and a
// stream it accepts must pass through a writer to bytes that read back the same.
// The seeds are small (under 1 KB: every record kind, with payloads of a few
// bytes in several chunks), since the fuzzer mutates and minimizes slowly on
// large inputs: a 30 KB seed held it at 0 executions a second. What it found
// is kept in testdata/fuzz/FuzzReader.
func FuzzReader(f *testing.F) {
	small := smallTensors(f, rand.New(rand.NewPCG(11, 12)))
	good := writeStream(f, 16, small)
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(writeStream(f, 7, small[:2]))
	f.Add([]byte("NF4S\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if readAll(data) != nil {
			return
		}
		var once bytes.Buffer
		if err := passThrough(&once, bytes.NewReader(data), 64); err != nil {
			t.Fatalf("accepted stream failed to pass through: %v", err)
		}
		var twice bytes.Buffer
		if err := passThrough(&twice, bytes.NewReader(once.Bytes()), 64); err != nil {
			t.Fatalf("rewritten stream failed to read: %v", err)
		}
		if !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("pass-through is not stable")
		}
	})
}

// smallTensors is testTensors in miniature: a raw tensor with annotations, a
// scalar, an empty one, a 4-bit one with its quant state and one without
// data, with payloads of at most 48 bytes.
func smallTensors(tb testing.TB, rng *rand.Rand) []sample {
	mk := func(t *Tensor) sample {
		t.Size = t.ExpectedSize()
		p := make([]byte, t.Size)
		for i := range p {
			p[i] = byte(rng.Uint32())
		}
		if t.NoData {
			p = nil
		}
		return sample{t, p}
	}
	out := []sample{
		mk(&Tensor{Name: "e", DType: BF16, Shape: []int64{3, 5}, Encoding: Raw}),
		mk(&Tensor{Name: "s", DType: F32, Shape: []int64{}, Encoding: Raw}),
		mk(&Tensor{Name: "z", DType: F16, Shape: []int64{0, 7}, Encoding: Raw}),
		mk(&Tensor{Name: "q", DType: BF16, Shape: []int64{1, 64}, Encoding: BNB4,
			Quant: &QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256}}),
		mk(&Tensor{Name: "v", DType: BF16, Shape: []int64{4096, 4096}, Encoding: Raw, NoData: true}),
	}
	require.NoError(tb, out[0].t.SetAnn(AnnRole, "embedding"))
	require.NoError(tb, out[0].t.SetAnn(AnnLayer, -1))
	require.NoError(tb, out[3].t.SetAnn(AnnQuantize, true))
	require.NoError(tb, out[3].t.SetAnn("x-unknown", map[string]any{"a": []int{1}}))
	return out
}

func TestFuzzReaderSeedsSmall(t *testing.T) {
	good := writeStream(t, 16, smallTensors(t, rand.New(rand.NewPCG(11, 12))))
	t.Logf("seed %d bytes", len(good))
	require.Less(t, len(good), 1024)
	require.NoError(t, readAll(good))
}
