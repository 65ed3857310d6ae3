package cli

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/term"

	"github.com/nf4pipe/nf4pipe/internal/units"
)

// ProgressInterval is the least time between two redraws of a progress line.
const ProgressInterval = 100 * time.Millisecond

// Progress is the one status line a long stage draws on a terminal: tensors
// done of those expected, bytes done of those expected, the rate, the time left
// and the tensor being worked on, rewritten in place at most once every
// ProgressInterval. Counting is an atomic add and a clock read, so a stage
// calls Add once per chunk from any goroutine. A nil *Progress does nothing,
// which is what NewProgress returns when the writer is not a terminal: logs,
// pipes and tests see no progress at all.
type Progress struct {
	w     io.Writer
	label string
	now   func() time.Time
	start time.Time
	width func() int // terminal columns; 0 when unknown (no truncation)

	bytes, total   atomic.Int64
	begun, tensors atomic.Int64
	name           atomic.Pointer[string]
	next           atomic.Int64 // nanoseconds after start before which no redraw happens

	mu          sync.Mutex // orders the writes; guards drawn and done
	drawn, done bool
}

// isTerminal is IsTerminal; tests replace it to fake a terminal.
var isTerminal = IsTerminal

// stdinIsPipe reports whether stdin is a pipe; tests replace it.
var stdinIsPipe = func() bool {
	st, err := os.Stdin.Stat()
	return err == nil && st.Mode()&os.ModeNamedPipe != 0
}

// NewProgress returns the progress line of the stage called label, drawn on w
// when w is a terminal, and nil (which draws nothing) otherwise. total is the
// bytes expected, 0 when unknown (then the line shows the rate and no ETA).
//
// In a pipeline only the stage whose stdin is not a pipe draws: every stage
// shares the terminal's last row, and the first stage's progress is the whole
// pipeline's, since the pipes hold it back to the pace of the slowest stage.
func NewProgress(w io.Writer, label string, total int64) *Progress {
	if !isTerminal(w) || stdinIsPipe() {
		return nil
	}
	p := NewProgressTo(w, label, total, nil)
	if f, ok := w.(*os.File); ok {
		p.width = func() int {
			cols, _, err := term.GetSize(int(f.Fd()))
			if err != nil {
				return 0
			}
			return cols
		}
	}
	return p
}

// NewProgressTo returns a progress line drawn on w whatever w is, reading the
// time from now (time.Now when nil): for tests, and for a caller that has
// decided for itself that w is watched by a person.
func NewProgressTo(w io.Writer, label string, total int64, now func() time.Time) *Progress {
	if now == nil {
		now = time.Now
	}
	p := &Progress{w: w, label: label, now: now, start: now(), width: func() int { return 0 }}
	p.total.Store(total)
	// The first line waits one interval, so that a quick run draws nothing.
	p.next.Store(int64(ProgressInterval))
	return p
}

// Expect sets the tensors and bytes expected, when they become known after
// NewProgress (from a stream header); a zero leaves that total as it was.
func (p *Progress) Expect(tensors int, bytes int64) {
	if p == nil {
		return
	}
	if tensors > 0 {
		p.tensors.Store(int64(tensors))
	}
	if bytes > 0 {
		p.total.Store(bytes)
	}
}

// Tensor says that the tensor called name begins, and so the one before it is
// done.
func (p *Progress) Tensor(name string) {
	if p == nil {
		return
	}
	p.name.Store(&name)
	p.begun.Add(1)
	p.tick()
}

// Add counts n more bytes done, and redraws the line if it is time to.
func (p *Progress) Add(n int64) {
	if p == nil {
		return
	}
	p.bytes.Add(n)
	p.tick()
}

// Counted returns the tensors begun and the bytes counted so far.
func (p *Progress) Counted() (tensors int, bytes int64) {
	if p == nil {
		return 0, 0
	}
	return int(p.begun.Load()), p.bytes.Load()
}

// Done clears the line, so that what the tool prints next starts on a clean
// one, and stops all drawing. It may be called more than once.
func (p *Progress) Done() {
	if p == nil {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.drawn && !p.done {
		io.WriteString(p.w, "\r\x1b[K")
	}
	p.done = true
}

// Reader returns r counting what is read from it into p; r itself when p is
// nil.
func (p *Progress) Reader(r io.Reader) io.Reader {
	if p == nil {
		return r
	}
	return &progressReader{r: r, p: p}
}

// ReaderAt returns r counting what is read from it into p, safe for
// concurrent ReadAt calls as r is; r itself when p is nil.
func (p *Progress) ReaderAt(r io.ReaderAt) io.ReaderAt {
	if p == nil {
		return r
	}
	return &progressReaderAt{r: r, p: p}
}

type progressReader struct {
	r io.Reader
	p *Progress
}

func (r *progressReader) Read(b []byte) (int, error) {
	n, err := r.r.Read(b)
	r.p.Add(int64(n))
	return n, err
}

type progressReaderAt struct {
	r io.ReaderAt
	p *Progress
}

func (r *progressReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := r.r.ReadAt(b, off)
	r.p.Add(int64(n))
	return n, err
}

// tick redraws when the interval has passed; of the goroutines that find it
// so at once, the one that moves the deadline on draws.
func (p *Progress) tick() {
	t := p.now()
	el := int64(t.Sub(p.start))
	next := p.next.Load()
	if el < next || !p.next.CompareAndSwap(next, el+int64(ProgressInterval)) {
		return
	}
	p.draw(t)
}

func (p *Progress) draw(t time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return
	}
	io.WriteString(p.w, "\r"+p.line(t.Sub(p.start), p.width())+"\x1b[K")
	p.drawn = true
}

// line renders the progress after elapsed, cut to fit cols columns (0: no
// limit): "quantize: 12/201 tensors, 1.2 GB of 2.2 GB (54%), 310.0 MB/s, ETA 3s  NAME".
func (p *Progress) line(elapsed time.Duration, cols int) string {
	var b strings.Builder
	b.WriteString(p.label)
	b.WriteString(": ")
	begun, tensors := p.begun.Load(), p.tensors.Load()
	if begun > 0 || tensors > 0 {
		fmt.Fprintf(&b, "%d", max(begun-1, 0))
		if tensors > 0 {
			fmt.Fprintf(&b, "/%d", tensors)
		}
		b.WriteString(" tensors, ")
	}
	done, total := p.bytes.Load(), p.total.Load()
	b.WriteString(units.SI(done))
	if total > 0 {
		fmt.Fprintf(&b, " of %s (%d%%)", units.SI(total), min(100, done*100/total))
	}
	if s := elapsed.Seconds(); s > 0 && done > 0 {
		rate := float64(done) / s
		fmt.Fprintf(&b, ", %s/s", units.SI(int64(rate)))
		if total > done {
			eta := time.Duration(float64(total-done) / rate * float64(time.Second))
			fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
		}
	}
	if name := p.name.Load(); name != nil {
		b.WriteString("  ")
		b.WriteString(*name)
	}
	s := b.String()
	if cols > 1 {
		// One column short of the width: a line that fills the last column
		// makes some terminals wrap, and \r then redraws below it.
		if r := []rune(s); len(r) > cols-1 {
			s = string(r[:cols-1])
		}
	}
	return s
}
