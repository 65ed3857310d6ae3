//go:build cuda

package gpu

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
	"unsafe"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"gorgonia.org/cu"
)

func openGPU(t *testing.T) *Device {
	t.Helper()
	d, err := Open(0)
	if err != nil {
		t.Skipf("no usable GPU: %v", err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

// TestGoldenGPU quantizes every golden input on the GPU and checks codes,
// absmax, nested absmax, offset and the dequantized values bit for bit.
func TestGoldenGPU(t *testing.T) {
	d := openGPU(t)
	for _, name := range goldenNames {
		f := readGolden(t, name)
		for _, c := range f.cases {
			dt := quant.BF16
			if c.DType == "float16" {
				dt = quant.F16
			}
			p := quant.Params{Type: quant.Type(c.QuantType), BlockSize: c.BlockSize, DoubleQuant: c.DoubleQuant}
			n := c.elements()
			sz := quant.SizesFor(n, p)
			src := f.get(t, c.Input)
			got := make([]byte, sz.Total())
			off, err := d.Quantize(got, src, dt, n, p)
			if err != nil {
				t.Fatalf("%s %s: %v", name, c.Key, err)
			}
			want := append([]byte(nil), f.get(t, c.Key+".packed")...)
			want = append(want, f.get(t, c.Key+".absmax")...)
			if c.DoubleQuant {
				want = append(want, f.get(t, c.Key+".nested_absmax")...)
				if off != c.NestedOffset {
					t.Errorf("%s %s: offset %v, golden %v", name, c.Key, off, c.NestedOffset)
				}
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s %s (%+v %v): payload differs from golden", name, c.Key, p, c.Shape)
				continue
			}
			deq := make([]byte, len(src))
			if err := d.Dequantize(deq, got, dt, n, p, off); err != nil {
				t.Fatalf("%s %s: dequantize: %v", name, c.Key, err)
			}
			if !bytes.Equal(deq, f.get(t, c.Key+".dequant")) {
				t.Errorf("%s %s: dequantized values differ from golden", name, c.Key)
			}
		}
	}
}

// refCode is the literal decision of design.md (tree for NF4, FP4 tree).
func refCode(t quant.Type, y float32) byte {
	if t == quant.NF4 {
		th := []float32{-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683, 0.5016634166240692, 0.6427869200706482, 0.8614784181118011}
		var c byte
		for _, v := range th {
			if y > v {
				c++
			}
		}
		return c
	}
	var s byte
	if y < 0 {
		s = 8
	}
	a := float32(math.Abs(float64(y)))
	var c byte
	switch {
	case a > 0.29166667:
		if a > 0.583333 {
			c = 2
			if a > 0.8333333 {
				c = 3
			}
		} else {
			c = 4
			if a > 0.4166667 {
				c = 5
			}
		}
	case a > 0.0859375:
		c = 6
		if a > 0.20833333 {
			c = 7
		}
	case a > 0.00260417:
		c = 1
	}
	return c | s
}

// TestThresholdSweep puts every float32 within 300 ulps of each threshold into
// blocks whose absmax is exactly 1 (so y = x) and compares with the tree.
func TestThresholdSweep(t *testing.T) {
	d := openGPU(t)
	for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
		var xs []float32
		for c := 0; c < 16; c++ {
			for _, s := range []float32{-1, 1} {
				base := s * quant.Type(qt).Map()[c]
				_ = base
			}
		}
		ths := []float32{-0.8480964004993439, -0.6106329262256622, -0.4599952697753906, -0.33967943489551544, -0.23460740596055984, -0.13791173323988914, -0.045525018125772476, 0.03979014977812767, 0.1202552504837513, 0.2035212516784668, 0.2920137718319893, 0.3893125355243683, 0.5016634166240692, 0.6427869200706482, 0.8614784181118011, 0.00260417, 0.0859375, 0.20833333, 0.29166667, 0.4166667, 0.583333, 0.8333333, -0.00260417, -0.0859375, -0.20833333, -0.29166667, -0.4166667, -0.583333, -0.8333333, 0, 1, -1}
		for _, th := range ths {
			b := int64(math.Float32bits(th))
			for k := int64(-300); k <= 300; k++ {
				v := math.Float32frombits(uint32(b + k))
				if th == 0 {
					v = float32(k) * 1e-30
				}
				if math.Abs(float64(v)) <= 1 {
					xs = append(xs, v)
				}
			}
		}
		// Blocks of 64: element 0 is 1 (absmax 1), then 63 sweep values.
		var x []float32
		for i := 0; i < len(xs); i += 63 {
			x = append(x, 1)
			x = append(x, xs[i:min(i+63, len(xs))]...)
			for len(x)%64 != 0 {
				x = append(x, 0.5)
			}
		}
		src := make([]byte, 4*len(x))
		for i, v := range x {
			binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
		}
		p := quant.Params{Type: qt, BlockSize: 64}
		n := int64(len(x))
		got := make([]byte, quant.SizesFor(n, p).Total())
		if _, err := d.Quantize(got, src, quant.F32, n, p); err != nil {
			t.Fatal(err)
		}
		bad := 0
		for i, v := range x {
			c := got[i/2] >> 4
			if i%2 == 1 {
				c = got[i/2] & 15
			}
			if w := refCode(qt, v); c != w {
				if bad++; bad < 10 {
					t.Errorf("%s: y=%v (%#x): code %d, tree %d", qt, v, math.Float32bits(v), c, w)
				}
			}
		}
		if bad > 0 {
			t.Errorf("%s: %d of %d codes differ", qt, bad, len(x))
		}
	}
}

// TestRandomOddSizes checks the GPU on random tensors with short last blocks
// and odd counts against a literal reference, through several chunks.
func TestRandomOddSizes(t *testing.T) {
	d := openGPU(t)
	old := ChunkBytes
	ChunkBytes = 1 << 20
	defer func() { ChunkBytes = old }()
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int64{1, 7, 63, 65, 1001, 300001, 1 << 20, 3<<20 + 17} {
		for _, bs := range []int{32, 64, 256, 4096} {
			for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
				x := make([]float32, n)
				src := make([]byte, 2*n)
				for i := range x {
					v := float32(r.NormFloat64() * 0.02)
					h := uint16(math.Float32bits(v) >> 16)
					x[i] = math.Float32frombits(uint32(h) << 16)
					binary.LittleEndian.PutUint16(src[2*i:], h)
				}
				p := quant.Params{Type: qt, BlockSize: bs, DoubleQuant: true}
				sz := quant.SizesFor(n, p)
				got := make([]byte, sz.Total())
				off, err := d.Quantize(got, src, quant.BF16, n, p)
				if err != nil {
					t.Fatal(err)
				}
				// Reference codes and absmax.
				absmax := make([]float32, sz.Blocks)
				want := make([]byte, sz.Packed)
				for b := int64(0); b < sz.Blocks; b++ {
					lo, hi := b*int64(bs), min((b+1)*int64(bs), n)
					m := float32(-math.MaxFloat32)
					if hi-lo < int64(bs) {
						m = 0
					}
					for _, v := range x[lo:hi] {
						m = max(m, float32(math.Abs(float64(v))))
					}
					absmax[b] = m
					sc := float32(1) / m
					for i := lo; i < hi; i++ {
						c := refCode(qt, x[i]*sc)
						if i%2 == 0 {
							want[i/2] = c << 4
						} else {
							want[i/2] |= c
						}
					}
				}
				if !bytes.Equal(got[:sz.Packed], want) {
					t.Errorf("n=%d bs=%d %s: packed codes differ", n, bs, qt)
				}
				if wo := MeanF32(absmax); wo != off {
					t.Errorf("n=%d bs=%d %s: offset %v, want %v", n, bs, qt, off, wo)
				}
				// Dequantized absmax must be close to the true one.
				codes, nested := got[sz.Packed:sz.Packed+sz.Blocks], f32s(got[sz.Packed+sz.Blocks:])
				deq := make([]float32, sz.Blocks)
				quant.NestDequantize(deq, codes, nested, off)
				for i := range deq {
					if math.Abs(float64(deq[i]-absmax[i])) > 0.02*float64(absmax[i])+1e-6 {
						t.Fatalf("n=%d bs=%d: absmax %d: %v from %v", n, bs, i, deq[i], absmax[i])
					}
				}
			}
		}
	}
}

// TestBenchReport prints device figures for docs/BENCHMARKS.md when
// NF4PIPE_GPU_BENCH=1 (a timing report, not an assertion).
func TestBenchReport(t *testing.T) {
	if os.Getenv("NF4PIPE_GPU_BENCH") == "" {
		t.Skip("set NF4PIPE_GPU_BENCH=1 to print GPU bandwidth figures")
	}
	d := openGPU(t)
	info, _ := d.Info()
	t.Logf("device: %s, cc %d.%d, %d MiB", info.Name, info.Major, info.Minor, info.TotalBytes>>20)
	const rows, cols = 128256, 4096
	n := int64(rows * cols)
	p := quant.DefaultParams()
	sz := quant.SizesFor(n, p)
	r := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 2*n)
	for i := int64(0); i < n; i++ {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(math.Float32bits(float32(r.NormFloat64()*0.02))>>16))
	}
	err := d.do(func() error {
		var mem devBuf
		defer mem.free()
		x, err := mem.alloc(2 * n)
		if err != nil {
			return err
		}
		y, err := mem.alloc(2 * n)
		if err != nil {
			return err
		}
		packed, _ := mem.alloc(sz.Packed)
		absmax, _ := mem.alloc(sz.Blocks * 4)
		if err := cu.MemcpyHtoD(x, unsafe.Pointer(&src[0]), 2*n); err != nil {
			return err
		}
		st := d.streams[0]
		e0, _ := cu.MakeEvent(cu.DefaultEvent)
		e1, _ := cu.MakeEvent(cu.DefaultEvent)
		timeIt := func(name string, bytesMoved int64, f func() error) float64 {
			var ms []float64
			for rep := 0; rep < 12; rep++ {
				e0.Record(st)
				if err := f(); err != nil {
					t.Fatal(err)
				}
				e1.Record(st)
				e1.Synchronize()
				v, _ := e0.Elapsed(e1)
				if rep >= 2 {
					ms = append(ms, v)
				}
			}
			sort.Float64s(ms)
			med := ms[len(ms)/2]
			gbs := float64(bytesMoved) / (med * 1e-3) / 1e9
			t.Logf("%-44s median %.3f ms  %7.1f GB/s  (min %.3f max %.3f, %d reps)", name, med, gbs, ms[0], ms[len(ms)-1], len(ms))
			return gbs
		}
		copyBW := timeIt("device-to-device copy (bf16 tensor, r+w)", 4*n, func() error {
			return cu.MemcpyDtoDAsync(y, x, 2*n, st)
		})
		qbytes := 2*n + sz.Packed + sz.Blocks*4
		quantBW := timeIt("quantize kernel bf16->nf4 (+f32 absmax)", qbytes, func() error {
			return d.launch("quantize4_bf16_nf4", quantThreads(n, 64), 256, st,
				uint64(x), uint64(n), 64, uint64(packed), uint64(absmax))
		})
		am := make([]float32, sz.Blocks)
		cu.MemcpyDtoH(unsafe.Pointer(&am[0]), absmax, sz.Blocks*4)
		t0 := time.Now()
		off := MeanF32(am)
		t.Logf("host offset mean of %d absmax: %v", sz.Blocks, time.Since(t0))
		offp, _ := mem.alloc(4)
		cu.MemcpyHtoD(offp, unsafe.Pointer(&off), 4)
		codes, _ := mem.alloc(sz.Blocks)
		nested, _ := mem.alloc(sz.Nested)
		nestBW := timeIt("nested quantize kernel (absmax->u8)", sz.Blocks*4+sz.Blocks+sz.Nested, func() error {
			return d.launch("nest_quantize", sz.NestedBlocks()*32, 256, st,
				uint64(absmax), uint64(sz.Blocks), uint64(offp), uint64(d.dynmap), uint64(codes), uint64(nested))
		})
		total := 2*n + sz.Total()
		both := timeIt("quantize + nested, bytes in+payload out", total, func() error {
			if err := d.launch("quantize4_bf16_nf4", quantThreads(n, 64), 256, st,
				uint64(x), uint64(n), 64, uint64(packed), uint64(absmax)); err != nil {
				return err
			}
			return d.launch("nest_quantize", sz.NestedBlocks()*32, 256, st,
				uint64(absmax), uint64(sz.Blocks), uint64(offp), uint64(d.dynmap), uint64(codes), uint64(nested))
		})
		deqBW := timeIt("dequantize kernel nf4+dq->bf16", sz.Total()+2*n, func() error {
			return d.launchDequant(quant.BF16, n, p, uint64(packed), 0, uint64(codes), uint64(nested), uint64(offp), uint64(y), st)
		})
		t.Logf("quantize kernel / copy: %.1f%%; quantize+nested / copy: %.1f%%; nested alone %.1f GB/s; dequantize / copy: %.1f%%",
			100*quantBW/copyBW, 100*both/copyBW, nestBW, 100*deqBW/copyBW)
		// Host pipeline (pinned, chunked, two streams), for reference.
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, sz.Total())
	t0 := time.Now()
	if _, err := d.Quantize(dst, src, quant.BF16, n, p); err != nil {
		t.Fatal(err)
	}
	el := time.Since(t0)
	t.Logf("host pipeline Quantize (H2D chunks, kernels, D2H, host copies): %v, %.1f GB/s of input", el, float64(2*n)/el.Seconds()/1e9)
}
