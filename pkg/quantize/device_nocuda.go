//go:build !cuda

package quantize

import (
	"fmt"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// CUDABuilt reports whether this build can use GPUs.
const CUDABuilt = false

// openBackends returns the CPU backend; this build has no other.
func openBackends(d Device, threads int, warn func(string)) ([]quant.Backend, func(), error) {
	if d.Kind == "cuda" {
		return nil, nil, fmt.Errorf("%w (device %s)", ErrNoCUDA, d)
	}
	return []quant.Backend{quant.CPU(threads)}, func() {}, nil
}

// localReduceGPU is the zero ReduceGPU (quant.DefaultReduceGPU): this build
// sees no GPU. A variable, so that tests can count the calls.
var localReduceGPU = func() quant.ReduceGPU { return quant.ReduceGPU{} }
