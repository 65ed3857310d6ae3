package tensorstream

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// fileTensor is a U8 tensor whose payload lies in a source file at off.
type fileTensor struct {
	name    string
	off     int64
	payload []byte
}

// sourceFile writes tensors of the given sizes into one file, each at an odd
// offset after a gap of filler, and returns the file, open, and the tensors.
func sourceFile(t testing.TB, sizes ...int) (*os.File, []fileTensor) {
	rng := rand.New(rand.NewPCG(uint64(len(sizes)), 7))
	var data []byte
	var ts []fileTensor
	for i, n := range sizes {
		for range 1 + rng.IntN(4000) {
			data = append(data, byte(rng.Uint32()))
		}
		p := make([]byte, n)
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		ts = append(ts, fileTensor{name: "t" + string(rune('a'+i)), off: int64(len(data)), payload: p})
		data = append(data, p...)
	}
	path := filepath.Join(t.TempDir(), "src.bin")
	require.NoError(t, os.WriteFile(path, data, 0o644))
	f, err := os.Open(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	return f, ts
}

func (ft fileTensor) tensor() *Tensor {
	return &Tensor{Name: ft.name, DType: U8, Shape: []int64{int64(len(ft.payload))}, Encoding: Raw, Size: int64(len(ft.payload))}
}

// streamOf writes ts to dst with chunk size chunk; payloads go by Write when
// src is nil, else by WriteFrom(src) in pieces of the given sizes (cycled),
// with every third piece of the second tensor given to Write instead, so that
// WriteFrom finds chunks left pending by Write and leaves some for it.
func streamOf(t testing.TB, dst io.Writer, chunk int, ts []fileTensor, src *os.File, pieces ...int) *Writer {
	w := NewWriterSize(dst, chunk)
	require.NoError(t, w.WriteHeader(&Header{}))
	for i, ft := range ts {
		require.NoError(t, w.WriteTensor(ft.tensor()))
		if src == nil {
			_, err := w.Write(ft.payload)
			require.NoError(t, err)
			continue
		}
		off := 0
		for j := 0; off < len(ft.payload); j++ {
			k := len(ft.payload) - off
			if len(pieces) > 0 {
				k = min(k, pieces[j%len(pieces)])
			}
			if i == 1 && j%3 == 2 {
				_, err := w.Write(ft.payload[off : off+k])
				require.NoError(t, err)
			} else {
				require.NoError(t, w.WriteFrom(src, ft.off+int64(off), int64(k)))
			}
			off += k
		}
	}
	require.NoError(t, w.Close())
	return w
}

// throughPipe runs write with the write end of a fresh os.Pipe and returns
// what a reader drained from the other end.
func throughPipe(t testing.TB, write func(io.Writer)) []byte {
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(pr)
		pr.Close()
		got <- b
	}()
	write(pw)
	require.NoError(t, pw.Close())
	return <-got
}

func setSpliceMin(t *testing.T, n int) {
	old := spliceMin
	spliceMin = n
	t.Cleanup(func() { spliceMin = old })
}

// TestWriteFromIdentical checks that WriteFrom gives Write's bytes, to a
// buffer, a regular file and a pipe (spliced on Linux), for chunk sizes
// smaller and larger than the tensors, pieces aligned to chunks or not, and
// splicing of every chunk or only of those of 64 KiB and more.
func TestWriteFromIdentical(t *testing.T) {
	src, ts := sourceFile(t, 0, 1, 4095, 3*4096+17, 200_003, 1<<20+5, 64<<10)
	for _, min := range []int{1, 64 << 10} {
		for _, chunk := range []int{1000, 4096, 64 << 10, 1 << 20, DefaultChunkSize} {
			for _, pieces := range [][]int{nil, {1 << 20}, {4096, 333, 70_000}} {
				if chunk < 4096 && pieces == nil && min > 1 {
					continue
				}
				setSpliceMin(t, min)
				var want bytes.Buffer
				streamOf(t, &want, chunk, ts, nil)

				var buf bytes.Buffer
				streamOf(t, &buf, chunk, ts, src, pieces...)
				require.Equal(t, want.Bytes(), buf.Bytes(), "to a buffer, chunk %d, pieces %v", chunk, pieces)

				file, err := os.Create(filepath.Join(t.TempDir(), "out.stream"))
				require.NoError(t, err)
				streamOf(t, file, chunk, ts, src, pieces...)
				require.NoError(t, file.Close())
				got, err := os.ReadFile(file.Name())
				require.NoError(t, err)
				require.Equal(t, want.Bytes(), got, "to a file, chunk %d, pieces %v", chunk, pieces)

				var w *Writer
				got = throughPipe(t, func(pw io.Writer) { w = streamOf(t, pw, chunk, ts, src, pieces...) })
				require.Equal(t, want.Bytes(), got, "to a pipe, chunk %d, pieces %v, splice from %d", chunk, pieces, min)
				if pieces == nil || len(pieces) == 1 && pieces[0] >= chunk {
					// Every tensor's whole chunks reach WriteFrom in one call.
					checkSpliced(t, w, chunk >= min)
				}
			}
		}
	}
}

