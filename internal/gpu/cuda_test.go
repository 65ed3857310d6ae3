//go:build cuda

package gpu

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"sort"
	"testing"
	"time"
	"unsafe"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/internal/gpu/cudainit"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
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
		f := readGolden(t, fixtures.Shared(t, "bnb", name))
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
			require.NoError(t, err, "%s %s", name, c.Key)
			want := append([]byte(nil), f.get(t, c.Key+".packed")...)
			want = append(want, f.get(t, c.Key+".absmax")...)
			if c.DoubleQuant {
				want = append(want, f.get(t, c.Key+".nested_absmax")...)
				assert.Equal(t, math.Float32bits(c.NestedOffset), math.Float32bits(off), "%s %s: offset %v, golden %v", name, c.Key, off, c.NestedOffset)
			}
			if !assert.True(t, bytes.Equal(got, want), "%s %s (%+v %v): payload differs from golden", name, c.Key, p, c.Shape) {
				continue
			}
			deq := make([]byte, len(src))
			require.NoError(t, d.Dequantize(deq, got, dt, n, p, off), "%s %s: dequantize", name, c.Key)
			assert.True(t, bytes.Equal(deq, f.get(t, c.Key+".dequant")), "%s %s: dequantized values differ from golden", name, c.Key)
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

// randomTensor returns n values of dt (raw bytes) drawn to exercise every
// path: normal values at several scales, all-zero blocks, subnormals, and,
// with nonFinite, NaN and ±Inf.
func randomTensor(r *rand.Rand, dt quant.DType, n int64, bs int, nonFinite bool) []byte {
	src := make([]byte, n*int64(dt.Size()))
	scale := 0.02
	for i := int64(0); i < n; i++ {
		if i%int64(bs) == 0 {
			switch r.IntN(8) {
			case 0:
				scale = 0 // an all-zero block
			case 1:
				scale = 1e-39 // subnormal in float32 (flushed)
			case 2:
				scale = 1e3
			default:
				scale = math.Pow(10, -r.Float64()*4)
			}
		}
		v := float32(r.NormFloat64() * scale)
		if nonFinite && r.IntN(5000) == 0 {
			v = []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))}[r.IntN(3)]
		}
		switch dt {
		case quant.BF16:
			binary.LittleEndian.PutUint16(src[2*i:], uint16(math.Float32bits(v)>>16))
		case quant.F16:
			binary.LittleEndian.PutUint16(src[2*i:], f16bits(v))
		default:
			binary.LittleEndian.PutUint32(src[4*i:], math.Float32bits(v))
		}
	}
	return src
}

// f16bits truncates v to a half (any half will do for a test input).
func f16bits(v float32) uint16 {
	b := math.Float32bits(v)
	sign := uint16(b>>16) & 0x8000
	e := int(b>>23&0xFF) - 127 + 15
	switch {
	case b&0x7FFFFFFF > 0x7F800000:
		return sign | 0x7E00
	case e >= 31:
		return sign | 0x7C00
	case e <= 0:
		return sign | uint16(b>>13&0x3FF)>>uint(min(1-e, 11)) // a subnormal half
	}
	return sign | uint16(e)<<10 | uint16(b>>13&0x3FF)
}

// TestGPUMatchesCPU quantizes random tensors of odd sizes, every dtype, block
// size and type, with and without double quantization, through Device.Quantize
// and through the Backend (with small chunks so that runs cross chunk
// boundaries), and demands the CPU path's bytes exactly; then dequantizes on
// both and demands equal values.
func TestGPUMatchesCPU(t *testing.T) {
	d := openGPU(t)
	old := ChunkBytes
	ChunkBytes = 1 << 20
	defer func() { ChunkBytes = old }()
	r := rand.New(rand.NewPCG(1, 2))
	sizes := []int64{1, 7, 63, 65, 255, 1001, 4097, 300001, 1<<20 + 17, 3<<20 + 17}
	for _, dt := range []quant.DType{quant.BF16, quant.F16, quant.F32} {
		for _, bs := range []int{32, 64, 128, 256, 512, 4096} {
			for _, qt := range []quant.Type{quant.NF4, quant.FP4} {
				for _, dq := range []bool{false, true} {
					for si, n := range sizes {
						if si >= 8 && (bs != 64 || dt != quant.BF16) && (r.IntN(4) != 0 || testing.Short()) {
							continue // large sizes: the default case, and a sample of the rest
						}
						p := quant.Params{Type: qt, BlockSize: bs, DoubleQuant: dq, AllowNonFinite: si%3 == 0}
						src := randomTensor(r, dt, n, bs, p.AllowNonFinite)
						checkAgainstCPU(t, d, src, dt, n, p)
					}
				}
			}
		}
	}
}

