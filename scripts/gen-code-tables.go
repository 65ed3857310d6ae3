//go:build ignore

// gen-code-tables prints the bucket tables of kernels/nf4.cu: for each bucket
// of width 1/16 of the clamped value t (NF4: t in [-1, 1], b = round(16t+16);
// FP4: t = |y| in [0, 1], b = round(16t)), the float32 bits of the one
// threshold inside it (2.0 when none) and the number of thresholds below it.
// Thresholds are bitsandbytes' float32 constants (pkg/quant's decision trees).
//
//	go run scripts/gen-code-tables.go
package main

import (
	"fmt"
	"math"
)

func main() {
	nf4 := []float32{-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544,
		-0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767,
		0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683,
		0.5016634166240692, 0.6427869200706482, 0.8614784181118011}
	fp4 := []float32{0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333}
	emit("nf4", nf4, 33, -16)
	emit("fp4", fp4, 17, 0)
}

// emit prints buckets b = 0..nb-1 covering [(b+shift-0.5)/16, (b+shift+0.5)/16).
func emit(name string, th []float32, nb, shift int) {
	fmt.Printf("// %s: %d buckets {threshold bits, thresholds below}\n", name, nb)
	fmt.Printf("__constant__ uint2 %s_tab[%d] = {", name, nb)
	minGap := 1.0
	for b := 0; b < nb; b++ {
		lo := (float64(b+shift) - 0.5) / 16
		hi := (float64(b+shift) + 0.5) / 16
		below, thr, inside := 0, float32(2), 0
		for _, t := range th {
			switch {
			case float64(t) < lo:
				below++
			case float64(t) < hi:
				thr = t
				inside++
				minGap = math.Min(minGap, math.Min(float64(t)-lo, hi-float64(t)))
			}
		}
		if inside > 1 {
			panic("two thresholds in one bucket")
		}
		if b%4 == 0 {
			fmt.Printf("\n   ")
		}
		fmt.Printf(" {0x%08xu, %du},", math.Float32bits(thr), below)
	}
	fmt.Printf("\n};  // nearest threshold to a bucket edge: %.6f\n", minGap)
}
