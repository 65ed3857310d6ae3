package quant

import (
	"math"

	"github.com/nf4pipe/nf4pipe/pkg/qtype"
)

// NF4Map and FP4Map are the code books of pkg/qtype's registry: the float32
// value of each 4-bit code, as a checkpoint's quant_map tensor stores it.
var (
	NF4Map = qtype.NF4.Map
	FP4Map = qtype.FP4.Map
)

// NestedMap is the signed dynamic 8-bit map of double quantization: 256 sorted
// float32 values, equal bit for bit to bitsandbytes' nested_quant_map.
var NestedMap = func() (m [256]float32) {
	for i, b := range nestedMapBits {
		m[i] = math.Float32frombits(b)
	}
	return m
}()

// Map returns the code book of t (NF4's for a type the registry does not know).
func (t Type) Map() [16]float32 {
	if info, err := t.Info(); err == nil {
		return info.Map
	}
	return qtype.NF4.Map
}

// nf4Code is bitsandbytes' dQuantizeNF4: a decision tree of strict float32
// comparisons. A NaN takes every "else" and lands on code 0.
func nf4Code(y float32) byte {
	if y > 0.03979014977812767 {
		if y > 0.3893125355243683 {
			if y > 0.6427869200706482 {
				if y > 0.8614784181118011 {
					return 15
				}
				return 14
			}
			if y > 0.5016634166240692 {
				return 13
			}
			return 12
		}
		if y > 0.2035212516784668 {
			if y > 0.2920137718319893 {
				return 11
			}
			return 10
		}
		if y > 0.1202552504837513 {
			return 9
		}
		return 8
	}
	if y > -0.33967943489551544 {
		if y > -0.13791173323988914 {
			if y > -0.045525018125772476 {
				return 7
			}
			return 6
		}
		if y > -0.23460740596055984 {
			return 5
		}
		return 4
	}
	if y > -0.6106329262256622 {
		if y > -0.4599952697753906 {
			return 3
		}
		return 2
	}
	if y > -0.8480964004993439 {
		return 1
	}
	return 0
}

// fp4Code is bitsandbytes' dQuantizeFP4: the sign bit, then a decision tree on |y|.
func fp4Code(y float32) byte {
	var sign byte
	if y < 0 {
		sign = 8
	}
	a := float32(math.Abs(float64(y)))
	if a > 0.29166667 {
		if a > 0.583333 {
			if a > 0.8333333 {
				return 3 + sign
			}
			return 2 + sign
		}
		if a > 0.4166667 {
			return 5 + sign
		}
		return 4 + sign
	}
	if a > 0.0859375 {
		if a > 0.20833333 {
			return 7 + sign
		}
		return 6 + sign
	}
	if a > 0.00260417 {
		return 1 + sign
	}
	return sign
}

func (t Type) codeFunc() func(float32) byte {
	if t == FP4 {
		return fp4Code
	}
	return nf4Code
}

// nestedCode is bitsandbytes' dQuantize<0>: a binary search over the sorted map
// followed by rounding to the nearer neighbour, in float32.
func nestedCode(m *[256]float32, x float32) byte {
	pivot, hi, lo := 127, 255, 0
	lower, upper := float32(-1), float32(1)
	v := m[pivot]
	for i := 64; i > 0; i >>= 1 {
		if x > v {
			lo, lower = pivot, v
			pivot += i
		} else {
			hi, upper = pivot, v
			pivot -= i
		}
		v = m[pivot]
	}
	if hi == 255 {
		upper = m[255]
	}
	if lo == 0 {
		lower = m[0]
	}
	if x > v {
		if x > float32(float32(upper+v)*0.5) {
			return byte(hi)
		}
		return byte(pivot)
	}
	if x < float32(float32(lower+v)*0.5) {
		return byte(lo)
	}
	return byte(pivot)
}