// TestBackendSteps: runs of a few MiB, as the quantize stage hands them,
// go to the device in several pipelined steps (pipelineStep) with the
// default workspace; the bytes must be the CPU's, across step boundaries
// and with a short last step and block.
func TestBackendSteps(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(5, 6))
	b := d.Backend()
	for _, dt := range []quant.DType{quant.BF16, quant.F16, quant.F32} {
		for _, bs := range []int{64, 4096} {
			for _, n := range []int64{4*minStepElems - 1, 2<<20 + 17, 8<<20 + 3*4096 + 1} {
				p := quant.Params{Type: quant.NF4, BlockSize: bs, DoubleQuant: true}
				src := randomTensor(r, dt, n, bs, false)
				want, err := quant.Quantize(src, dt, p, quant.CPU(0))
				require.NoError(t, err)
				got, err := quant.Quantize(src, dt, p, b)
				require.NoError(t, err)
				what := fmt.Sprintf("%s bs %d n %d (step %d)", dt, bs, n, pipelineStep(n, chunkElems(ChunkBytes), stepAlign))
				assert.Equal(t, -1, firstDiff(got.Packed, want.Packed), "%s: packed", what)
				assert.Equal(t, -1, firstDiff(got.Absmax, want.Absmax), "%s: absmax codes", what)
				assert.Equal(t, -1, firstDiff(got.Nested, want.Nested), "%s: nested", what)
			}
		}
	}
}

func checkAgainstCPU(t *testing.T, d *Device, src []byte, dt quant.DType, n int64, p quant.Params) {
	t.Helper()
	what := fmt.Sprintf("%s n=%d %+v", dt, n, p)
	want, err := quant.Quantize(src, dt, p, quant.CPU(0))
	if err != nil {
		t.Fatalf("%s: cpu: %v", what, err)
	}
	wantPayload := append(append(append([]byte(nil), want.Packed...), want.Absmax...), want.Nested...)
	got := make([]byte, len(wantPayload))
	off, err := d.Quantize(got, src, dt, n, p)
	if err != nil {
		t.Fatalf("%s: gpu: %v", what, err)
	}
	if off != want.NestedOffset {
		t.Errorf("%s: offset %v, cpu %v", what, off, want.NestedOffset)
	}
	if i := firstDiff(got, wantPayload); i >= 0 {
		t.Errorf("%s: Quantize payload differs from the CPU's at byte %d of %d (packed %d)", what, i, len(got), len(want.Packed))
		return
	}
	viaBackend, err := quant.Quantize(src, dt, p, d.Backend())
	if err != nil {
		t.Fatalf("%s: backend: %v", what, err)
	}
	if !bytes.Equal(viaBackend.Packed, want.Packed) || !bytes.Equal(viaBackend.Absmax, want.Absmax) ||
		!bytes.Equal(viaBackend.Nested, want.Nested) || viaBackend.NestedOffset != want.NestedOffset {
		t.Errorf("%s: Backend result differs from the CPU's", what)
	}
	wantVals, err := want.Dequantize(dt)
	if err != nil {
		t.Fatal(err)
	}
	gotVals := make([]byte, len(src))
	if err := d.Dequantize(gotVals, got, dt, n, p, off); err != nil {
		t.Fatalf("%s: dequantize: %v", what, err)
	}
	if i := firstValueDiff(dt, gotVals, wantVals); i >= 0 {
		t.Errorf("%s: dequantized values differ from the CPU's at element %d", what, i)
	}
}

