//go:build !amd64 || purego

package quant

// Without the AVX2 kernels (another architecture, or the purego build tag)
// every block goes through the table-driven Go kernels.

var useSIMD = false

func simdName() string { return "go" }

func (q *blockQuantizer) simd() (int, error) { return 0, nil }

type dequantConsts struct{}

func (d *Decoder) decodeBlocksSIMD(out, packed []byte, absmax []float32) bool { return false }
