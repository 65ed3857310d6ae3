package verify

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Tensor statuses.
const (
	StatusOK        = "ok"        // checked and within the envelope
	StatusFlagged   = "flagged"   // 4-bit error above the envelope (quality)
	StatusFailed    = "failed"    // an integrity finding names it
	StatusUnchecked = "unchecked" // no reference to compare with (integrity checks only)
)

// TensorResult is what verify found for one tensor.
type TensorResult struct {
	Name        string    `json:"name"`
	DType       string    `json:"dtype"`
	Shape       []int64   `json:"shape"`
	Encoding    string    `json:"encoding"`
	QuantType   string    `json:"quant_type,omitempty"`
	BlockSize   int       `json:"blocksize,omitempty"`
	DoubleQuant bool      `json:"double_quant,omitempty"`
	Bytes       int64     `json:"bytes"`                     // payload bytes
	RefBytes    int64     `json:"reference_bytes,omitempty"` // reference bytes compared
	Metrics     *Metrics  `json:"metrics,omitempty"`         // 4-bit tensors with a reference
	Envelope    *Envelope `json:"envelope,omitempty"`
	// Ratio is Metrics.RelError over Envelope.Gaussian: 1 is exactly what
	// Gaussian weights give.
	Ratio          float64 `json:"ratio,omitempty"`
	CodeMismatches int64   `json:"code_mismatches,omitempty"`
	// CastFrom is the reference's dtype when a kept tensor is the reference
	// cast to DType (quantize --cast), byte for byte.
	CastFrom string `json:"cast_from,omitempty"`
	Status   string `json:"status"`
}

func newResult(t *tensorstream.Tensor) TensorResult {
	r := TensorResult{Name: t.Name, DType: string(t.DType), Shape: t.Shape, Encoding: string(t.Encoding), Bytes: t.Size}
	if t.Quant != nil {
		r.QuantType, r.BlockSize, r.DoubleQuant = t.Quant.Type, t.Quant.BlockSize, t.Quant.DoubleQuant
	}
	return r
}

// Totals sum up a report.
type Totals struct {
	Tensors           int   `json:"tensors"`
	Quantized         int   `json:"quantized"`
	Kept              int   `json:"kept"`
	QuantizedElements int64 `json:"quantized_elements"`
	QuantizedBytes    int64 `json:"quantized_bytes"` // 4-bit payloads, absmax and nested absmax included
	KeptBytes         int64 `json:"kept_bytes"`
	ReferenceBytes    int64 `json:"reference_bytes"` // reference bytes compared
	// BitsPerWeight is 8 * QuantizedBytes / QuantizedElements.
	BitsPerWeight float64 `json:"bits_per_weight"`
	// RelError and SQNR are over all compared 4-bit tensors together.
	RelError    float64 `json:"rel_error"`
	SQNR        float64 `json:"sqnr_db"`
	WorstSQNR   float64 `json:"worst_sqnr_db"`
	WorstTensor string  `json:"worst_tensor,omitempty"`
	Compared    int     `json:"compared"`
	Flagged     int     `json:"flagged"`
	Failures    int     `json:"integrity_failures"`
}

// Report is the outcome of Run.
type Report struct {
	Stream     bool   `json:"stream"`
	Checkpoint string `json:"checkpoint,omitempty"`
	Reference  string `json:"reference,omitempty"`
	// RoundTrip says whether a checkpoint was compared with a stream, and
	// how many tensors matched exactly.
	RoundTrip *RoundTrip `json:"round_trip,omitempty"`
	// Tensors are sorted worst first: failed, flagged, then by Ratio.
	Tensors  []TensorResult `json:"tensors"`
	Findings []Finding      `json:"findings"`
	// KeepIn16 names the 4-bit tensors worth keeping in 16 bits: those above
	// the envelope, worst first.
	KeepIn16 []string `json:"keep_in_16bit"`
	Totals   Totals   `json:"totals"`
	OK       bool     `json:"ok"`

	all accum // over compared 4-bit tensors
}

// RoundTrip is the outcome of comparing a checkpoint with a stream.
type RoundTrip struct {
	Tensors   int `json:"tensors"`   // stream tensors compared
	Identical int `json:"identical"` // of which bytes and quant state matched
}

// Err returns nil when all is well, else an error wrapping ErrIntegrity (any
// finding) or ErrQuality (flags only) that names the first problem.
func (r *Report) Err() error {
	if n := len(r.Findings); n > 0 {
		return fmt.Errorf("%w: %d problem(s), first: %v", ErrIntegrity, n, r.Findings[0])
	}
	if len(r.KeepIn16) > 0 {
		t := r.Tensors[0]
		return fmt.Errorf("%w: %d tensor(s) above the envelope, worst %q: relative error %.4f > %.4f (SQNR %.1f dB)",
			ErrQuality, len(r.KeepIn16), t.Name, t.Metrics.RelError, t.Envelope.Max, t.Metrics.SQNR)
	}
	return nil
}

func (r *Report) add(res TensorResult, findings []Finding) {
	r.Tensors = append(r.Tensors, res)
	r.Findings = append(r.Findings, findings...)
}

