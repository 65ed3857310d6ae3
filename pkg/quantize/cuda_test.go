//go:build cuda

package quantize

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/internal/gpu"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// needGPU skips t without a GPU; with one, it makes every GPU that Run
// opens during t take the work from the first run of blocks on (rather than
// after its start-up, which outlasts these small models on the CPU).
func needGPU(t *testing.T) []gpu.DeviceInfo {
	t.Helper()
	infos, err := gpu.Devices()
	if err != nil || len(infos) == 0 {
		t.Skipf("needs a CUDA GPU: %v", err)
	}
	testWaitGPU = true
	t.Cleanup(func() { testWaitGPU = false })
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
		for _, dir := range fixtures.SharedGlob(t, filepath.Join("models", m)) {
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

// fill uploads zeros to dev until not even 4 KiB more fits (sizes halving
// from 1 GiB), and returns the buffers; closing dev frees them with its context.
func fill(t *testing.T, dev *gpu.Device) []*gpu.Buffer {
	t.Helper()
	host := make([]byte, 1<<30)
	var bufs []*gpu.Buffer
	for size := len(host); size >= 4<<10; size /= 2 {
		for {
			b, err := dev.Upload(host[:size])
			if errors.Is(err, gpu.ErrOutOfMemory) {
				break
			}
			if err != nil {
				t.Fatalf("filling device memory: %v", err)
			}
			bufs = append(bufs, b)
		}
	}
	free, total, err := dev.MemInfo()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("filled: %d KiB of %d MiB free", free>>10, total>>20)
	return bufs
}

// captureStderr runs f with os.Stderr going to a pipe and returns what it got.
func captureStderr(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan string, 1)
	go func() {
		b, _ := io.ReadAll(r)
		r.Close()
		got <- string(b)
	}()
	old := os.Stderr
	os.Stderr = w
	func() {
		defer func() {
			os.Stderr = old
			w.Close()
		}()
		f()
	}()
	return <-got
}

// TestCUDAOutOfMemoryFallsToCPU: with --device cuda:0 and the GPU's memory
// filled right after quantize opened it, every tensor goes to the CPU: the
// CPU's bytes, and one warning naming the device for the whole run, given to
// Options.Warn, or without one written to stderr as one "quantize: warning:"
// line.
func TestCUDAOutOfMemoryFallsToCPU(t *testing.T) {
	needGPU(t)
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	cpuOut, cpuSum := mustRun(t, in, cpuOptions())
	if cpuSum.Quantized < 2 {
		t.Fatalf("the fixture has %d tensors to quantize; the test needs several to see one warning for all", cpuSum.Quantized)
	}
	testHookOpened = func(devs []*gpu.Device) {
		if len(devs) != 1 {
			t.Errorf("opened %d devices for cuda:0", len(devs))
			return
		}
		fill(t, devs[0])
	}
	defer func() { testHookOpened = nil }()

	var warns []string
	o := cpuOptions()
	o.Device = "cuda:0"
	o.Warn = func(s string) { warns = append(warns, s) }
	out, sum, err := run(t, in, o)
	if err != nil {
		t.Fatalf("--device cuda:0 with the device full: %v", err)
	}
	sameTensors(t, "device full", cpuOut, out)
	if sum.Device != "cuda:0" {
		t.Errorf("summary device %q", sum.Device)
	}
	if len(warns) != 1 {
		t.Errorf("%d warnings %q for %d tensors, want one", len(warns), warns, sum.Quantized)
	} else if w := warns[0]; strings.Contains(w, "\n") || !strings.Contains(w, "cuda:0") || !strings.Contains(w, "CPU") {
		t.Errorf("warning %q: want one line naming cuda:0 and the CPU", w)
	}

	o.Warn = nil
	stderr := captureStderr(t, func() { out, _, err = run(t, in, o) })
	if err != nil {
		t.Fatalf("--device cuda:0 with the device full, no Warn: %v", err)
	}
	sameTensors(t, "device full, no Warn", cpuOut, out)
	if strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "quantize: warning: cuda:0") {
		t.Errorf("stderr %q: want one line \"quantize: warning: cuda:0...\"", stderr)
	}
}

// TestCUDAOpenOutOfMemory: another context (as another process would) holds
// all of GPU 0's memory before quantize starts; --device cuda:0 and --device
// cuda must still give the CPU's bytes, with one warning, not fail.
func TestCUDAOpenOutOfMemory(t *testing.T) {
	infos := needGPU(t)
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	cpuOut, _ := mustRun(t, in, cpuOptions())
	other, err := gpu.Open(0)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	fill(t, other)
	devices := []string{"cuda:0"}
	if len(infos) == 1 {
		devices = append(devices, "cuda") // with more GPUs, cuda would use the others
	}
	for _, dev := range devices {
		var warns []string
		o := cpuOptions()
		o.Device = dev
		o.Warn = func(s string) { warns = append(warns, s) }
		out, sum, err := run(t, in, o)
		if err != nil {
			t.Errorf("--device %s with all device memory held elsewhere: %v, want the CPU's bytes and a warning"+
				" (an error of ErrCUDA rather than ErrOutOfMemory means gpu.Open did not mark the driver's out of memory)", dev, err)
			continue
		}
		sameTensors(t, "--device "+dev+", memory held elsewhere", cpuOut, out)
		if sum.Device != "cpu" {
			t.Errorf("--device %s: summary device %q, want cpu", dev, sum.Device)
		}
		if len(warns) != 1 || !strings.Contains(warns[0], "CPU") {
			t.Errorf("--device %s: warnings %q, want one about the CPU", dev, warns)
		}
	}
}

