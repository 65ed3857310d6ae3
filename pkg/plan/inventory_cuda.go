//go:build cuda

package plan

import (
	"context"

	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/gpus"
)

// In a CUDA build the GPU inventory comes from the driver: names, total and
// free memory and compute capability of every visible device.
func init() {
	DriverInventory = func(context.Context) ([]gpus.GPU, error) {
		infos, err := gpu.Devices()
		if err != nil {
			return nil, err
		}
		out := make([]gpus.GPU, 0, len(infos))
		for _, in := range infos {
			out = append(out, gpus.GPU{
				Index: in.Ordinal, Name: in.Name, TotalBytes: in.TotalBytes, FreeBytes: in.FreeBytes,
				Major: in.Major, Minor: in.Minor, Source: "cuda",
			})
		}
		return out, nil
	}
}