// firstValueDiff returns the first element whose bytes differ, except where
// both are NaN: NaN payloads (from 0*Inf with --allow-nonfinite) differ
// between the GPU and the CPU. -1 when none.
func firstValueDiff(dt quant.DType, a, b []byte) int {
	es := dt.Size()
	isNaN := func(x []byte) bool {
		switch dt {
		case quant.F32:
			return binary.LittleEndian.Uint32(x)&0x7FFFFFFF > 0x7F800000
		case quant.BF16:
			return binary.LittleEndian.Uint16(x)&0x7FFF > 0x7F80
		}
		return binary.LittleEndian.Uint16(x)&0x7FFF > 0x7C00
	}
	if len(a) != len(b) {
		return min(len(a), len(b)) / es
	}
	for i := 0; i < len(a); i += es {
		if !bytes.Equal(a[i:i+es], b[i:i+es]) && !(isNaN(a[i:]) && isNaN(b[i:])) {
			return i / es
		}
	}
	return -1
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	if len(a) != len(b) {
		return min(len(a), len(b))
	}
	return -1
}

// TestGPUNonFinite checks that a NaN or Inf fails as on the CPU, naming the
// same element, through both entry points.
func TestGPUNonFinite(t *testing.T) {
	d := openGPU(t)
	n := int64(1 << 20)
	src := randomTensor(rand.New(rand.NewPCG(7, 8)), quant.BF16, n, 64, false)
	binary.LittleEndian.PutUint16(src[2*777777:], 0x7F80) // +Inf
	binary.LittleEndian.PutUint16(src[2*900001:], 0x7FC1) // NaN
	p := quant.DefaultParams()
	_, err := quant.Quantize(src, quant.BF16, p, d.Backend())
	var nf *quant.NonFiniteError
	if !errors.As(err, &nf) || nf.Index != 777777 {
		t.Fatalf("backend: %v, want a NonFiniteError at 777777", err)
	}
	_, err = d.Quantize(make([]byte, quant.SizesFor(n, p).Total()), src, quant.BF16, n, p)
	if !errors.As(err, &nf) || nf.Index != 777777 {
		t.Fatalf("Quantize: %v, want a NonFiniteError at 777777", err)
	}
}

