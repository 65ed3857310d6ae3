//go:build cuda

package gpu

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"gorgonia.org/cu"
)

// hog fills device memory from d's own context until at most leave bytes are
// free (leave <= 0: until no allocation of 4 KiB or more succeeds), and
// returns the free memory left and a function that frees the hog. It first
// frees d's workspace, so what a run allocates next must come from what is
// left. Allocation sizes halve from 1 GiB to 4 KiB.
func hog(t *testing.T, d *Device, leave int64) (left int64, release func()) {
	t.Helper()
	var ptrs []cu.DevicePtr
	release = func() {
		if err := d.do(func() error {
			for _, p := range ptrs {
				if err := cu.MemFree(p); err != nil {
					return cuErr("freeing the hog", err)
				}
			}
			ptrs = nil
			return nil
		}); err != nil {
			t.Error(err)
		}
	}
	err := d.do(func() error {
		d.ws.free()
		d.ws = nil
		for size := int64(1 << 30); size >= 4<<10; size /= 2 {
			for {
				if leave > 0 {
					free, _, err := cu.MemInfo()
					if err != nil {
						return cuErr("memory info", err)
					}
					if free-size < leave {
						break
					}
				}
				p, err := cu.MemAlloc(size)
				if errors.Is(err, cu.OutOfMemory) {
					break
				}
				if err != nil {
					return cuErr(fmt.Sprintf("hogging %d bytes", size), err)
				}
				ptrs = append(ptrs, p)
			}
		}
		var err error
		left, _, err = cu.MemInfo()
		return cuErr("memory info", err)
	})
	if err != nil {
		release()
		t.Fatal(err)
	}
	return left, release
}

// oomTensor is a BF16 tensor of about 24 MiB (not a whole number of chunks
// or tiles) and the CPU's quantization of it with the default parameters.
func oomTensor(t *testing.T) (src []byte, n int64, p quant.Params, want *quant.Quantized) {
	t.Helper()
	n = 12<<20 + 1001
	p = quant.DefaultParams()
	src = randomTensor(rand.New(rand.NewPCG(11, 12)), quant.BF16, n, p.BlockSize, false)
	want, err := quant.Quantize(src, quant.BF16, p, quant.CPU(0))
	if err != nil {
		t.Fatal(err)
	}
	return src, n, p, want
}

// sameAsCPU fails the test unless got is want, byte for byte.
func sameAsCPU(t *testing.T, what string, got, want *quant.Quantized) {
	t.Helper()
	for _, s := range []struct {
		name      string
		got, want []byte
	}{{"packed codes", got.Packed, want.Packed}, {"absmax", got.Absmax, want.Absmax}, {"nested absmax", got.Nested, want.Nested}} {
		if i := firstDiff(s.got, s.want); i >= 0 {
			t.Errorf("%s: %s differ from the CPU's at byte %d of %d", what, s.name, i, len(s.want))
		}
	}
	if got.NestedOffset != want.NestedOffset {
		t.Errorf("%s: nested offset %v, CPU %v", what, got.NestedOffset, want.NestedOffset)
	}
}

// payload is q as a stream payload, as Device.Quantize writes it.
func payload(q *quant.Quantized) []byte {
	return append(append(append([]byte(nil), q.Packed...), q.Absmax...), q.Nested...)
}

