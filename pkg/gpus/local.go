package gpus

import (
	"context"
	"fmt"

	"github.com/nf4pipe/nf4pipe/internal/gpu"
)

// Driver is the Inventory that asks the CUDA driver (names, total and free
// memory, compute capability); in a build without CUDA it fails.
func Driver(context.Context) ([]GPU, error) {
	infos, err := gpu.Devices()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoGPU, err)
	}
	out := make([]GPU, 0, len(infos))
	for _, in := range infos {
		out = append(out, GPU{Index: in.Ordinal, Name: in.Name, TotalBytes: in.TotalBytes, FreeBytes: in.FreeBytes,
			Major: in.Major, Minor: in.Minor, Source: "cuda"})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: the driver lists no device", ErrNoGPU)
	}
	return out, nil
}

// Local lists this machine's GPUs through the first of invs that answers
// (by default Driver, then NvidiaSMI).
func Local(ctx context.Context, invs ...Inventory) ([]GPU, error) {
	if len(invs) == 0 {
		invs = []Inventory{Driver, NvidiaSMI}
	}
	var err error
	for _, inv := range invs {
		var gs []GPU
		if gs, err = inv(ctx); err == nil {
			return gs, nil
		}
	}
	return nil, err
}
