package place

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// BenchmarkPlace writes a 128 MiB stream (half raw BF16, half bnb4 with double
// quantization) as a checkpoint: stream decoding, spooling, assembling and
// fsync, as one run of place does them; as one file, and as 32 MB shards
// (each assembled while the next is received). The output goes to
// $NF4PIPE_BENCH_DIR when set (a tmpfs, say), else to the test's temporary
// directory.
func BenchmarkPlace(b *testing.B) {
	var in bytes.Buffer
	w := tensorstream.NewWriter(&in)
	w.WriteHeader(&tensorstream.Header{})
	chunk := make([]byte, 1<<20)
	for i := range 8 {
		t := &tensorstream.Tensor{Name: fmt.Sprintf("layers.%d.weight", i), DType: tensorstream.BF16, Shape: []int64{2048, 4096}, Encoding: tensorstream.Raw}
		if i%2 == 1 {
			t.Shape = []int64{4096, 7680}
			t.Encoding = tensorstream.BNB4
			t.Quant = &tensorstream.QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256, NestedOffset: 0.05}
		}
		t.Size = t.ExpectedSize()
		w.WriteTensor(t)
		for left := t.Size; left > 0; left -= int64(len(chunk)) {
			w.Write(chunk[:min(left, int64(len(chunk)))])
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name  string
		shard int64
	}{{"file", 0}, {"shards", 32_000_000}} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(in.Len()))
			b.ReportAllocs()
			dir := os.Getenv("NF4PIPE_BENCH_DIR")
			if dir == "" {
				dir = b.TempDir()
			}
			for i := 0; b.Loop(); i++ {
				out := filepath.Join(dir, fmt.Sprint("nf4pipe-bench-out", i))
				rep, err := Place(context.Background(), bytes.NewReader(in.Bytes()), Options{Out: out, MaxShardSize: c.shard})
				if err != nil {
					b.Fatal(err)
				}
				if c.shard > 0 && rep.Shards < 4 {
					b.Fatalf("%d shards", rep.Shards)
				}
				b.StopTimer()
				os.RemoveAll(out)
				b.StartTimer()
			}
		})
	}
}
