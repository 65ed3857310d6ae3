//go:build cuda

package gpu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"testing"
	"unsafe"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"gorgonia.org/cu"
)

// TestBenchProduction times the production kernels as the tools launch them
// (launchQuantize, launchNest, launchDequant with Device.Grids) on the
// benchmark tensor (128256x4096 bf16, NF4, block 64, double quantization),
// as percentages of a device-to-device copy, next to the kernels they
// replaced, and checks each pair's output is byte-identical. It runs when
// NF4PIPE_GPU_BENCH is set; a timing report, not an assertion (only a
// difference in output fails it). The last lines, SUMMARY, are the figures.
func TestBenchProduction(t *testing.T) {
	if os.Getenv("NF4PIPE_GPU_BENCH") == "" {
		t.Skip("set NF4PIPE_GPU_BENCH=1 to time the production kernels")
	}
	d := openGPU(t)
	const rows, cols = 128256, 4096
	n := int64(rows * cols)
	p := quant.DefaultParams()
	sz := quant.SizesFor(n, p)
	// 1 Mi random values, repeated: the kernels' speed does not depend on
	// where values repeat, and drawing 525 M normals takes seconds.
	src := make([]byte, 2*n)
	r := rand.New(rand.NewPCG(3, 4))
	const seed = 1 << 20
	for i := 0; i < seed; i++ {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(math.Float32bits(float32(r.NormFloat64()*0.02))>>16))
	}
	for k := 2 * seed; k < len(src); k *= 2 {
		copy(src[k:], src[:k])
	}
	var summary []string
	sumf := func(format string, args ...any) { summary = append(summary, fmt.Sprintf(format, args...)) }
	err := d.do(func() error {
		var mem devBuf
		defer mem.free()
		sizes := []int64{2 * n, 2 * n, sz.Packed, sz.Blocks * 4, sz.Packed, sz.Blocks * 4, 16, sz.Blocks, sz.Nested}
		ptrs := make([]cu.DevicePtr, len(sizes))
		for i, size := range sizes {
			var err error
			if ptrs[i], err = mem.alloc(size); err != nil {
				return err
			}
		}
		x, y, packed, absmax, packedOld, absmaxOld, bad, codes, nested := ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8]
		if err := cu.MemcpyHtoD(x, unsafe.Pointer(&src[0]), 2*n); err != nil {
			return err
		}
		if err := cu.MemsetD32(bad, 0, 1); err != nil {
			return err
		}
		if err := cu.Synchronize(); err != nil { // the copy ran on the legacy stream
			return err
		}
		st := d.streams[0]
		sync := func() error { return cuErr("sync", st.Synchronize()) }
		timeIt := eventTimer(t, st)
		copyBW := timeIt("device-to-device copy (bf16 tensor, r+w)", 4*n, func() error {
			return cu.MemcpyDtoDAsync(y, x, 2*n, st)
		})
		pct := func(bw float64) float64 { return 100 * bw / copyBW }
		regs := func(name string) string {
			f := d.fn[name]
			r, _ := f.Attribute(cu.NumRegs)
			return fmt.Sprintf("r%d f%d", r, d.fit[name])
		}

		// Quantize: production against quant_tile_bf16_nf4_b64_v4.
		qname, _ := tileKernel(quant.BF16, p.Type, p.BlockSize)
		const old = "quant_tile_bf16_nf4_b64_v4"
		qbytes := 2*n + sz.Packed + sz.Blocks*4
		tiles := n / 1024
		quantOld := func() error {
			return d.launch(old, min(d.Grids.Quant, d.fit[old]), tiles, st, uint64(x), uint64(tiles), uint64(packedOld), uint64(absmaxOld), uint64(bad))
		}
		quantNew := func() error { return d.launchQuantize(x, n, quant.BF16, p, packed, absmax, bad, st) }
		for _, f := range []func() error{quantOld, quantNew, sync} {
			if err := f(); err != nil {
				return err
			}
		}
		sameQ := bytes.Equal(download(packed, sz.Packed), download(packedOld, sz.Packed)) &&
			bytes.Equal(download(absmax, sz.Blocks*4), download(absmaxOld, sz.Blocks*4)) &&
			binary.LittleEndian.Uint32(download(bad, 4)) == 0
		if !sameQ {
			t.Errorf("%s and %s differ in codes, absmax or flag", qname, old)
		}
		oldQ := timeIt(fmt.Sprintf("quantize %s grid %d/SM", old, min(d.Grids.Quant, d.fit[old])), qbytes, quantOld)
		newQ := timeIt(fmt.Sprintf("quantize %s grid %d/SM", qname, min(d.Grids.Quant, d.fit[qname])), qbytes, quantNew)
		sumf("SUMMARY quantize   %-28s %s %6.2f%% of copy (was %s %.2f%%) identical %v", qname, regs(qname), pct(newQ), old, pct(oldQ), sameQ)

		// Quantize + mean + nest, as Device.Quantize launches them.
		dqBytes := 2*n + sz.Packed + 3*sz.Blocks*4 + sz.Blocks + sz.Nested
		chain := func() error {
			if err := quantNew(); err != nil {
				return err
			}
			return d.launchNest(absmax, sz.Blocks, quant.DefaultReduceGPU, codes, nested, st)
		}
		chainBW := timeIt("quantize + mean + nest (all bytes moved)", dqBytes, chain)
		if err := sync(); err != nil {
			return err
		}
		off := math.Float32frombits(binary.LittleEndian.Uint32(download(d.mean.result(), 4)))
		am := make([]float32, sz.Blocks)
		cu.MemcpyDtoH(unsafe.Pointer(&am[0]), absmax, sz.Blocks*4)
		wantCodes, wantNested, wantOff := quant.DoubleQuantize(am, quant.DefaultReduceGPU)
		gotNested := make([]float32, sz.NestedBlocks())
		cu.MemcpyDtoH(unsafe.Pointer(&gotNested[0]), nested, sz.Nested)
		sameDQ := off == wantOff && bytes.Equal(download(codes, sz.Blocks), wantCodes) && slicesEqualBits(gotNested, wantNested)
		if !sameDQ {
			t.Errorf("double quantization on the device differs from quant.DoubleQuantize (offset %v, want %v)", off, wantOff)
		}
		sumf("SUMMARY quant+dq   %s@%d+mean_torch(%s)+nest@%d %6.2f%% of copy, matches CPU %v", qname, min(d.Grids.Quant, d.fit[qname]), regs("mean_torch"), d.Grids.Nest, pct(chainBW), sameDQ)

		// Dequantize, double quantization and f32 absmax: production against
		// dequant_bf16_v4 at the same grid.
		for _, dq := range []bool{true, false} {
			q := p
			q.DoubleQuant = dq
			sec, moved := codes, sz.Total()+2*n
			if !dq {
				sec, moved = absmax, sz.Packed+sz.Blocks*4+2*n
			}
			name, v := dequantKernel(quant.BF16, q)
			oldName, oldV := fmt.Sprintf("dequant_bf16_v4_%s", map[bool]string{true: "dq", false: "f32"}[dq]), 4
			if err := d.launchDequantWith(oldName, oldV, n, q, packed, sec, nested, off, y, st); err != nil {
				return err
			}
			if err := sync(); err != nil {
				return err
			}
			want := download(y, 2*n)
			cu.MemsetD8(y, 0xAB, 2*n)
			if err := cu.Synchronize(); err != nil {
				return err
			}
			if err := d.launchDequantWith(name, v, n, q, packed, sec, nested, off, y, st); err != nil {
				return err
			}
			if err := sync(); err != nil {
				return err
			}
			same := bytes.Equal(download(y, 2*n), want)
			if !same {
				t.Errorf("%s and %s differ", name, oldName)
			}
			oldBW := timeIt(fmt.Sprintf("dequantize %s grid %d/SM", oldName, d.Grids.Dequant), moved, func() error {
				return d.launchDequantWith(oldName, oldV, n, q, packed, sec, nested, off, y, st)
			})
			newBW := timeIt(fmt.Sprintf("dequantize %s grid %d/SM", name, d.Grids.Dequant), moved, func() error {
				return d.launchDequant(quant.BF16, n, q, packed, sec, nested, off, y, st)
			})
			sumf("SUMMARY dequantize %-28s %s grid %d/SM %6.2f%% of copy (was %s %.2f%%) identical %v", name, regs(name), d.Grids.Dequant, pct(newBW), oldName, pct(oldBW), same)
		}
		sumf("SUMMARY copy %.1f GB/s", copyBW)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range summary {
		t.Log(s)
	}
}
