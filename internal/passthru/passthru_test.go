package passthru

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/synth"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCopyKeepsEverything(t *testing.T) {
	var in bytes.Buffer
	_, err := synth.WriteStream(&in, synth.StreamOptions{Bytes: 3 << 20, TensorBytes: 1 << 20, Cols: 1024})
	require.NoError(t, err)
	src := in.Bytes()

	var out bytes.Buffer
	st, err := Copy(&out, bytes.NewReader(src), 64<<10)
	require.NoError(t, err)
	assert.EqualValues(t, 3, st.Tensors)
	assert.EqualValues(t, 3<<20, st.Bytes)

	// Same tensors, annotations, payloads and checksums; one more stage.
	a, b := tensorstream.NewReader(bytes.NewReader(src)), tensorstream.NewReader(&out)
	ha, err := a.Header()
	require.NoError(t, err)
	hb, err := b.Header()
	require.NoError(t, err)
	require.Len(t, hb.Stages, len(ha.Stages)+1)
	assert.Equal(t, "passthru", hb.Stages[len(hb.Stages)-1].Name)
	for {
		ta, erra := a.Next()
		tb, errb := b.Next()
		if erra == io.EOF {
			assert.Equal(t, io.EOF, errb)
			break
		}
		require.NoError(t, erra)
		require.NoError(t, errb)
		pa, err := io.ReadAll(a)
		require.NoError(t, err)
		pb, err := io.ReadAll(b)
		require.NoError(t, err)
		assert.Equal(t, pa, pb, ta.Name)
		assert.Equal(t, ta, tb)
	}
}

func TestCopyRefusesBadInput(t *testing.T) {
	var in bytes.Buffer
	_, err := synth.WriteStream(&in, synth.StreamOptions{Bytes: 1 << 20, TensorBytes: 1 << 20, Cols: 1024})
	require.NoError(t, err)
	_, err = Copy(io.Discard, bytes.NewReader(in.Bytes()[:in.Len()/2]), 0)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)

	_, err = Copy(io.Discard, strings.NewReader("garbage, not a stream"), 0)
	assert.ErrorIs(t, err, tensorstream.ErrCorrupt)
}

func TestParseHWM(t *testing.T) {
	n, err := parseHWM(strings.NewReader("Name:\tx\nVmPeak:\t  9 kB\nVmHWM:\t    1234 kB\nVmRSS:\t 1 kB\n"))
	require.NoError(t, err)
	assert.EqualValues(t, 1234*1024, n)
	for _, bad := range []string{"VmRSS: 1 kB\n", "VmHWM: lots kB\n", "VmHWM: 12 MB\n"} {
		_, err := parseHWM(strings.NewReader(bad))
		assert.True(t, errors.Is(err, ErrNoHWM), "%q: %v", bad, err)
	}
	if n, err := PeakRSS(); err == nil {
		assert.Greater(t, n, int64(0))
	} else {
		t.Logf("no procfs here: %v", err)
	}
}

func BenchmarkCopy(b *testing.B) {
	var in bytes.Buffer
	_, err := synth.WriteStream(&in, synth.StreamOptions{Bytes: 64 << 20, TensorBytes: 64 << 20})
	require.NoError(b, err)
	src := in.Bytes()
	b.SetBytes(64 << 20)
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, err := Copy(io.Discard, bytes.NewReader(src), 0); err != nil {
			b.Fatal(err)
		}
	}
}
