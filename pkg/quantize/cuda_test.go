//go:build cuda

package quantize

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// sharedModel returns the shared fixture directory of model m, or "".
func sharedModel(m string) string {
	root, err := os.Getwd()
	if err != nil {
		return ""
	}
	dir := filepath.Join(root, "..", "..", "..", "shared", "testdata", "models", m)
	if _, err := os.Stat(dir); err != nil {
		return ""
	}
	return dir
}

func needGPU(t *testing.T) []gpu.DeviceInfo {
	t.Helper()
	infos, err := gpu.Devices()
	if err != nil || len(infos) == 0 {
		t.Skipf("needs a CUDA GPU: %v", err)
	}
	return infos
}

// sameTensors compares two quantize outputs tensor by tensor: descriptors,
// payloads and nested offsets (the header differs in the device it names).
func sameTensors(t *testing.T, what string, a, b []byte) {
	t.Helper()
	_, x := readAll(t, a)
	_, y := readAll(t, b)
	if len(x) != len(y) {
		t.Fatalf("%s: %d vs %d tensors", what, len(x), len(y))
	}
	for i := range x {
		if x[i].t.Encoding != y[i].t.Encoding || !bytes.Equal(x[i].payload, y[i].payload) {
			t.Errorf("%s: %s differs between CPU and GPU", what, x[i].t.Name)
			continue
		}
		if x[i].t.Quant != nil && math.Float32bits(x[i].t.Quant.NestedOffset) != math.Float32bits(y[i].t.Quant.NestedOffset) {
			t.Errorf("%s: %s nested offset %v (CPU) vs %v (GPU)", what, x[i].t.Name, x[i].t.Quant.NestedOffset, y[i].t.Quant.NestedOffset)
		}
	}
}

// TestCUDAMatchesCPU: the GPU path gives the CPU path's bytes, on the repo's
// llama, the shared fixtures when present, and synthetic tensors of every
// type, block size and dtype, whole or cut into chunks.
func TestCUDAMatchesCPU(t *testing.T) {
	infos := needGPU(t)
	gpuOpt := cpuOptions()
	gpuOpt.Device = "cuda"
	streams := map[string][]byte{"llama": detectStream(t, fixtures.Path(t, "models", "llama"))}
	for _, m := range models {
		if dir := sharedModel(m); dir != "" {
			streams["shared/"+m] = detectStream(t, dir)
		}
	}
	for name, in := range streams {
		cpuOut, _ := mustRun(t, in, cpuOptions())
		gpuOut, sum := mustRun(t, in, gpuOpt)
		if sum.Device == "cpu" {
			t.Fatalf("--device cuda ran on %q", sum.Device)
		}
		sameTensors(t, name, cpuOut, gpuOut)
	}
	for _, typ := range []quant.Type{quant.NF4, quant.FP4} {
		for _, bs := range []int{32, 64, 128, 256, 512, 1024, 2048, 4096} {
			for _, dt := range []tensorstream.DType{tensorstream.BF16, tensorstream.F16, tensorstream.F32} {
				for _, dq := range []bool{true, false} {
					in := makeStream(t, spec{name: "w", dt: dt, shape: []int64{301, 517}, quantize: true},
						spec{name: "v", dt: dt, shape: []int64{1, 3}, quantize: true})
					c, g := cpuOptions(), gpuOpt
					c.Params = quant.Params{Type: typ, BlockSize: bs, DoubleQuant: dq}
					g.Params = c.Params
					g.ChunkSize = 100003
					cpuOut, _ := mustRun(t, in, c)
					gpuOut, _ := mustRun(t, in, g)
					sameTensors(t, fmt.Sprintf("%s/%d/%s/dq=%v", typ, bs, dt, dq), cpuOut, gpuOut)
				}
			}
		}
	}
	if len(infos) > 1 {
		g := gpuOpt
		g.Device = "cuda:0,1"
		in := streams["llama"]
		cpuOut, _ := mustRun(t, in, cpuOptions())
		gpuOut, sum := mustRun(t, in, g)
		if sum.Device != "cuda:0,cuda:1" {
			t.Errorf("devices %q", sum.Device)
		}
		sameTensors(t, "two GPUs", cpuOut, gpuOut)
	}
}

// TestCUDANonFinite: the GPU path refuses NaN with the same index as the CPU.
func TestCUDANonFinite(t *testing.T) {
	needGPU(t)
	payload := randomPayload(newRand(), tensorstream.BF16, 4*640)
	putF32(payload, tensorstream.BF16, 1234, float32(math.NaN()))
	in := makeStream(t, spec{name: "w", dt: tensorstream.BF16, shape: []int64{4, 640}, quantize: true, payload: payload})
	o := cpuOptions()
	o.Device = "cuda"
	_, _, err := run(t, in, o)
	var nf *quant.NonFiniteError
	if !errors.As(err, &nf) || nf.Index != 1234 {
		t.Errorf("GPU: %v", err)
	}
}

// BenchmarkStageCUDA is BenchmarkStage's NF4 case on the GPU.
func BenchmarkStageCUDA(b *testing.B) {
	if infos, err := gpu.Devices(); err != nil || len(infos) == 0 {
		b.Skipf("needs a CUDA GPU: %v", err)
	}
	in := benchStream(b, true)
	dev, err := gpu.Open(0)
	if err != nil {
		b.Fatal(err)
	}
	defer dev.Close()
	o := cpuOptions()
	o.Backends = []quant.Backend{dev.Backend()} // opened once, as a long-lived program would
	b.SetBytes(int64(len(in)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Run(bytes.NewReader(in), io.Discard, o); err != nil {
			b.Fatal(err)
		}
	}
}
