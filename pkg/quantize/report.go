package quantize

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/nf4pipe/nf4pipe/internal/units"
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
	Routing           string  `json:"routing,omitempty"` // GPUs opened in the background: when ready or why not used; auto's measures
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
	fmt.Fprintf(&b, "; %s in, %s out", units.SI(s.BytesIn), units.SI(s.BytesOut))
	if s.Quantized > 0 {
		fmt.Fprintf(&b, "; %.3f bits per quantized weight", s.BitsPerWeight())
	}
	fmt.Fprintf(&b, "; %s; %.2f s", s.Device, s.Seconds)
	if s.Seconds > 0 {
		fmt.Fprintf(&b, " (%s/s in)", units.SI(int64(float64(s.BytesIn)/s.Seconds)))
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
