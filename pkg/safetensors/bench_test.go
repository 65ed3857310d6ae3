package safetensors

import (
	"bytes"
	"github.com/stretchr/testify/require"
	"io"
	"path/filepath"
	"testing"
)

const benchTensorBytes = 64 << 20

// benchFile writes a file with one 64 MiB BF16 tensor and returns its path.
func benchFile(b *testing.B) string {
	b.Helper()
	p := filepath.Join(b.TempDir(), "bench.safetensors")
	data := make([]byte, benchTensorBytes)
	for i := range data {
		data[i] = byte(i * 7)
	}
	require.NoError(b, WriteFile(p, []Tensor{{"w", BF16, []int64{benchTensorBytes / 2}, data}}, nil))
	return p
}

// BenchmarkReadChunked reads a tensor's payload in 1 MiB chunks through
// Section (positioned reads), as detect streams it; the file is in the page
// cache after the first pass, so this measures the read path, not the disk.
func BenchmarkReadChunked(b *testing.B) {
	ck, err := Open(benchFile(b))
	require.NoError(b, err)
	defer ck.Close()
	t := ck.Tensors()[0]
	buf := make([]byte, 1<<20)
	b.SetBytes(t.Size())
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		r := ck.Section(t)
		for {
			_, err := r.Read(buf)
			if err == io.EOF {
				break
			}
			require.NoError(b, err)
		}
	}
}

// BenchmarkWrite writes a 64 MiB tensor through each write path, fsync and
// rename included.
func BenchmarkWrite(b *testing.B) {
	data := make([]byte, benchTensorBytes)
	shape := []int64{benchTensorBytes / 2}
	dir := b.TempDir()
	b.Run("declared", func(b *testing.B) {
		b.SetBytes(benchTensorBytes)
		b.ReportAllocs()
		for b.Loop() {
			w, err := NewWriterFor(filepath.Join(dir, "d.safetensors"), nil, []TensorSpec{{"w", BF16, shape}})
			require.NoError(b, err)
			require.NoError(b, w.Add("w", BF16, shape, bytes.NewReader(data)))
			require.NoError(b, w.Close())
		}
	})
	b.Run("spooled", func(b *testing.B) {
		b.SetBytes(benchTensorBytes)
		b.ReportAllocs()
		for b.Loop() {
			w, err := NewWriter(filepath.Join(dir, "s.safetensors"), nil)
			require.NoError(b, err)
			require.NoError(b, w.Add("w", BF16, shape, bytes.NewReader(data)))
			require.NoError(b, w.Close())
		}
	})
}
