package quantize

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Summary counts what a Run did.
type Summary struct {
	Quantized         int     `json:"quantized"`          // tensors quantized
	Kept              int     `json:"kept"`               // tensors passed through, cast or not
	Cast              int     `json:"cast"`               // kept tensors converted by Options.Cast
	QuantizedElements int64   `json:"quantized_elements"` // weights quantized
	QuantizedBytes    int64   `json:"quantized_bytes"`    // their payload: codes, absmax, nested absmax
	BytesIn           int64   `json:"bytes_in"`           // stream bytes read
	BytesOut          int64   `json:"bytes_out"`          // stream bytes written
	Device            string  `json:"device"`             // where the work ran
	Seconds           float64 `json:"seconds"`
}

// BitsPerWeight is the payload bits per quantized weight: about 4.127 with
// double quantization and block size 64, 4.5 without.
func (s *Summary) BitsPerWeight() float64 {
	if s.QuantizedElements == 0 {
		return 0
	}
	return float64(8*s.QuantizedBytes) / float64(s.QuantizedElements)
}

// WriteText writes the one-line summary.
func (s *Summary) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "quantize: %d tensors quantized, %d kept", s.Quantized, s.Kept)
	if s.Cast > 0 {
		fmt.Fprintf(&b, " (%d cast)", s.Cast)
	}
	fmt.Fprintf(&b, "; %s in, %s out", humanBytes(s.BytesIn), humanBytes(s.BytesOut))
	if s.Quantized > 0 {
		fmt.Fprintf(&b, "; %.3f bits per quantized weight", s.BitsPerWeight())
	}
	fmt.Fprintf(&b, "; %s; %.2f s", s.Device, s.Seconds)
	if s.Seconds > 0 {
		fmt.Fprintf(&b, " (%s/s in)", humanBytes(int64(float64(s.BytesIn)/s.Seconds)))
	}
	if s.Quantized == 0 {
		b.WriteString("; nothing was marked for quantization: was the stream made by detect? (--only '*' quantizes every 2-D float tensor)")
	}
	b.WriteByte('\n')
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON writes the summary as one JSON object, with bits_per_weight.
func (s *Summary) WriteJSON(w io.Writer) error {
	type out struct {
		*Summary
		BitsPerWeight float64 `json:"bits_per_weight"`
	}
	b, err := json.Marshal(out{s, s.BitsPerWeight()})
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

func humanBytes(n int64) string {
	f := float64(n)
	for _, u := range []string{"B", "kB", "MB", "GB"} {
		if f < 1000 {
			if u == "B" {
				return fmt.Sprintf("%d B", n)
			}
			return fmt.Sprintf("%.1f %s", f, u)
		}
		f /= 1000
	}
	return fmt.Sprintf("%.2f TB", f)
}

// progress draws "tensors done, bytes, bytes/s, ETA" in place. A nil
// *progress draws nothing.
type progress struct {
	w           io.Writer
	start, last time.Time
	total       int64 // expected input bytes, from detect's model facts; 0 unknown
	tensors     int   // expected tensors; 0 unknown
	done        int
	n           int64
	drawn       bool
}

// redraw is the least time between two progress lines.
const redraw = 200 * time.Millisecond

func newProgress(w io.Writer, start time.Time) *progress {
	if w == nil {
		return nil
	}
	return &progress{w: w, start: start}
}

// expect reads the totals from the "model" section detect writes.
func (p *progress) expect(h *tensorstream.Header) {
	if p == nil {
		return
	}
	var facts struct {
		Tensors int `msgpack:"tensors"`
		Bytes   struct {
			Source int64 `msgpack:"source"`
		} `msgpack:"bytes"`
	}
	if ok, err := h.Get(tensorstream.SectionModel, &facts); ok && err == nil {
		p.tensors, p.total = facts.Tensors, facts.Bytes.Source
	}
}

func (p *progress) bytes(n int64) {
	if p == nil {
		return
	}
	p.n = n
	if now := time.Now(); now.Sub(p.last) >= redraw {
		p.last = now
		p.draw(now)
	}
}

func (p *progress) tensorDone(n int64) {
	if p == nil {
		return
	}
	p.done++
	p.bytes(n)
}

func (p *progress) draw(now time.Time) {
	el := now.Sub(p.start).Seconds()
	var b strings.Builder
	fmt.Fprintf(&b, "\rquantize: %d", p.done)
	if p.tensors > 0 {
		fmt.Fprintf(&b, "/%d", p.tensors)
	}
	fmt.Fprintf(&b, " tensors, %s", humanBytes(p.n))
	if p.total > 0 {
		fmt.Fprintf(&b, " of %s", humanBytes(p.total))
	}
	if el > 0 {
		rate := float64(p.n) / el
		fmt.Fprintf(&b, ", %s/s", humanBytes(int64(rate)))
		if p.total > p.n && rate > 0 {
			eta := time.Duration(float64(p.total-p.n) / rate * float64(time.Second))
			fmt.Fprintf(&b, ", ETA %s", eta.Round(time.Second))
		}
	}
	b.WriteString("\x1b[K")
	io.WriteString(p.w, b.String())
	p.drawn = true
}

// finish clears the progress line so the summary starts on a clean line.
func (p *progress) finish() {
	if p != nil && p.drawn {
		io.WriteString(p.w, "\r\x1b[K")
	}
}
