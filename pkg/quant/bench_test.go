package quant

import (
	"encoding/binary"
	"fmt"
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

// BenchmarkQuantizeBlocks is the 4-bit kernel alone on one goroutine (no
// Encoder, no double quantization): 64 MiB of bf16, NF4 and FP4, block 64,
// with the vector kernels and with the Go kernels.
func BenchmarkQuantizeBlocks(b *testing.B) {
	const n = 32 << 20
	src := benchInput(n)
	packed := make([]byte, n/2)
	absmax := make([]float32, n/64)
	for _, typ := range []Type{NF4, FP4} {
		for _, simd := range kernelModes() {
			b.Run(fmt.Sprintf("%s/%s", typ, modeName(simd)), func(b *testing.B) {
				defer setSIMD(simd)()
				p := Params{Type: typ, BlockSize: 64}
				b.SetBytes(int64(len(src)))
				b.ReportAllocs()
				for b.Loop() {
					if err := quantizeBlocksCPU(packed, absmax, src, BF16, p, 0); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}

// BenchmarkDecodeBF16 dequantizes 32 Mi NF4 values (block 64) to bf16, fed
// in 2 MiB chunks of packed codes; MB/s counts the bf16 output, the size of
// the reference data verify compares with.
func BenchmarkDecodeBF16(b *testing.B) {
	const n = 32 << 20
	q, err := Quantize(benchInput(n), BF16, DefaultParams(), nil)
	if err != nil {
		b.Fatal(err)
	}
	absmax, err := AbsmaxFrom(q.Params, q.N, q.Absmax, q.Nested, q.NestedOffset)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]byte, 0, 2*n)
	for _, simd := range kernelModes() {
		b.Run(modeName(simd), func(b *testing.B) {
			defer setSIMD(simd)()
			b.SetBytes(2 * n)
			b.ReportAllocs()
			for b.Loop() {
				d, err := NewDecoder(q.Params, q.N, absmax, BF16)
				if err != nil {
					b.Fatal(err)
				}
				out = out[:0]
				for off := 0; off < len(q.Packed); off += 2 << 20 {
					if out, err = d.Decode(out, q.Packed[off:min(off+2<<20, len(q.Packed))]); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}
