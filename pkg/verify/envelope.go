package verify

import (
	"math"
	"slices"
	"sync"

	"github.com/nf4pipe/nf4pipe/pkg/qtype"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// codeTol is how far past a cell boundary (in units of the block's absmax) a
// reference value may lie and still be accepted for a code: quantizers differ
// in the last bits of 1/absmax (bitsandbytes' CUDA kernel uses a fast-math
// reciprocal and flushes subnormals), which moves values that sit on a boundary
// into the neighbouring cell. 1e-5 is over 100 float32 ulps at 1 and far below
// the smallest NF4 (0.0398) or FP4 (0.0026) half gap.
const codeTol = 1e-5

// codebook holds a quant type's 16 values and, for each code, the interval of
// y = x/absmax that a nearest-value quantizer maps to it, widened by codeTol.
type codebook struct {
	val    [16]float32
	mid    [16]float32 // centre and half width of [lo, hi], with the open ends at ±2 (|y| <= 1)
	hw     [16]float32
	deq    [16]float32 // what dequantization multiplies: val, with -0 for FP4's code 8 as the kernel has it
	lo, hi [16]float32
}

var codebooks = sync.OnceValue(func() map[string]*codebook {
	cbs := map[string]*codebook{}
	for _, t := range qtype.Types() {
		cbs[t.Name] = newCodebook(t)
	}
	return cbs
})

// codebookFor returns the code book of the quant type called t, or nil.
func codebookFor(t string) *codebook { return codebooks()[t] }

func newCodebook(t *qtype.Type) *codebook {
	m := t.Map
	cb := &codebook{val: m, deq: t.Dequant}
	levels := distinctLevels(m)
	for c, v := range m {
		i := slices.Index(levels, float64(v))
		lo, hi := math.Inf(-1), math.Inf(1)
		if i > 0 {
			lo = (levels[i-1]+levels[i])/2 - codeTol
		}
		if i < len(levels)-1 {
			hi = (levels[i]+levels[i+1])/2 + codeTol
		}
		cb.lo[c], cb.hi[c] = float32(lo), float32(hi)
		l, h := max(lo, -2), min(hi, 2)
		cb.mid[c], cb.hw[c] = float32((l+h)/2), float32((h-l)/2)
	}
	return cb
}

// nestedCellsT holds, for each 8-bit code of double quantization, the interval
// of (absmax - offset) / nested absmax that the nearest-value search maps to it,
// widened by codeTol.
type nestedCellsT struct{ lo, hi [256]float64 }

var nestedCells = sync.OnceValue(func() *nestedCellsT {
	m := quant.NestedMap
	nc := &nestedCellsT{}
	for i := range m {
		nc.lo[i], nc.hi[i] = math.Inf(-1), math.Inf(1)
		if i > 0 {
			nc.lo[i] = (float64(m[i-1])+float64(m[i]))/2 - codeTol
		}
		if i < len(m)-1 {
			nc.hi[i] = (float64(m[i])+float64(m[i+1]))/2 + codeTol
		}
	}
	return nc
})

// distinctLevels returns the code book's values sorted, each once (FP4 has +0 and -0).
func distinctLevels(m [16]float32) []float64 {
	var levels []float64
	for _, v := range m {
		levels = append(levels, float64(v))
	}
	slices.Sort(levels)
	return slices.Compact(levels)
}

// Envelope is the error a tensor of a quant type and block size is expected to
// show, and the bound above which verify flags it.
type Envelope struct {
	// Gaussian is the relative Frobenius error of quantizing independent
	// normally distributed weights, computed exactly (docs/verify.md).
	Gaussian float64 `json:"gaussian_rel_error"`
	// Max is the largest relative error that passes: Gaussian times the
	// tolerance factor.
	Max float64 `json:"max_rel_error"`
	// MinSQNR is Max in decibels: -20 log10(Max).
	MinSQNR float64 `json:"min_sqnr_db"`
}

// DefaultTolerance is the factor over the Gaussian error that a tensor may
// reach before it is flagged: docs/verify.md explains the choice.
const DefaultTolerance = 1.3

type envKey struct {
	t  string
	bs int
}

var (
	envMu    sync.Mutex
	envCache = map[envKey]float64{}
)

// EnvelopeFor returns the envelope of quant type t (a name of pkg/qtype's registry) and block
// size bs, with tolerance factor tol (DefaultTolerance when tol <= 0).
func EnvelopeFor(t string, bs int, tol float64) Envelope {
	if tol <= 0 {
		tol = DefaultTolerance
	}
	k := envKey{t, bs}
	envMu.Lock()
	g, ok := envCache[k]
	if !ok {
		g = GaussianRelError(quant.Type(t).Map(), bs) // NF4's for an unknown type, as before
		envCache[k] = g
	}
	envMu.Unlock()
	return Envelope{Gaussian: g, Max: g * tol, MinSQNR: -20 * math.Log10(g*tol)}
}

// GaussianRelError returns the expected relative Frobenius error of
// nearest-value blockwise absmax quantization with code book m and block size
// bs, for independent N(0, 1) weights (the scale cancels):
//
//	E[e²] = ∫ f(a) · (bs-1)/bs · E[(x - a·Q(x/a))² | |x| < a] da
//
// where f is the density of a block's absmax a (the largest of bs half-normal
// magnitudes), the block's largest element is coded exactly (Q(±1) = ±1), and
// the conditional expectation over the truncated normal is a sum over the code
// cells of closed-form normal integrals. docs/verify.md derives it.
func GaussianRelError(m [16]float32, bs int) float64 {
	levels := distinctLevels(m)
	// cell k holds y in [lo_k, hi_k] and is coded as levels[k]
	bounds := make([]float64, len(levels)+1)
	bounds[0], bounds[len(levels)] = -1, 1
	for i := 1; i < len(levels); i++ {
		bounds[i] = (levels[i-1] + levels[i]) / 2
	}
	B := float64(bs)
	condErr := func(a float64) float64 {
		var s float64
		for k, v := range levels {
			l, u, mu := a*bounds[k], a*bounds[k+1], a*v
			s += (1+mu*mu)*(normCDF(u)-normCDF(l)) - (u*normPDF(u) - l*normPDF(l)) + 2*mu*(normPDF(u)-normPDF(l))
		}
		return s / (2*normCDF(a) - 1)
	}
	// Simpson's rule over a in (0, 10]; the density is negligible outside.
	const steps = 4000
	h := 10.0 / steps
	var total float64
	for i := 1; i <= steps; i++ {
		a := float64(i) * h
		p := 2*normCDF(a) - 1
		f := B * 2 * normPDF(a) * math.Pow(p, B-1)
		w := 2.0
		if i%2 == 1 {
			w = 4
		}
		if i == steps {
			w = 1
		}
		total += w * f * (B - 1) / B * condErr(a)
	}
	return math.Sqrt(total * h / 3)
}

func normPDF(x float64) float64 { return math.Exp(-x*x/2) / math.Sqrt(2*math.Pi) }
func normCDF(x float64) float64 { return 0.5 * math.Erfc(-x/math.Sqrt2) }
