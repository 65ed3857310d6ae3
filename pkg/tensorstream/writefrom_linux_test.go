package tensorstream

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// checkSpliced fails t unless w spliced (want) or did not splice any payload.
func checkSpliced(t *testing.T, w *Writer, want bool) {
	t.Helper()
	if got := w.splice.moved > 0; got != want {
		t.Fatalf("spliced %d bytes; want splicing %v", w.splice.moved, want)
	}
}

// TestSplicePastEnd: a file that ends inside the range (cut after its chunk
// was checksummed) is io.ErrUnexpectedEOF, after what there was is moved.
func TestSplicePastEnd(t *testing.T) {
	src, ts := sourceFile(t, 100_000)
	got := throughPipe(t, func(pw io.Writer) {
		moved, err := splice(pw.(*os.File), src, ts[0].off, 200_000)
		if !errors.Is(err, io.ErrUnexpectedEOF) || moved != 100_000 {
			t.Errorf("moved %d, err %v; want 100000 and io.ErrUnexpectedEOF", moved, err)
		}
	})
	if !bytes.Equal(got, ts[0].payload) {
		t.Errorf("pipe got %d bytes, not the file's last 100000", len(got))
	}
}

// BenchmarkWriteFromPipe streams 64 MiB tensors from a file in the page cache
// into a 1 MiB pipe drained by read(2) into a 4 MiB buffer, as detect | cat:
// "splice" by WriteFrom from the *os.File, "copy" by WriteFrom from a reader
// that hides the file (read into the chunk buffer, then written). Bytes count
// the payload once.
func BenchmarkWriteFromPipe(b *testing.B) {
	const size = 64 << 20
	path := filepath.Join(b.TempDir(), "src.bin")
	payload := make([]byte, size)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	if err := os.WriteFile(path, payload, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	for _, c := range []struct {
		name string
		src  io.ReaderAt
	}{{"splice", f}, {"copy", io.NewSectionReader(f, 0, size)}} {
		b.Run(c.name, func(b *testing.B) {
			pr, pw, err := os.Pipe()
			if err != nil {
				b.Fatal(err)
			}
			unix.FcntlInt(pw.Fd(), unix.F_SETPIPE_SZ, 1<<20)
			done := make(chan error, 1)
			go func() {
				buf := make([]byte, 4<<20)
				for {
					_, err := pr.Read(buf)
					if err == io.EOF {
						done <- pr.Close()
						return
					}
					if err != nil {
						done <- err
						return
					}
				}
			}()
			w := NewWriter(pw)
			if err := w.WriteHeader(&Header{}); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(size)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				t := &Tensor{Name: "w", DType: BF16, Shape: []int64{size / 2}, Encoding: Raw, Size: size}
				if err := w.WriteTensor(t); err != nil {
					b.Fatal(err)
				}
				if err := w.WriteFrom(c.src, 0, size); err != nil {
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
		})
	}
}
