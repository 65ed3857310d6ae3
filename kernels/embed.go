// Package kernels holds the CUDA sources of nf4pipe and the PTX built from
// them. The PTX is committed, so building the Go code needs no CUDA compiler;
// scripts/build-ptx.sh (`make ptx`) regenerates it with nvcc for compute_75, which
// the driver JIT-compiles for any newer GPU.
package kernels

import _ "embed"

// NF4PTX is the PTX of nf4.cu (compute_75).
//
//go:embed nf4.ptx
var NF4PTX string
