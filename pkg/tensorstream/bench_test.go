package tensorstream

import (
	"bytes"
	"io"
	"testing"
)

// BenchmarkPassThrough measures a writer feeding a reader through a pipe, as two
// stages of a pipeline do, on 64 MiB tensors. Bytes count the payload once.
func BenchmarkPassThrough(b *testing.B) {
	const size = 64 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	b.SetBytes(size)
	b.ReportAllocs()
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		r := NewReader(pr)
		buf := make([]byte, 1<<20)
		for {
			_, err := r.Next()
			if err == io.EOF {
				done <- nil
				return
			}
			if err != nil {
				done <- err
				return
			}
			if _, err := io.CopyBuffer(io.Discard, r, buf); err != nil {
				done <- err
				return
			}
		}
	}()
	w := NewWriter(pw)
	if err := w.WriteHeader(&Header{}); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t := &Tensor{Name: "w", DType: BF16, Shape: []int64{size / 2}, Encoding: Raw, Size: size}
		if err := w.WriteTensor(t); err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	pw.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCopyTensor measures one pass-through stage's own work: reading a stream
// from memory and writing it on with CopyTensor, 64 MiB tensors.
func BenchmarkCopyTensor(b *testing.B) {
	const size = 64 << 20
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	var src bytes.Buffer
	w := NewWriter(&src)
	if err := w.WriteHeader(&Header{}); err != nil {
		b.Fatal(err)
	}
	for i := 0; i < 4; i++ {
		if err := w.WriteTensor(&Tensor{Name: "w", DType: BF16, Shape: []int64{size / 2}, Encoding: Raw, Size: size}); err != nil {
			b.Fatal(err)
		}
		if _, err := w.Write(payload); err != nil {
			b.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		b.Fatal(err)
	}
	data := src.Bytes()
	b.SetBytes(4 * size)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := passThrough(io.Discard, bytes.NewReader(data), DefaultChunkSize); err != nil {
			b.Fatal(err)
		}
	}
}
