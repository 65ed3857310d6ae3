package quant

// The vector kernels do not walk the decision trees of tables.go; they count
// thresholds. Both trees compare with strict > against thresholds in
// ascending order along every path, so the code of y depends only on how many
// thresholds y exceeds: NF4's code is that count, FP4's is a permutation of
// the count of its thresholds below |y|, plus 8 when y < 0. The tests check
// these tables against the trees at and around every threshold.

// nf4Thresholds are the float32 thresholds of nf4Code, ascending.
var nf4Thresholds = [15]float32{
	-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
	-0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
	0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
	0.5016634166240692, 0.6427869200706482, 0.8614784181118011,
}

// fp4Thresholds are the float32 thresholds of fp4Code on |y|, ascending.
var fp4Thresholds = [7]float32{0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333}

func thresholds(t Type) []float32 {
	if t == FP4 {
		return fp4Thresholds[:]
	}
	return nf4Thresholds[:]
}

// fp4CountCodes maps count + 8*sign to the FP4 code, taken from the tree at a
// point inside each interval between thresholds.
func fp4CountCodes() (perm [16]byte) {
	th := fp4Thresholds
	for k := range 8 {
		var y float32
		switch k {
		case 0:
			y = th[0] / 2
		case 7:
			y = 1
		default:
			y = (th[k-1] + th[k]) / 2
		}
		perm[k], perm[8+k] = fp4Code(y), fp4Code(-y)
	}
	return perm
}