// finish sorts the tensors and computes the totals.
func (r *Report) finish() {
	rank := map[string]int{StatusFailed: 0, StatusFlagged: 1, StatusOK: 2, StatusUnchecked: 3}
	slices.SortStableFunc(r.Tensors, func(a, b TensorResult) int {
		if c := cmp.Compare(rank[a.Status], rank[b.Status]); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Ratio, a.Ratio); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	tt := &r.Totals
	*tt = Totals{Tensors: len(r.Tensors), Failures: len(r.Findings), WorstSQNR: MaxSQNR}
	r.KeepIn16 = []string{}
	for _, t := range r.Tensors {
		if t.Encoding == string(tensorstream.BNB4) {
			tt.Quantized++
			tt.QuantizedBytes += t.Bytes
			n := int64(1)
			for _, d := range t.Shape {
				n *= d
			}
			tt.QuantizedElements += n
		} else {
			tt.Kept++
			tt.KeptBytes += t.Bytes
		}
		tt.ReferenceBytes += t.RefBytes
		if t.Metrics != nil {
			tt.Compared++
			if t.Metrics.SQNR < tt.WorstSQNR {
				tt.WorstSQNR, tt.WorstTensor = t.Metrics.SQNR, t.Name
			}
		}
		if t.Status == StatusFlagged {
			tt.Flagged++
			r.KeepIn16 = append(r.KeepIn16, t.Name)
		}
	}
	if tt.QuantizedElements > 0 {
		tt.BitsPerWeight = 8 * float64(tt.QuantizedBytes) / float64(tt.QuantizedElements)
	}
	m := r.all.metrics()
	tt.RelError, tt.SQNR = m.RelError, m.SQNR
	if tt.Compared == 0 {
		tt.WorstSQNR, tt.SQNR = 0, 0
	}
	if r.Findings == nil {
		r.Findings = []Finding{}
	}
	r.OK = len(r.Findings) == 0 && len(r.KeepIn16) == 0
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteTable writes the report for a person: problems, the tensor table worst
// first, then the totals.
func (r *Report) WriteTable(w io.Writer) error {
	ew := &errWriter{w: w}
	for _, f := range r.Findings {
		ew.printf("FAIL %v\n", f)
	}
	if len(r.Findings) > 0 {
		ew.printf("\n")
	}
	tw := tabwriter.NewWriter(ew, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintf(tw, "status\ttensor\tdtype\tshape\tencoding\tbytes\trel err\tSQNR dB\tcosine\tmax abs\tRMSE\tx gauss\t\n")
	for _, t := range r.Tensors {
		enc := t.Encoding
		if t.QuantType != "" {
			enc = fmt.Sprintf("%s/%d", t.QuantType, t.BlockSize)
			if t.DoubleQuant {
				enc += "+dq"
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t", t.Status, t.Name, t.DType, shapeString(t.Shape), enc, t.Bytes)
		if m := t.Metrics; m != nil {
			fmt.Fprintf(tw, "%.4f\t%.2f\t%.5f\t%.3g\t%.3g\t%.2f\t\n", m.RelError, m.SQNR, m.Cosine, m.MaxAbs, m.RMSE, t.Ratio)
		} else if t.Status == StatusOK && t.CastFrom != "" {
			fmt.Fprintf(tw, "cast %s→%s\t\t\t\t\t\t\n", t.CastFrom, t.DType)
		} else if t.Status == StatusOK {
			fmt.Fprintf(tw, "identical\t\t\t\t\t\t\n")
		} else {
			fmt.Fprintf(tw, "-\t\t\t\t\t\t\n")
		}
	}
	tw.Flush()
	tt := r.Totals
	ew.printf("\n%d tensors: %d 4-bit (%d bytes, %d weights, %.3f bits per weight), %d kept (%d bytes)\n",
		tt.Tensors, tt.Quantized, tt.QuantizedBytes, tt.QuantizedElements, tt.BitsPerWeight, tt.Kept, tt.KeptBytes)
	if tt.Compared > 0 {
		ew.printf("error over %d compared 4-bit tensors: relative %.4f, SQNR %.2f dB; worst %.2f dB (%s)\n",
			tt.Compared, tt.RelError, tt.SQNR, tt.WorstSQNR, tt.WorstTensor)
	}
	if rt := r.RoundTrip; rt != nil {
		ew.printf("round trip: %d of %d stream tensors read back identically from the checkpoint\n", rt.Identical, rt.Tensors)
	}
	if len(r.KeepIn16) > 0 {
		ew.printf("worth keeping in 16 bits (above the envelope): %s\n", strings.Join(r.KeepIn16, ", "))
	}
	switch {
	case len(r.Findings) > 0:
		ew.printf("INTEGRITY FAILURE: %d problem(s)\n", len(r.Findings))
	case len(r.KeepIn16) > 0:
		ew.printf("QUALITY: %d tensor(s) outside the expected error envelope\n", len(r.KeepIn16))
	default:
		ew.printf("OK\n")
	}
	return ew.err
}

func shapeString(s []int64) string {
	p := make([]string, len(s))
	for i, d := range s {
		p[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(p, ",") + "]"
}

type errWriter struct {
	w   io.Writer
	err error
}

func (e *errWriter) Write(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	n, err := e.w.Write(p)
	e.err = err
	return n, err
}

func (e *errWriter) printf(format string, args ...any) { fmt.Fprintf(e, format, args...) }

var _ = math.Inf