// TestMeanTorchGPU: mean_torch gives quant.MeanF32's bits for counts on both
// sides of every change of the reduction's shape, absmax-like and signed
// values, run twice (the finished-CTA count must be back at 0).
func TestMeanTorchGPU(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(11, 12))
	sizes := []int64{1, 2, 3, 5, 31, 32, 33, 100, 127, 128, 129, 130, 131, 2047, 2048, 2049, 8191, 8192, 8193, 65537,
		130560, 130561, 131071, 131072, 131073, 262145, 1 << 20, 3670016, 1<<22 + 3, 128256 * 4096 / 64}
	for _, n := range sizes {
		for _, signed := range []bool{false, true} {
			a := make([]float32, n)
			for i := range a {
				a[i] = float32(r.ExpFloat64() * 0.03)
				if signed {
					a[i] = float32(r.NormFloat64() * 1e3)
				}
			}
			want := quant.MeanF32(a)
			for rep := range 2 {
				var got float32
				err := d.do(func() error {
					var mem devBuf
					defer mem.free()
					p, err := mem.alloc(4 * n)
					if err != nil {
						return err
					}
					st := d.streams[0]
					for _, err := range []error{
						cuErr("upload", cu.MemcpyHtoDAsync(p, unsafe.Pointer(&a[0]), 4*n, st)),
						d.launchMean(p, n, quant.DefaultReduceGPU, st),
						cuErr("download", cu.MemcpyDtoHAsync(unsafe.Pointer(&got), d.mean.result(), 4, st)),
						cuErr("sync", st.Synchronize()),
					} {
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatal(err)
				}
				if math.Float32bits(got) != math.Float32bits(want) {
					t.Errorf("n=%d signed=%v run %d: device mean %v (%#x), quant.MeanF32 %v (%#x), geometry %+v",
						n, signed, rep, got, math.Float32bits(got), want, math.Float32bits(want), quant.MeanGeometryFor(n, quant.DefaultReduceGPU))
				}
			}
		}
	}
}

// TestNestPathsMatchCPU: double quantization of absmax values on the device
// (mean_torch, then nest_quantize) gives quant.DoubleQuantize's codes, nested
// absmax and offset, for counts with short last blocks and every shape of the
// mean's tree, twice in a row (mean_torch's counter must be back at zero).
func TestNestPathsMatchCPU(t *testing.T) {
	d := openGPU(t)
	r := rand.New(rand.NewPCG(21, 22))
	a100 := quant.ReduceGPU{SMs: 108, ThreadsPerSM: 2048}
	for _, n := range []int64{1, 7, 255, 256, 257, 8191, 8193, 131073, 1<<20 + 5, 3670016, 128256 * 4096 / 64} {
		a := make([]float32, n)
		for i := range a {
			a[i] = float32(r.ExpFloat64() * 0.02)
		}
		gpu := quant.DefaultReduceGPU
		if n == 3670016 { // where the A100's geometry changes the order
			gpu = a100
		}
		wantCodes, wantNested, wantOff := quant.DoubleQuantize(a, gpu)
		nb := (n + 255) / 256
		paths := map[string]func(abs, codes, nested cu.DevicePtr, st cu.Stream) error{
			"mean_torch + nest_quantize": func(abs, codes, nested cu.DevicePtr, st cu.Stream) error {
				return d.launchNest(abs, n, gpu, codes, nested, st)
			},
		}
		for name, launch := range paths {
			for rep := range 2 {
				codes, nested := make([]byte, n), make([]float32, nb)
				var off float32
				err := d.do(func() error {
					var mem devBuf
					defer mem.free()
					abs, err := mem.alloc(4 * n)
					if err != nil {
						return err
					}
					dc, err := mem.alloc(n)
					if err != nil {
						return err
					}
					dn, err := mem.alloc(4 * nb)
					if err != nil {
						return err
					}
					st := d.streams[0]
					for _, err := range []error{
						cuErr("upload", cu.MemcpyHtoDAsync(abs, unsafe.Pointer(&a[0]), 4*n, st)),
						launch(abs, dc, dn, st),
						cuErr("codes", cu.MemcpyDtoHAsync(unsafe.Pointer(&codes[0]), dc, n, st)),
						cuErr("nested", cu.MemcpyDtoHAsync(unsafe.Pointer(&nested[0]), dn, 4*nb, st)),
						cuErr("offset", cu.MemcpyDtoHAsync(unsafe.Pointer(&off), d.mean.result(), 4, st)),
						cuErr("sync", st.Synchronize()),
					} {
						if err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					t.Fatalf("%s, n=%d: %v", name, n, err)
				}
				if off != wantOff || !bytes.Equal(codes, wantCodes) || !slicesEqualBits(nested, wantNested) {
					t.Errorf("%s, n=%d, run %d: differs from quant.DoubleQuantize (offset %v, want %v)", name, n, rep, off, wantOff)
				}
			}
		}
	}
}

func slicesEqualBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

// eventTimer returns a function that times f on stream st with CUDA events:
// 3 warm-up runs, then the median of 20, logged and returned as GB/s of
// bytesMoved.
func eventTimer(t *testing.T, st cu.Stream) func(name string, bytesMoved int64, f func() error) float64 {
	e0, err := cu.MakeEvent(cu.DefaultEvent)
	if err != nil {
		t.Fatal(err)
	}
	e1, err := cu.MakeEvent(cu.DefaultEvent)
	if err != nil {
		t.Fatal(err)
	}
	return func(name string, bytesMoved int64, f func() error) float64 {
		var ms []float64
		for rep := 0; rep < 23; rep++ {
			e0.Record(st)
			if err := f(); err != nil {
				t.Fatal(err)
			}
			e1.Record(st)
			e1.Synchronize()
			v, _ := e0.Elapsed(e1)
			if rep >= 3 {
				ms = append(ms, float64(v))
			}
		}
		sort.Float64s(ms)
		med := ms[len(ms)/2]
		gbs := float64(bytesMoved) / (med * 1e-3) / 1e9
		t.Logf("%-52s median %.3f ms %7.1f GB/s (min %.3f max %.3f, %d reps)", name, med, gbs, ms[0], ms[len(ms)-1], len(ms))
		return gbs
	}
}

// TestBenchReport prints device figures for docs/BENCHMARKS.md when
// NF4PIPE_GPU_BENCH=1 (a timing report, not an assertion): device-to-device
// copy, the quantize kernel variants, nested quantization and dequantization
// on a 128256x4096 bf16 tensor, each the median of 20 timed runs after 3 warm-up
// runs, with CUDA events.
func TestBenchReport(t *testing.T) {
	if os.Getenv("NF4PIPE_GPU_BENCH") == "" {
		t.Skip("set NF4PIPE_GPU_BENCH=1 to print GPU bandwidth figures")
	}
	d := openGPU(t)
	info, _ := d.Info()
	t.Logf("device: %s, cc %d.%d, %d MiB, %d SMs; quant_tile_bf16_nf4_b64_v4: %d CTAs of 256 fit a multiprocessor, launched with %d",
		info.Name, info.Major, info.Minor, info.TotalBytes>>20, d.sms, d.fit["quant_tile_bf16_nf4_b64_v4"], min(d.Grids.Quant, d.fit["quant_tile_bf16_nf4_b64_v4"]))
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
		bad, _ := mem.alloc(16)
		codes, _ := mem.alloc(sz.Blocks)
		nested, _ := mem.alloc(sz.Nested)
		if err := cu.MemcpyHtoD(x, unsafe.Pointer(&src[0]), 2*n); err != nil {
			return err
		}
		if err := cu.Synchronize(); err != nil { // the copy ran on the legacy stream
			return err
		}
		st := d.streams[0]
		timeIt := eventTimer(t, st)
		copyBW := timeIt("device-to-device copy (bf16 tensor, r+w)", 4*n, func() error {
			return cu.MemcpyDtoDAsync(y, x, 2*n, st)
		})
		qbytes := 2*n + sz.Packed + sz.Blocks*4
		var quantBW float64
		variants := []struct {
			suffix string
			v      int
		}{{"v2", 2}, {"v4", 4}, {"v8", 8}, {"v4_plain", 4}}
		best := map[string]float64{}
		for _, vr := range variants {
			for _, g := range []int{4, 5, 6, 8} {
				name := "quant_tile_bf16_nf4_b64_" + vr.suffix
				tiles := n / int64(256*vr.v)
				bw := timeIt(fmt.Sprintf("quantize %s grid %d/SM", name, g), qbytes, func() error {
					return d.launch(name, g, tiles, st, uint64(x), uint64(tiles), uint64(packed), uint64(absmax), uint64(bad))
				})
				best[vr.suffix] = max(best[vr.suffix], bw)
			}
		}
		quantName, _ := tileKernel(quant.BF16, p.Type, p.BlockSize)
		quantBW = timeIt(fmt.Sprintf("quantize %s grid %d/SM", quantName, d.Grids.Quant), qbytes, func() error {
			return d.launchQuantize(x, n, quant.BF16, p, packed, absmax, bad, st)
		})
		t.Logf("best of grids, %% of copy: v2 %.1f, v4 %.1f, v8 %.1f, v4_plain %.1f", 100*best["v2"]/copyBW, 100*best["v4"]/copyBW, 100*best["v8"]/copyBW, 100*best["v4_plain"]/copyBW)
		outputs := map[string][]byte{}
		for _, k := range []string{"v4", "v4_plain"} {
			tiles := n / 1024
			if err := d.launch("quant_tile_bf16_nf4_b64_"+k, d.Grids.Quant, tiles, st, uint64(x), uint64(tiles), uint64(packed), uint64(absmax), uint64(bad)); err != nil {
				return err
			}
			out := make([]byte, sz.Packed+sz.Blocks*4)
			if err := cuErr("sync", st.Synchronize()); err != nil {
				return err
			}
			cu.MemcpyDtoH(unsafe.Pointer(&out[0]), packed, sz.Packed)
			cu.MemcpyDtoH(unsafe.Pointer(&out[sz.Packed]), absmax, sz.Blocks*4)
			outputs[k] = out
		}
		if !bytes.Equal(outputs["v4"], outputs["v4_plain"]) {
			t.Errorf("v4 and v4_plain differ in codes or absmax")
		}
		for _, g := range []int{4, 5} {
			for _, k := range []string{"v4", "v4_plain"} {
				gtiles := n / 1024
				gboth := timeIt(fmt.Sprintf("quantize %s %d/SM + mean + nested (all bytes moved)", k, g), 2*n+sz.Packed+3*sz.Blocks*4+sz.Blocks+sz.Nested, func() error {
					if err := d.launch("quant_tile_bf16_nf4_b64_"+k, g, gtiles, st, uint64(x), uint64(gtiles), uint64(packed), uint64(absmax), uint64(bad)); err != nil {
						return err
					}
					return d.launchNest(absmax, sz.Blocks, quant.DefaultReduceGPU, codes, nested, st)
				})
				t.Logf("DQ %s %d/SM + mean + nested: %.1f%% of copy (all bytes), %.1f%% (input + final payload)", k, g, 100*gboth/copyBW, 100*gboth*float64(2*n+sz.Total())/float64(2*n+sz.Packed+3*sz.Blocks*4+sz.Blocks+sz.Nested)/copyBW)
			}
		}
		am := make([]float32, sz.Blocks)
		cu.MemcpyDtoH(unsafe.Pointer(&am[0]), absmax, sz.Blocks*4)
		t0 := time.Now()
		off := quant.MeanF32(am)
		t.Logf("host offset (quant.MeanF32) of %d absmax: %v", sz.Blocks, time.Since(t0))
		meanBW := timeIt("mean_torch of the absmax (device offset)", sz.Blocks*4, func() error {
			return d.launchMean(absmax, sz.Blocks, quant.DefaultReduceGPU, st)
		})
		var devOff float32
		cu.MemcpyDtoH(unsafe.Pointer(&devOff), d.mean.result(), 4)
		if devOff != off {
			t.Errorf("device offset %v, host %v", devOff, off)
		}
		nestBW := timeIt(fmt.Sprintf("nested quantize kernel (absmax f32 -> u8 + nested), grid %d/SM", d.Grids.Nest), sz.Blocks*4+sz.Blocks+sz.Nested, func() error {
			return d.launch("nest_quantize", d.Grids.Nest, sz.NestedBlocks(), st,
				uint64(absmax), uint64(sz.Blocks), uint64(d.mean.result()), uint64(d.nestTab), uint64(codes), uint64(nested))
		})
		moved := 2*n + sz.Packed + sz.Blocks*4 + sz.Blocks*4 + sz.Blocks*4 + sz.Blocks + sz.Nested
		both := timeIt("quantize + mean + nested (all bytes moved)", moved, func() error {
			if err := d.launchQuantize(x, n, quant.BF16, p, packed, absmax, bad, st); err != nil {
				return err
			}
			return d.launchNest(absmax, sz.Blocks, quant.DefaultReduceGPU, codes, nested, st)
		})
		effective := both * float64(2*n+sz.Total()) / float64(moved)
		// The same double quantization must come out as the CPU's.
		gotCodes, gotNested := make([]byte, sz.Blocks), make([]byte, sz.Nested)
		cu.MemcpyDtoH(unsafe.Pointer(&gotCodes[0]), codes, sz.Blocks)
		cu.MemcpyDtoH(unsafe.Pointer(&gotNested[0]), nested, sz.Nested)
		wantPayload, err := quant.Quantize(src, quant.BF16, p, quant.CPU(0))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(gotCodes, wantPayload.Absmax) || !bytes.Equal(gotNested, wantPayload.Nested) || wantPayload.NestedOffset != off {
			t.Errorf("double quantization on the device differs from the CPU's")
		}
		defGrid := d.Grids.Dequant
		for _, v := range []int{2, 4, 8} {
			for _, g := range []int{4, 8, 16, 32} {
				d.Grids.Dequant = g
				timeIt(fmt.Sprintf("dequantize nf4+dq -> bf16 v%d grid %d/SM", v, g), sz.Total()+2*n, func() error {
					return d.launchDequantWith(fmt.Sprintf("dequant_bf16_v%d_dq", v), v, n, p, packed, codes, nested, off, y, st)
				})
			}
		}
		d.Grids.Dequant = defGrid
		deqName, _ := dequantKernel(quant.BF16, p)
		deqBW := timeIt(fmt.Sprintf("dequantize nf4+dq -> bf16 %s grid %d/SM", deqName, defGrid), sz.Total()+2*n, func() error {
			return d.launchDequant(quant.BF16, n, p, packed, codes, nested, off, y, st)
		})
		t.Logf("RESULT copy %.1f GB/s; quantize (%s, default grid) %.1f%% of copy; quantize+mean+nested %.1f%% of copy counting all bytes moved, %.1f%% counting input and final payload only; mean %.1f GB/s, nested %.1f GB/s; dequantize (%s, default grid) %.1f%%",
			copyBW, quantName, 100*quantBW/copyBW, 100*both/copyBW, 100*effective/copyBW, meanBW, nestBW, deqName, 100*deqBW/copyBW)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, sz.Total())
	for i := range 3 {
		t0 := time.Now()
		if _, err := d.Quantize(dst, src, quant.BF16, n, p); err != nil {
			t.Fatal(err)
		}
		el := time.Since(t0)
		t.Logf("host Device.Quantize run %d (pinned chunks, H2D, kernels, D2H, nested): %v, %.1f GB/s of input", i, el, float64(2*n)/el.Seconds()/1e9)
	}
	packedH, absmaxH := make([]byte, sz.Packed), make([]float32, sz.Blocks)
	b := d.Backend()
	for i := range 3 {
		t0 := time.Now()
		if err := b.QuantizeBlocks(packedH, absmaxH, src, quant.BF16, p, 0); err != nil {
			t.Fatal(err)
		}
		el := time.Since(t0)
		t.Logf("host Backend.QuantizeBlocks run %d: %v, %.1f GB/s of input", i, el, float64(2*n)/el.Seconds()/1e9)
	}
}

// TestBenchProbe prints, next to the device-to-device copy and the quantize
// kernel, what the memory system gives for the quantize kernel's bytes with
// none of its work (kernels/probe): its loads alone, and its loads and stores.
// It runs when NF4PIPE_PROBE_PTX names that PTX (scripts/bench-cuda.sh packs
// it); a timing report, not an assertion.
func TestBenchProbe(t *testing.T) {
	path := os.Getenv("NF4PIPE_PROBE_PTX")
	if path == "" {
		t.Skip("set NF4PIPE_PROBE_PTX to the probe PTX to print memory-system figures")
	}
	ptx, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	d := openGPU(t)
	const n = int64(128256 * 4096)
	p := quant.DefaultParams()
	sz := quant.SizesFor(n, p)
	err = d.do(func() error {
		mod, err := cu.LoadData(string(ptx))
		if err != nil {
			return err
		}
		defer mod.Unload()
		readOnly, err := mod.Function("read_only")
		if err != nil {
			return err
		}
		sameBytes, err := mod.Function("same_bytes")
		if err != nil {
			return err
		}
		var mem devBuf
		defer mem.free()
		x, _ := mem.alloc(2 * n)
		y, _ := mem.alloc(2 * n)
		packed, _ := mem.alloc(sz.Packed)
		absmax, _ := mem.alloc(sz.Blocks * 4)
		bad, err := mem.alloc(16)
		if err != nil {
			return err
		}
		if err := cu.MemsetD32(x, 0x3C003C00, n/2); err != nil {
			return err
		}
		if err := cu.Synchronize(); err != nil {
			return err
		}
		st := d.streams[0]
		timeIt := eventTimer(t, st)
		tiles := n / 1024
		launch := func(f cu.Function, perSM int, args ...uint64) error {
			ptrs := make([]unsafe.Pointer, len(args))
			for i := range args {
				ptrs[i] = unsafe.Pointer(&args[i])
			}
			return f.Launch(d.sms*perSM, 1, 1, 256, 1, 1, 0, st, ptrs)
		}
		qbytes := 2*n + sz.Packed + sz.Blocks*4
		copyBW := timeIt("device-to-device copy (r+w)", 4*n, func() error { return cu.MemcpyDtoDAsync(y, x, 2*n, st) })
		quantBW := timeIt("quantize kernel v4", qbytes, func() error {
			return d.launch("quant_tile_bf16_nf4_b64_v4", d.Grids.Quant, tiles, st, uint64(x), uint64(tiles), uint64(packed), uint64(absmax), uint64(bad))
		})
		sameCoal, err := mod.Function("same_bytes_coalesced")
		if err != nil {
			return err
		}
		var rBW, sBW, cBW float64
		for _, g := range []int{4, 8} {
			cBW = max(cBW, timeIt(fmt.Sprintf("probe same_bytes_coalesced, %d CTAs/SM", g), qbytes, func() error {
				return launch(sameCoal, g, uint64(x), uint64(tiles), uint64(packed), uint64(absmax))
			}))
			rBW = max(rBW, timeIt(fmt.Sprintf("probe read_only, %d CTAs/SM", g), 2*n, func() error {
				return launch(readOnly, g, uint64(x), uint64(tiles), uint64(bad))
			}))
			sBW = max(sBW, timeIt(fmt.Sprintf("probe same_bytes, %d CTAs/SM", g), qbytes, func() error {
				return launch(sameBytes, g, uint64(x), uint64(tiles), uint64(packed), uint64(absmax))
			}))
		}
		t.Logf("PROBE copy %.1f GB/s; quantize %.1f%% of copy; its loads alone %.1f%%, its loads and stores with no work %.1f%%, the same with absmax stored 64 bytes at a time %.1f%%",
			copyBW, 100*quantBW/copyBW, 100*rBW/copyBW, 100*sBW/copyBW, 100*cBW/copyBW)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOpenTimes logs what a GPU's start-up costs, step by step, in this
// process: the driver's initialization (cuInit, on the first Count, Devices,
// Open or ReduceGeometry of the process: cudainit), the context and module
// load (Open), the first small run (its workspace: device memory and pinned
// staging, and the kernel's first launch), a second one, and Close. Run
// alone, as the first test of its process, it times cuInit too. The
// quantize stage hides all but Close behind the CPU (pkg/quantize/hybrid.go).
func TestOpenTimes(t *testing.T) {
	first := !cudainit.Initialized()
	t0 := time.Now()
	if err := cudainit.Init(); err != nil {
		t.Skipf("no usable GPU: %v", err)
	}
	initTime := time.Since(t0)
	t0 = time.Now()
	d, err := Open(0)
	if err != nil {
		t.Skipf("no usable GPU: %v", err)
	}
	open := time.Since(t0)
	p := quant.DefaultParams()
	const n = 16 << 10
	src := randomTensor(rand.New(rand.NewPCG(9, 10)), quant.BF16, n, p.BlockSize, false)
	b := d.Backend()
	var runs [2]time.Duration
	for i := range runs {
		t1 := time.Now()
		require.NoError(t, b.QuantizeBlocks(make([]byte, n/2), make([]float32, n/p.BlockSize), src, quant.BF16, p, 0))
		runs[i] = time.Since(t1)
	}
	t2 := time.Now()
	require.NoError(t, d.Close())
	cuInit := "done before this test"
	if first {
		cuInit = fmt.Sprintf("%.1f ms", initTime.Seconds()*1e3)
	}
	t.Logf("start-up: cuInit %s, open %.1f ms, first run %.1f ms, second run %.3f ms, close %.1f ms",
		cuInit, open.Seconds()*1e3, runs[0].Seconds()*1e3, runs[1].Seconds()*1e3, time.Since(t2).Seconds()*1e3)
}
