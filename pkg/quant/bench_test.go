package quant

import (
	"encoding/binary"
	"io"
	"math/rand/v2"
	"testing"
)

func benchInput(n int) []byte {
	rng := rand.New(rand.NewPCG(5, 6))
	src := make([]byte, 2*n)
	for i := range n {
		binary.LittleEndian.PutUint16(src[2*i:], f32ToBF16(float32(rng.NormFloat64()*0.02)))
	}
	return src
}

func benchEncode(b *testing.B, threads int) {
	const n = 32 << 20 // 64 MiB of bf16
	src := benchInput(n)
	p := DefaultParams()
	b.SetBytes(int64(len(src)))
	b.ReportAllocs()
	for b.Loop() {
		enc, err := NewEncoder(io.Discard, BF16, n, p, CPU(threads))
		if err != nil {
			b.Fatal(err)
		}
		for off := 0; off < len(src); off += 4 << 20 { // 4 MiB stream chunks
			if _, err := enc.Write(src[off:min(off+4<<20, len(src))]); err != nil {
				b.Fatal(err)
			}
		}
		if _, err := enc.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEncodeBF16 quantizes a 64 MiB bf16 tensor to NF4 with double
// quantization, fed in 4 MiB chunks; MB/s counts bf16 input bytes.
func BenchmarkEncodeBF16_1Thread(b *testing.B)    { benchEncode(b, 1) }
func BenchmarkEncodeBF16_AllThreads(b *testing.B) { benchEncode(b, 0) }
