//go:build !amd64 || purego

package verify

import "github.com/nf4pipe/nf4pipe/pkg/tensorstream"

// Without the AVX2 kernel every block goes through kernel.block.

func useFast(ref, deq tensorstream.DType, blockSize int) bool { return false }

func (k *kernel) fastBF16(s *blockSums, raw, packed []byte, amax []float32, full int) int { return 0 }