// wsChunk is the input chunk of d's workspace now; 0 when it has none.
func wsChunk(t *testing.T, d *Device) int64 {
	t.Helper()
	var c int64
	if err := d.do(func() error {
		if d.ws != nil {
			c = d.ws.chunk
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return c
}

// TestOutOfMemorySmallerChunks leaves 24 MiB of device memory free: the
// workspace the tensor's runs need with 64 MiB chunks (a step of 3 M values:
// about 32 MiB for both streams) and with 16 MiB chunks (the same) cannot be
// allocated, that of 4 MiB chunks (11 MiB) can. The Backend and
// Device.Quantize (double quantization on the device) must give the CPU's
// bytes on the smaller chunks, with no warning, and recover the full step
// once the memory is back.
func TestOutOfMemorySmallerChunks(t *testing.T) {
	d := openGPU(t)
	if ChunkBytes != 64<<20 {
		t.Fatalf("ChunkBytes is %d; the memory left below is chosen for 64 MiB", ChunkBytes)
	}
	src, n, p, want := oomTensor(t)
	full := stagingBytes(n, ChunkBytes) // the workspace chunk the tensor's runs need
	// A run first, so that the kernels are loaded before memory is short.
	got, err := quant.Quantize(src, quant.BF16, p, d.Backend())
	if err != nil {
		t.Fatal(err)
	}
	sameAsCPU(t, "before the hog", got, want)

	const leave = 24 << 20
	left, release := hog(t, d, leave)
	defer release()
	t.Logf("device memory free under the hog: %.1f MiB", float64(left)/(1<<20))
	if left > leave+(8<<20) {
		t.Fatalf("could only hog down to %d bytes free, want about %d", left, leave)
	}

	var warns []string
	got, err = quant.Quantize(src, quant.BF16, p, d.BackendWithWarn(func(s string) { warns = append(warns, s) }))
	if err != nil {
		t.Fatalf("backend with %d bytes free: %v", left, err)
	}
	sameAsCPU(t, "backend, smaller chunks", got, want)
	if len(warns) > 0 {
		t.Errorf("warned %q: it should have run on smaller chunks, not on the CPU", warns)
	}
	c := wsChunk(t, d)
	t.Logf("backend chunk under the hog: %d MiB", c>>20)
	if c == 0 || c >= full {
		t.Errorf("workspace chunk %d bytes under the hog, want one smaller than the %d the runs need", c, full)
	}

	dst := make([]byte, quant.SizesFor(n, p).Total())
	off, err := d.Quantize(dst, src, quant.BF16, n, p)
	if err != nil {
		t.Fatalf("Device.Quantize with %d bytes free: %v", left, err)
	}
	if i := firstDiff(dst, payload(want)); i >= 0 {
		t.Errorf("Device.Quantize, smaller chunks: payload differs from the CPU's at byte %d", i)
	}
	if off != want.NestedOffset {
		t.Errorf("Device.Quantize, smaller chunks: offset %v, CPU %v", off, want.NestedOffset)
	}
	if c := wsChunk(t, d); c == 0 || c >= full {
		t.Errorf("Device.Quantize: workspace chunk %d bytes under the hog, want one smaller than %d", c, full)
	}

	release()
	got, err = quant.Quantize(src, quant.BF16, p, d.Backend())
	if err != nil {
		t.Fatalf("after the hog: %v", err)
	}
	sameAsCPU(t, "after the hog", got, want)
	if c := wsChunk(t, d); c != full {
		t.Errorf("after the hog the workspace chunk is %d bytes, want the %d the runs need again", c, full)
	}
}

// TestOutOfMemoryFallsToCPU fills device memory until not even 4 KiB can be
// allocated: the Backend must hand every run to the CPU, with the CPU's bytes
// and exactly one warning line naming the device however many runs it takes.
// Device.Quantize has no CPU fallback (its callers choose): it must fail with
// ErrOutOfMemory. Once the memory is back the device works again.
func TestOutOfMemoryFallsToCPU(t *testing.T) {
	d := openGPU(t)
	src, n, p, want := oomTensor(t)
	full := stagingBytes(n, ChunkBytes)
	left, release := hog(t, d, 0)
	defer release()
	t.Logf("device memory free under the hog: %d KiB", left>>10)

	var warns []string
	b := d.BackendWithWarn(func(s string) { warns = append(warns, s) })
	for i := range 3 {
		got, err := quant.Quantize(src, quant.BF16, p, b)
		if err != nil {
			t.Fatalf("run %d with the device full: %v", i, err)
		}
		sameAsCPU(t, fmt.Sprintf("run %d on the CPU", i), got, want)
	}
	// Runs of a few blocks, as an encoder's chunks are, count as well.
	for first := int64(0); first < 4096; first += 1024 {
		sz := quant.SizesFor(1024, p)
		packed, absmax := make([]byte, sz.Packed), make([]float32, sz.Blocks)
		if err := b.QuantizeBlocks(packed, absmax, src[2*first:2*(first+1024)], quant.BF16, p, first); err != nil {
			t.Fatalf("QuantizeBlocks at %d with the device full: %v", first, err)
		}
		if i := firstDiff(packed, want.Packed[first/2:first/2+sz.Packed]); i >= 0 {
			t.Errorf("QuantizeBlocks at %d: packed codes differ from the CPU's at byte %d", first, i)
		}
	}
	if len(warns) != 1 {
		t.Errorf("%d warnings %q, want exactly one", len(warns), warns)
	} else if w := warns[0]; strings.Contains(w, "\n") || !strings.Contains(w, b.Name()) || !strings.Contains(w, "CPU") {
		t.Errorf("warning %q: want one line naming %s and the CPU", w, b.Name())
	}

	// Without a warning callback the fallback still happens, silently.
	got, err := quant.Quantize(src, quant.BF16, p, d.Backend())
	if err != nil {
		t.Fatalf("Backend (no callback) with the device full: %v", err)
	}
	sameAsCPU(t, "Backend without a callback", got, want)

	_, err = d.Quantize(make([]byte, quant.SizesFor(n, p).Total()), src, quant.BF16, n, p)
	if !errors.Is(err, ErrOutOfMemory) {
		t.Errorf("Device.Quantize with the device full: %v, want ErrOutOfMemory", err)
	}

	release()
	got, err = quant.Quantize(src, quant.BF16, p, b)
	if err != nil {
		t.Fatalf("after the hog: %v", err)
	}
	sameAsCPU(t, "after the hog", got, want)
	if c := wsChunk(t, d); c != full {
		t.Errorf("after the hog the workspace chunk is %d bytes, want the %d the runs need: the run went to the CPU again", c, full)
	}
}