// TestCUDANoDeviceOneLine runs this test binary again with
// CUDA_VISIBLE_DEVICES="" (so cuInit finds no device), as a CUDA build of
// quantize would run on a machine without a usable GPU: the process must say
// so in one line on stderr, write nothing to stdout (the stream the next
// stage reads) and exit with status 1.
func TestCUDANoDeviceOneLine(t *testing.T) {
	if os.Getenv("NF4PIPE_NO_DEVICE_CHILD") != "" {
		t.Fatal("the test binary started with CUDA_VISIBLE_DEVICES=\"\": cuInit found a device after all")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestCUDANoDeviceOneLine$", "-test.count=1")
	cmd.Env = append(os.Environ(), "CUDA_VISIBLE_DEVICES=", "NF4PIPE_NO_DEVICE_CHILD=1")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	if code := cmd.ProcessState.ExitCode(); code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	if stdout.Len() > 0 {
		t.Errorf("stdout (the stream) got %q: a message there corrupts the next stage's input", stdout.String())
	}
	line := stderr.String()
	if strings.Count(line, "\n") != 1 || !strings.HasSuffix(line, "\n") || !strings.Contains(strings.ToLower(line), "gpu") {
		t.Errorf("stderr %q: want one line that says no usable GPU was found", line)
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

// TestCUDAAutoShares: --device auto with the GPU open from the first run
// shares the large runs between the CPU and the GPU and gives the CPU's
// bytes; the summary names both.
func TestCUDAAutoShares(t *testing.T) {
	needGPU(t)
	in := bigStream(t)
	want, _ := mustRun(t, in, cpuOptions())
	o := cpuOptions()
	o.Device = "auto"
	got, sum := mustRun(t, in, o)
	if !sameAfterHeader(t, got, want) {
		t.Error("--device auto: output differs from the CPU's")
	}
	if sum.Device != "cpu+cuda:0" {
		t.Errorf("--device auto: device %q, want cpu+cuda:0 (the first shared runs go to the GPU)", sum.Device)
	}
}

// TestCUDAStartsOnCPU: without waiting for the GPU (as the tool runs),
// --device cuda and auto give the CPU's bytes whichever backend each run
// lands on, and a later run in the same process (the driver initialized)
// too.
func TestCUDAStartsOnCPU(t *testing.T) {
	needGPU(t)
	testWaitGPU = false
	in := bigStream(t)
	want, _ := mustRun(t, in, cpuOptions())
	for _, dev := range []string{"cuda:0", "auto", "cuda", "auto"} {
		o := cpuOptions()
		o.Device = dev
		got, sum := mustRun(t, in, o)
		if !sameAfterHeader(t, got, want) {
			t.Errorf("--device %s: output differs from the CPU's", dev)
		}
		t.Logf("--device %s: ran on %s in %.3f s", dev, sum.Device, sum.Seconds)
	}
}

// BenchmarkStageFileDevice is BenchmarkStageFile with the GPU already open
// (its start-up left out): the CPU alone, the GPU alone (--device cuda once
// ready) and shared (auto once ready), with the CPU's 4 MiB chunks and the
// GPU's 32 MiB, so that the steady state of each path can be compared:
//
//	NF4PIPE_STREAM=/tmp/tl.stream go test -tags cuda -run '^$' -bench StageFileDevice -benchtime 5x ./pkg/quantize
//
// The shared case reports the router's measures once (b.Log).
func BenchmarkStageFileDevice(b *testing.B) {
	name, st := streamFile(b)
	dev, err := gpu.Open(0)
	if err != nil {
		b.Skipf("needs a CUDA GPU: %v", err)
	}
	defer dev.Close()
	gb := dev.Backend()
	if err := warm(gb); err != nil {
		b.Fatal(err)
	}
	const gpuChunk = 32 << 20 // the GPU's runs before 2026-12-03, for comparison
	for _, chunk := range []int{cpuChunk, gpuChunk} {
		for _, mode := range []string{"cpu", "gpu", "shared"} {
			b.Run(fmt.Sprintf("%s/chunk=%dMiB", mode, chunk>>20), func(b *testing.B) {
				o := cpuOptions()
				o.ChunkSize = chunk
				var h *hybrid
				if mode != "cpu" {
					m := map[string]hybridMode{"gpu": gpuAlone, "shared": shared}[mode]
					h = newHybrid(quant.CPU(0), "cuda:0", m, func() (quant.Backend, func(), error) { return gb, func() {}, nil })
					<-h.ready
					o.Backends = []quant.Backend{h}
				}
				b.SetBytes(st.Size())
				for b.Loop() {
					f, err := os.Open(name)
					if err != nil {
						b.Fatal(err)
					}
					_, err = Run(f, io.Discard, o)
					f.Close()
					if err != nil {
						b.Fatal(err)
					}
				}
				if h != nil && mode == "shared" {
					b.Logf("%s: %s", h.Name(), h.routing())
				}
			})
		}
	}
}
