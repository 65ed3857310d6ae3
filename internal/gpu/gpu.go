// Package gpu runs nf4pipe's 4-bit quantization on NVIDIA GPUs through the CUDA
// driver API (gorgonia.org/cu). It is the only package that imports cu, and
// only in builds with the `cuda` tag; the default build compiles a stub of the
// same API whose functions fail with ErrNoCUDA, so the module builds with
// CGO_ENABLED=0 and runs anywhere.
//
// The driver is initialized (cuInit) by the first Count, Devices, Open or
// ReduceGeometry of a process, not when it starts (internal/gpu/cudainit):
// a CUDA-build process that uses no GPU never touches the driver.
//
// Each opened Device owns one CUDA context on one goroutine locked to its OS
// thread; every call is shipped to that goroutine. Kernels come from the PTX
// embedded by package kernels. Results are bit-identical to pkg/quant.
package gpu

import (
	"errors"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

var (
	// ErrNoCUDA marks a build without the cuda tag.
	ErrNoCUDA = errors.New("gpu: built without CUDA (rebuild with -tags cuda)")
	// ErrNoDevice marks a CUDA build on a machine without a usable GPU.
	ErrNoDevice = errors.New("gpu: no usable CUDA device")
	// ErrCUDA marks a failed driver call.
	ErrCUDA = errors.New("gpu: CUDA")
	// ErrOutOfMemory marks a device allocation that failed even with the
	// smallest chunks; callers fall back to the CPU.
	ErrOutOfMemory = errors.New("gpu: out of device memory")
	// ErrArgs marks arguments that do not fit together (lengths, dtype).
	ErrArgs = errors.New("gpu: bad arguments")
)

// DeviceInfo describes one GPU as the driver reports it.
type DeviceInfo struct {
	Ordinal    int
	Name       string
	TotalBytes int64
	FreeBytes  int64
	Major      int // compute capability
	Minor      int
}

// checkArgs validates the common arguments of Quantize and Dequantize.
func checkArgs(raw int, dt quant.DType, n int64, p quant.Params) error {
	if err := p.Validate(); err != nil {
		return err
	}
	if !quant.Supported(dt) {
		return errors.Join(ErrArgs, quant.ErrDType)
	}
	if int64(raw) != n*int64(dt.Size()) {
		return ErrArgs
	}
	return nil
}

// minStepElems is the fewest values of a pipeline step, unless the run has
// fewer: below it a step's fixed costs (launches, a synchronization, the
// call of parallelCopy) weigh on its copies.
const minStepElems = 1 << 19

// pipelineStep is the values quantizeBlocks stages at a time for a run of n:
// a whole workspace chunk where the run fills at least pipelineSteps of
// them, else about n/pipelineSteps (a multiple of align, at least
// minStepElems), so that a run of a few MiB, as the quantize stage hands
// over, still goes in several steps whose copies overlap: the staging copy
// of step i+1 and the copy back of step i-1 run on the host while step i is
// on the device. In a single step each of them waited for the others.
func pipelineStep(n, chunkElems, align int64) int64 {
	if n >= pipelineSteps*chunkElems {
		return chunkElems
	}
	step := (n/pipelineSteps + align - 1) / align * align
	return min(chunkElems, max(step, minStepElems))
}

// stepAlign is the values a pipeline step is a multiple of: whole tiles of
// the largest block size, so every step but the last starts and ends on a
// block and tile boundary.
const stepAlign = 4096

// chunkElems is the values of a workspace chunk of chunkBytes: sized for the
// widest input (float32).
func chunkElems(chunkBytes int64) int64 { return max(chunkBytes/4/stepAlign, 1) * stepAlign }

// stagingBytes is the workspace chunk a run of n values needs with chunks of
// at most chunkBytes: one pipeline step of the widest input.
func stagingBytes(n, chunkBytes int64) int64 {
	return 4 * pipelineStep(n, chunkElems(chunkBytes), stepAlign)
}

// pipelineSteps is the steps a run smaller than the workspace is cut into.
const pipelineSteps = 4
