package verify

import (
	"bytes"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// BenchmarkCompare measures the CPU comparison of a 4096x4096 BF16 tensor
// (NF4, block 64, double quantization) with its reference, with GOMAXPROCS
// goroutines (-cpu 1: one core); bytes are reference bytes.
func BenchmarkCompare(b *testing.B) { benchCompare(b) }

// BenchmarkCompareGo is BenchmarkCompare with the Go kernel alone (the
// kernel of other architectures and of the purego build).
func BenchmarkCompareGo(b *testing.B) {
	goKernelOnly = true
	defer func() { goKernelOnly = false }()
	benchCompare(b)
}

func benchCompare(b *testing.B) {
	const rows, cols = 4096, 4096
	s := synth(b, "w", []int64{rows, cols}, gaussian(rows*cols, 0.02, 1), quant.DefaultParams())
	desc := &tensorstream.Tensor{Name: "w", DType: tensorstream.BF16, Shape: s.shape, Encoding: tensorstream.BNB4,
		Quant: &tensorstream.QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256, NestedOffset: s.q.NestedOffset}}
	qt := &quantTensor{t: desc, packed: bytes.NewReader(s.q.Packed), absmax: bytes.NewReader(s.q.Absmax), nested: bytes.NewReader(s.q.Nested)}
	ref := &refTensor{name: "w", dtype: tensorstream.BF16, shape: s.shape, size: int64(len(s.ref)), r: bytes.NewReader(s.ref)}
	c := &checker{}
	b.SetBytes(int64(len(s.ref)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		res, f, err := c.quant(qt, ref)
		if err != nil || len(f) > 0 || res.Status != StatusOK {
			b.Fatal(err, f, res.Status)
		}
	}
}
