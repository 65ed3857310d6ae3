package verify

import (
	"math"
)

// Metrics compare a dequantized tensor q with its reference x.
type Metrics struct {
	Elements int64 `json:"elements"`
	// RelError is the relative Frobenius error ||q - x|| / ||x||.
	RelError float64 `json:"rel_error"`
	// RMSE is sqrt(mean((q - x)²)).
	RMSE float64 `json:"rmse"`
	// MaxAbs is max |q - x|.
	MaxAbs float64 `json:"max_abs_error"`
	// SQNR is 10 log10(||x||² / ||q - x||²) in dB, capped at MaxSQNR.
	SQNR float64 `json:"sqnr_db"`
	// Cosine is <x, q> / (||x|| ||q||); 1 when both are zero.
	Cosine float64 `json:"cosine"`
}

// MaxSQNR caps the SQNR of an exact reconstruction, which would be +Inf.
const MaxSQNR = 999

// accum gathers the sums the metrics need. Blocks add float32 partial sums
// (64..4096 terms, relative error below 1e-5), the tensor adds them in float64.
type accum struct {
	n               int64
	sse, xx, qq, xq float64
	maxAbs          float64
}

func (a *accum) add(b *accum) {
	a.n += b.n
	a.sse += b.sse
	a.xx += b.xx
	a.qq += b.qq
	a.xq += b.xq
	a.maxAbs = math.Max(a.maxAbs, b.maxAbs)
}

func (a *accum) metrics() Metrics {
	m := Metrics{Elements: a.n, MaxAbs: a.maxAbs, SQNR: MaxSQNR, Cosine: 1}
	if a.n > 0 {
		m.RMSE = math.Sqrt(a.sse / float64(a.n))
	}
	switch {
	case a.xx > 0:
		m.RelError = math.Sqrt(a.sse / a.xx)
	case a.sse > 0:
		m.RelError = math.Inf(1)
	}
	if a.sse > 0 {
		m.SQNR = math.Min(MaxSQNR, 10*math.Log10(a.xx/a.sse))
	}
	if a.xx > 0 || a.qq > 0 {
		if a.xx == 0 || a.qq == 0 {
			m.Cosine = 0
		} else {
			m.Cosine = a.xq / math.Sqrt(a.xx*a.qq)
		}
	}
	if math.IsInf(m.RelError, 0) {
		m.RelError = math.MaxFloat64 // JSON has no infinity
		m.SQNR = -MaxSQNR
	}
	return m
}
