package quant

import (
	"bytes"
	"math"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// TestReferenceGolden holds the literal algorithm to every golden case.
func TestReferenceGolden(t *testing.T) {
	for _, name := range goldenFiles {
		f := readST(t, fixtures.Shared(t, "bnb", name))
		for _, c := range goldenCases(t, f) {
			x := widen(c.dtype(), f.get(t, c.Input).Data)
			packed, absmax := refQuantize(x, Type(c.QuantType), c.BlockSize)
			if !bytes.Equal(packed, f.get(t, c.Key+".packed").Data) {
				t.Errorf("%s: %v: packed differs", name, c)
			}
			if !c.DoubleQuant {
				if got, want := absmax, f32s(f.get(t, c.Key+".absmax").Data); !equalBits(got, want) {
					t.Errorf("%s: %v: absmax differs", name, c)
				}
				continue
			}
			off := absmaxMean(absmax)
			if float64(off) != *c.NestedOffset {
				t.Errorf("%s: %v: offset %v, want %v", name, c, off, *c.NestedOffset)
			}
			codes := make([]byte, len(absmax))
			nested := make([]float32, (len(absmax)+255)/256)
			nestQuantize(codes, nested, absmax, float32(*c.NestedOffset))
			if !bytes.Equal(codes, f.get(t, c.Key+".absmax").Data) {
				t.Errorf("%s: %v: absmax codes differ", name, c)
			}
			if !equalBits(nested, f32s(f.get(t, c.Key+".nested_absmax").Data)) {
				t.Errorf("%s: %v: nested absmax differs", name, c)
			}
		}
	}
}

func equalBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}
