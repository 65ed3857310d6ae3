package cli

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a fake time source advanced by hand.
type clock struct{ t time.Time }

func newClock() *clock                   { return &clock{t: time.Unix(1_700_000_000, 0)} }
func (c *clock) now() time.Time          { return c.t }
func (c *clock) advance(d time.Duration) { c.t = c.t.Add(d) }

// lines splits what a Progress drew into its lines.
func lines(s string) []string { return strings.Split(strings.TrimPrefix(s, "\r"), "\r") }

func fakeTerminal(t *testing.T, is bool) {
	old, oldPipe := isTerminal, stdinIsPipe
	isTerminal = func(any) bool { return is }
	stdinIsPipe = func() bool { return false }
	t.Cleanup(func() { isTerminal, stdinIsPipe = old, oldPipe })
}

// TestProgressOnlyAtTheHead: a stage reading a pipe draws nothing, so that the
// stages of a pipeline do not take turns on the terminal's last row.
func TestProgressOnlyAtTheHead(t *testing.T) {
	fakeTerminal(t, true)
	stdinIsPipe = func() bool { return true }
	if p := NewProgress(&bytes.Buffer{}, "quantize", 100); p != nil {
		t.Fatal("a stage whose stdin is a pipe got a progress line")
	}
	stdinIsPipe = func() bool { return false }
	if p := NewProgress(&bytes.Buffer{}, "detect", 100); p == nil {
		t.Fatal("the head of the pipeline got no progress line")
	}
}

func mustNotDraw(t *testing.T, b *bytes.Buffer) {
	t.Helper()
	if b.Len() != 0 {
		t.Fatalf("drew %q", b.String())
	}
}

func TestProgressLine(t *testing.T) {
	var b bytes.Buffer
	c := newClock()
	p := NewProgressTo(&b, "quantize", 0, c.now)
	p.Expect(4, 2_000_000_000)
	p.Tensor("a")
	p.Add(500_000_000)
	mustNotDraw(t, &b) // the first line waits one interval
	c.advance(time.Second)
	p.Tensor("model.layers.0.mlp.up_proj.weight")
	want := "\rquantize: 1/4 tensors, 500.0 MB of 2.0 GB (25%), 500.0 MB/s, ETA 3s  model.layers.0.mlp.up_proj.weight\x1b[K"
	if got := b.String(); got != want {
		t.Fatalf("line\n got %q\nwant %q", got, want)
	}

	// Within the interval nothing is redrawn, however much is counted.
	b.Reset()
	c.advance(ProgressInterval / 2)
	for range 1000 {
		p.Add(1000)
	}
	mustNotDraw(t, &b)
	c.advance(ProgressInterval / 2)
	p.Add(0)
	if got := b.String(); !strings.HasPrefix(got, "\rquantize: 1/4 tensors, 501.0 MB of 2.0 GB (25%), ") {
		t.Fatalf("redraw %q", got)
	}

	b.Reset()
	p.Done()
	if got := b.String(); got != "\r\x1b[K" {
		t.Fatalf("Done wrote %q, want the line cleared", got)
	}
	b.Reset()
	c.advance(time.Second)
	p.Add(1)
	p.Tensor("late")
	p.Done()
	mustNotDraw(t, &b)
}

func TestProgressUnknownTotals(t *testing.T) {
	var b bytes.Buffer
	c := newClock()
	p := NewProgressTo(&b, "place", 0, c.now)
	p.Add(3_000)
	c.advance(2 * time.Second)
	p.Add(1_000)
	if got, want := b.String(), "\rplace: 4.0 kB, 2.0 kB/s\x1b[K"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	b.Reset()
	p.Tensor("x")
	p.Tensor("y")
	c.advance(time.Second)
	p.Add(2_000)
	if got, want := b.String(), "\rplace: 1 tensors, 6.0 kB, 2.0 kB/s  y\x1b[K"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestProgressOvershootAndWidth(t *testing.T) {
	var b bytes.Buffer
	c := newClock()
	p := NewProgressTo(&b, "quantize", 1_000, c.now)
	p.width = func() int { return 30 }
	c.advance(time.Second)
	p.Add(1_500) // a stream's framing on top of the payload the header announced
	got := b.String()
	if want := "\rquantize: 1.5 kB of 1.0 kB (1\x1b[K"; got != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	if line := lines(strings.TrimSuffix(got, "\x1b[K"))[0]; len(line) != 29 {
		t.Errorf("line of %d columns on a 30-column terminal", len(line))
	}
	if p.line(time.Second, 0) != "quantize: 1.5 kB of 1.0 kB (100%), 1.5 kB/s" {
		t.Errorf("overshoot: %q", p.line(time.Second, 0))
	}
}

func TestProgressNotTerminal(t *testing.T) {
	// A pipe, a file, a buffer: no Progress, and counting through it is free.
	f, err := os.Create(filepath.Join(t.TempDir(), "log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b bytes.Buffer
	for _, w := range []io.Writer{f, &b, io.Discard} {
		if p := NewProgress(w, "detect", 10); p != nil {
			t.Fatalf("NewProgress(%T) = %v, want nil", w, p)
		}
	}
	var p *Progress
	p.Expect(1, 1)
	p.Tensor("x")
	p.Add(5)
	p.Done()
	if tensors, n := p.Counted(); tensors != 0 || n != 0 {
		t.Error("a nil Progress counted")
	}
	r := strings.NewReader("abc")
	if p.Reader(r) != io.Reader(r) || p.ReaderAt(r) != io.ReaderAt(r) {
		t.Error("a nil Progress wraps readers")
	}
	if st, _ := f.Stat(); st.Size() != 0 || b.Len() != 0 {
		t.Error("wrote to a non-terminal")
	}
}

func TestProgressFakeTerminal(t *testing.T) {
	fakeTerminal(t, true)
	var b bytes.Buffer
	p := NewProgress(&b, "verify", 0)
	if p == nil {
		t.Fatal("no Progress on a terminal")
	}
	p.start = p.start.Add(-time.Second) // as if a second had passed
	p.Add(1)
	if !strings.HasPrefix(b.String(), "\rverify: 1 B, ") {
		t.Errorf("drew %q", b.String())
	}
}

func TestProgressReaders(t *testing.T) {
	var b bytes.Buffer
	c := newClock()
	p := NewProgressTo(&b, "x", 0, c.now)
	if n, err := io.Copy(io.Discard, p.Reader(strings.NewReader("hello"))); n != 5 || err != nil {
		t.Fatal(n, err)
	}
	ra := p.ReaderAt(strings.NewReader("0123456789"))
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			var one [1]byte
			if _, err := ra.ReadAt(one[:], int64(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	p.Tensor("t")
	if tensors, n := p.Counted(); tensors != 1 || n != 15 {
		t.Errorf("counted %d tensors, %d bytes; want 1, 15", tensors, n)
	}
}

// BenchmarkProgressAdd is the cost a stage pays per chunk counted.
func BenchmarkProgressAdd(b *testing.B) {
	p := NewProgressTo(io.Discard, "x", 0, nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			p.Add(4 << 20)
		}
	})
}
