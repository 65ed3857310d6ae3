package gpu

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// named is a CPU backend under another name that counts its runs.
type named struct {
	quant.Backend
	runs int
}

func (n *named) QuantizeBlocks(packed []byte, absmax []float32, src []byte, dt quant.DType, p quant.Params, first int64) error {
	n.runs++
	return n.Backend.QuantizeBlocks(packed, absmax, src, dt, p, first)
}

func TestSpreadMatchesOneBackend(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	n := 3*minSpreadBlocks*64 + 37
	src := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(math.Float32bits(float32(r.NormFloat64()))>>16))
	}
	p := quant.DefaultParams()
	want, err := quant.Quantize(src, quant.BF16, p, quant.CPU(1))
	require.NoError(t, err)
	a, b := &named{Backend: quant.CPU(1)}, &named{Backend: quant.CPU(1)}
	got, err := quant.Quantize(src, quant.BF16, p, Spread(a, b))
	require.NoError(t, err)
	assert.True(t, bytes.Equal(got.Packed, want.Packed), "packed codes differ from one backend's")
	assert.True(t, bytes.Equal(got.Absmax, want.Absmax), "absmax differs from one backend's")
	assert.True(t, bytes.Equal(got.Nested, want.Nested), "nested absmax differs from one backend's")
	assert.Equal(t, want.NestedOffset, got.NestedOffset)
	assert.NotZero(t, a.runs, "first backend's runs")
	assert.NotZero(t, b.runs, "second backend's runs")
}

func TestSpreadNamesFirstNonFinite(t *testing.T) {
	n := 4 * minSpreadBlocks * 64
	src := make([]byte, 4*n)
	for _, i := range []int{n - 5, n/2 + 3} {
		binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(float32(math.Inf(1))))
	}
	_, err := quant.Quantize(src, quant.F32, quant.DefaultParams(), Spread(quant.CPU(1), quant.CPU(1)))
	var nf *quant.NonFiniteError
	require.ErrorAs(t, err, &nf)
	assert.Equal(t, int64(n/2+3), nf.Index, "the first non-finite value")
}