func TestWriteFromReadsBack(t *testing.T) {
	src, ts := sourceFile(t, 5, 300_000, 1<<20+1)
	setSpliceMin(t, 4096)
	data := throughPipe(t, func(pw io.Writer) { streamOf(t, pw, 64<<10, ts, src, 100_000) })
	r := NewReader(bytes.NewReader(data))
	_, err := r.Header()
	require.NoError(t, err)
	for _, ft := range ts {
		tt, err := r.Next()
		require.NoError(t, err)
		require.Equal(t, ft.name, tt.Name)
		got, err := io.ReadAll(r)
		require.NoError(t, err)
		require.Equal(t, ft.payload, got, ft.name)
	}
	_, err = r.Next()
	require.Equal(t, io.EOF, err)
}

// TestWriteFromShortSource: a source that ends before the range (a file cut
// short while it is streamed) is io.ErrUnexpectedEOF, and the writer stays
// failed, on every path.
func TestWriteFromShortSource(t *testing.T) {
	src, ts := sourceFile(t, 1<<20)
	setSpliceMin(t, 4096)
	for _, cut := range []int64{ts[0].off + 10, ts[0].off + 300_000} {
		for _, to := range []string{"buffer", "pipe"} {
			require.NoError(t, os.Truncate(src.Name(), ts[0].off+1<<20))
			require.NoError(t, os.Truncate(src.Name(), cut))
			write := func(dst io.Writer) {
				w := NewWriterSize(dst, 64<<10)
				require.NoError(t, w.WriteHeader(&Header{}))
				require.NoError(t, w.WriteTensor(ts[0].tensor()))
				err := w.WriteFrom(src, ts[0].off, 1<<20)
				assert.ErrorIs(t, err, io.ErrUnexpectedEOF, "cut at %d, to a %s", cut, to)
				assert.ErrorIs(t, w.Close(), io.ErrUnexpectedEOF, "sticky")
			}
			if to == "buffer" {
				write(&bytes.Buffer{})
			} else {
				throughPipe(t, write)
			}
		}
	}
}

// TestWriteFromClosedReader: a reader that closes the pipe early gives EPIPE,
// as a write does (the pipe here is not stdout, so no SIGPIPE).
func TestWriteFromClosedReader(t *testing.T) {
	src, ts := sourceFile(t, 8<<20)
	setSpliceMin(t, 4096)
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	defer pw.Close()
	go func() {
		io.ReadFull(pr, make([]byte, 1000))
		pr.Close()
	}()
	w := NewWriterSize(pw, 64<<10)
	require.NoError(t, w.WriteHeader(&Header{}))
	require.NoError(t, w.WriteTensor(ts[0].tensor()))
	err = w.WriteFrom(src, ts[0].off, 8<<20)
	require.ErrorIs(t, err, syscall.EPIPE)
	var pe *os.PathError
	assert.True(t, errors.As(err, &pe) && pe.Op == "write", "reported as a write: %v", err)
}

func TestWriteFromChecksSizes(t *testing.T) {
	src, ts := sourceFile(t, 100)
	w := NewWriter(io.Discard)
	require.NoError(t, w.WriteHeader(&Header{}))
	assert.ErrorIs(t, w.WriteFrom(src, 0, 1), ErrState, "before a tensor")

	w = NewWriter(io.Discard)
	require.NoError(t, w.WriteHeader(&Header{}))
	require.NoError(t, w.WriteTensor(ts[0].tensor()))
	_, err := w.Write(ts[0].payload[:60])
	require.NoError(t, err)
	assert.ErrorIs(t, w.WriteFrom(src, ts[0].off+60, 41), ErrSize, "past the declared size, counting pending bytes")

	w = NewWriter(io.Discard)
	require.NoError(t, w.WriteHeader(&Header{}))
	require.NoError(t, w.WriteTensor(ts[0].tensor()))
	require.NoError(t, w.WriteFrom(src, ts[0].off, 99))
	assert.ErrorIs(t, w.Close(), ErrSize, "one byte short")
}
