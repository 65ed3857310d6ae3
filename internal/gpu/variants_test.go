//go:build cuda

package gpu

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"unsafe"

	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"gorgonia.org/cu"
)

// TestBenchVariants times the candidate kernels of kernels/variants against
// the production kernels on the benchmark tensor (128256x4096 bf16, NF4,
// block 64, double quantization) and checks that each one's output is
// byte-identical to the production kernel's, on that tensor and on a small one
// full of special values (NaN, inf, zero and subnormal blocks, |x| >= 2^121).
// It runs when NF4PIPE_VARIANT_PTX names the variant PTX files, comma
// separated (scripts/bench-variants.sh packs them: compute_75 first, then
// compute_80); a kernel is taken from the first file that has it. Every
// timing is the median of 25 runs after 3 warm-ups, with CUDA events, across
// grids of 256-thread CTAs per multiprocessor. A timing report, not an
// assertion: a variant whose output differs is reported as invalid and the
// test fails.
func TestBenchVariants(t *testing.T) {
	paths := os.Getenv("NF4PIPE_VARIANT_PTX")
	if paths == "" {
		t.Skip("set NF4PIPE_VARIANT_PTX to the variant PTX files to time the candidate kernels")
	}
	var ptxs, names []string
	for _, p := range strings.Split(paths, ",") {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		ptxs = append(ptxs, string(b))
		names = append(names, strings.TrimSuffix(filepath.Base(p), ".ptx"))
	}
	d := openGPU(t)
	if err := d.do(func() error { return benchVariants(t, d, ptxs, names) }); err != nil {
		t.Fatal(err)
	}
}

// kernel is a loaded function with what the occupancy API says of it.
type kernel struct {
	name      string
	fn        cu.Function
	module    int // index into NF4PIPE_VARIANT_PTX; -1 for the production module
	regs, fit int
	local     int
}

type variantBench struct {
	t       *testing.T
	d       *Device
	mods    []cu.Module
	modIdx  []int    // each module's place in NF4PIPE_VARIANT_PTX
	names   []string // the PTX files' base names
	st      cu.Stream
	e0, e1  cu.Event
	copyBW  float64
	invalid []string
}

func (b *variantBench) find(name string) (kernel, bool) {
	k := kernel{name: name, module: -1}
	if f, ok := b.d.fn[name]; ok {
		k.fn = f
	} else {
		found := false
		for i, m := range b.mods {
			if f, err := m.Function(name); err == nil {
				k.fn, k.module, found = f, b.modIdx[i], true
				break
			}
		}
		if !found {
			return k, false
		}
	}
	k.regs, _ = k.fn.Attribute(cu.NumRegs)
	k.local, _ = k.fn.Attribute(cu.LocalSizeBytes)
	k.fit, _ = k.fn.MaxActiveBlocksPerMultiProcessor(256, 0)
	return k, true
}

// launch runs k on min(ctas, perSM CTAs a multiprocessor) CTAs of threads.
func (b *variantBench) launch(k kernel, perSM int, ctas int64, threads int, args ...uint64) error {
	grid := min(ctas, int64(b.d.sms*perSM))
	ptrs := make([]unsafe.Pointer, len(args))
	for i := range args {
		ptrs[i] = unsafe.Pointer(&args[i])
	}
	return cuErr("launch "+k.name, k.fn.Launch(int(grid), 1, 1, threads, 1, 1, 0, b.st, ptrs))
}

// time returns the median milliseconds of 25 runs of f after 3 warm-ups.
func (b *variantBench) time(f func() error) (float64, error) {
	var ms []float64
	for rep := 0; rep < 28; rep++ {
		if err := b.e0.Record(b.st); err != nil {
			return 0, err
		}
		if err := f(); err != nil {
			return 0, err
		}
		if err := b.e1.Record(b.st); err != nil {
			return 0, err
		}
		if err := b.e1.Synchronize(); err != nil {
			return 0, cuErr("sync", err)
		}
		v, err := b.e0.Elapsed(b.e1)
		if err != nil {
			return 0, err
		}
		if rep >= 3 {
			ms = append(ms, float64(v))
		}
	}
	sort.Float64s(ms)
	return ms[len(ms)/2], nil
}

// result is one timed configuration.
type result struct {
	kind, name string
	grid       int
	ms, gbs    float64
	same       bool
}

func (b *variantBench) report(r result, k kernel) {
	mod := "nf4"
	if k.module >= 0 {
		mod = b.names[k.module]
	}
	same := "yes"
	if !r.same {
		same = "NO (invalid)"
	}
	b.t.Logf("VAR %-7s %-26s %-10s regs %3d local %3d fit %2d grid %2d/SM %8.4f ms %7.1f GB/s %6.2f%% of copy identical %s",
		r.kind, r.name, mod, k.regs, k.local, k.fit, r.grid, r.ms, r.gbs, 100*r.gbs/b.copyBW, same)
}

// top logs the fastest grid of one kernel's results in a short line.
func (b *variantBench) top(rs []result, k kernel) {
	var r result
	for _, x := range rs {
		if x.gbs > r.gbs {
			r = x
		}
	}
	if r.name == "" {
		return
	}
	same := "same"
	if !r.same {
		same = "INVALID"
	}
	b.t.Logf("TOP %-7s %-24s r%d f%d g%d %.4fms %4.0fGB/s %.2f%% %s", r.kind, r.name, k.regs, k.fit, r.grid, r.ms, r.gbs, 100*r.gbs/b.copyBW, same)
}

func (b *variantBench) best(kind string, rs []result) result {
	var top result
	for _, r := range rs {
		if r.same && r.gbs > top.gbs {
			top = r
		}
	}
	if top.name != "" {
		b.t.Logf("BEST %-7s %-26s grid %2d/SM %8.4f ms %7.1f GB/s %6.2f%% of copy", kind, top.name, top.grid, top.ms, top.gbs, 100*top.gbs/b.copyBW)
	}
	return top
}

func download(p cu.DevicePtr, n int64) []byte {
	return downloadInto(make([]byte, n), p)
}

// downloadInto copies len(dst) bytes at p into dst (reused for the large
// outputs: a fresh 1 GB slice a kernel costs its page faults every time).
func downloadInto(dst []byte, p cu.DevicePtr) []byte {
	if len(dst) > 0 {
		cu.MemcpyDtoH(unsafe.Pointer(&dst[0]), p, int64(len(dst)))
	}
	return dst
}

// specialBF16 is n normal bf16 values with special blocks of 64 spread
// through: zeros, subnormals, a NaN, inf, -inf, all NaN, huge (>= 2^121)
// values, the largest finite value, and single stray values.
func specialBF16(n int64) []byte {
	r := rand.New(rand.NewPCG(5, 6))
	v := make([]uint16, n)
	for i := range v {
		v[i] = uint16(math.Float32bits(float32(r.NormFloat64()*0.02)) >> 16)
	}
	for blk := int64(0); blk*64 < n; blk += 7 {
		s := v[blk*64 : blk*64+64]
		switch (blk / 7) % 12 {
		case 0:
			clear(s)
		case 1:
			for i := range s {
				s[i] = uint16(r.IntN(0x80)) | uint16(r.IntN(2))<<15
			}
		case 2:
			s[r.IntN(64)] = 0x7FC1
		case 3:
			s[r.IntN(64)] = 0x7F80
		case 4:
			s[r.IntN(64)] = 0xFF80
		case 5:
			for i := range s {
				s[i] = 0xFFC0
			}
		case 6:
			s[r.IntN(64)] = 0x7D00 | uint16(r.IntN(0x100))
		case 7:
			s[r.IntN(64)] = 0xFF7F
		case 8:
			s[r.IntN(64)] = 0x7C01
		case 9:
			s[r.IntN(64)] = 0x0001
		case 10:
			for i := range s {
				s[i] = 0x3F80 ^ uint16(r.IntN(2))<<15
			}
		}
	}
	out := make([]byte, 2*n)
	for i, x := range v {
		binary.LittleEndian.PutUint16(out[2*i:], x)
	}
	return out
}

func benchVariants(t *testing.T, d *Device, ptxs, names []string) error {
	b := &variantBench{t: t, d: d, st: d.streams[0], names: names}
	for i, p := range ptxs {
		m, err := cu.LoadData(p)
		if err != nil {
			// The other file's kernels can still be timed.
			t.Errorf("VAR loading variant PTX %d: %v", i, err)
			continue
		}
		defer m.Unload()
		b.mods = append(b.mods, m)
		b.modIdx = append(b.modIdx, i)
	}
	var err error
	if b.e0, err = cu.MakeEvent(cu.DefaultEvent); err != nil {
		return err
	}
	if b.e1, err = cu.MakeEvent(cu.DefaultEvent); err != nil {
		return err
	}
	// NF4PIPE_VARIANT_GROUPS (quant, deq, async; all when unset) lets a run
	// time one group per process, so a kernel fault loses only that group.
	groups := os.Getenv("NF4PIPE_VARIANT_GROUPS")
	want := func(g string) bool { return groups == "" || strings.Contains(groups, g) }
	name, _ := d.dev.Name()
	t.Logf("VAR device %s, %d SMs", name, d.sms)

	const rows, cols = 128256, 4096
	n := int64(rows * cols)
	p := quant.DefaultParams()
	sz := quant.SizesFor(n, p)
	r := rand.New(rand.NewPCG(3, 4))
	src := make([]byte, 2*n)
	for i := int64(0); i < n; i++ {
		binary.LittleEndian.PutUint16(src[2*i:], uint16(math.Float32bits(float32(r.NormFloat64()*0.02))>>16))
	}
	var mem devBuf
	defer mem.free()
	ptrs := make([]cu.DevicePtr, 12)
	for i, size := range []int64{2 * n, 2 * n, sz.Packed, sz.Blocks * 4, sz.Packed, sz.Blocks * 4, 16, sz.Blocks, sz.Nested, sz.Blocks, sz.Nested, 2 * n} {
		if ptrs[i], err = mem.alloc(size); err != nil {
			return err
		}
	}
	x, y, packedP, absmaxP, packedV, absmaxV, bad, codesP, nestedP, codesV, nestedV, outV := ptrs[0], ptrs[1], ptrs[2], ptrs[3], ptrs[4], ptrs[5], ptrs[6], ptrs[7], ptrs[8], ptrs[9], ptrs[10], ptrs[11]
	if err := cu.MemcpyHtoD(x, unsafe.Pointer(&src[0]), 2*n); err != nil {
		return err
	}
	if err := cu.Synchronize(); err != nil {
		return err
	}
	timeCopy := func() (float64, error) {
		ms, err := b.time(func() error { return cu.MemcpyDtoDAsync(y, x, 2*n, b.st) })
		return float64(4*n) / (ms * 1e-3) / 1e9, err
	}
	if b.copyBW, err = timeCopy(); err != nil {
		return err
	}
	t.Logf("VAR copy    cuMemcpyDtoD of the bf16 tensor (read + write) %7.1f GB/s = 100%%", b.copyBW)
	sync := func() error { return cuErr("sync", b.st.Synchronize()) }

	// Quantize: the production kernel's output is the reference.
	prodQ, _ := b.find("quant_tile_bf16_nf4_b64_v4")
	qbytes := 2*n + sz.Packed + sz.Blocks*4
	if err := b.launch(prodQ, min(d.Grids.Quant, prodQ.fit), n/1024/8+1, 256, uint64(x), uint64(n/1024), uint64(packedP), uint64(absmaxP), uint64(bad)); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	refQ := append(download(packedP, sz.Packed), download(absmaxP, sz.Blocks*4)...)
	ns := int64(1 << 20)
	spec := specialBF16(ns)
	sx, err := mem.alloc(2 * ns)
	if err != nil {
		return err
	}
	spP, _ := mem.alloc(ns / 2)
	saP, _ := mem.alloc(ns / 64 * 4)
	spV, _ := mem.alloc(ns / 2)
	saV, _ := mem.alloc(ns / 64 * 4)
	sbad, _ := mem.alloc(16)
	sout, _ := mem.alloc(2 * ns)
	soutP, _ := mem.alloc(2 * ns)
	if err := cu.MemcpyHtoD(sx, unsafe.Pointer(&spec[0]), 2*ns); err != nil {
		return err
	}
	// specialQ quantizes the special tensor with k (v values a lane) and
	// returns packed codes, absmax and the non-finite flag.
	specialQ := func(k kernel, v int64, packed, absmax cu.DevicePtr) ([]byte, error) {
		cu.MemsetD8(packed, 0xAB, ns/2)
		cu.MemsetD8(absmax, 0xAB, ns/64*4)
		cu.MemsetD32(sbad, 0, 1)
		if err := cu.Synchronize(); err != nil {
			return nil, err
		}
		tiles := ns / (256 * v)
		if err := b.launch(k, 4, tiles/8+1, 256, uint64(sx), uint64(tiles), uint64(packed), uint64(absmax), uint64(sbad)); err != nil {
			return nil, err
		}
		if err := sync(); err != nil {
			return nil, err
		}
		return append(append(download(packed, ns/2), download(absmax, ns/64*4)...), download(sbad, 4)...), nil
	}
	refS, err := specialQ(prodQ, 4, spP, saP)
	if err != nil {
		return err
	}
	if binary.LittleEndian.Uint32(refS[len(refS)-4:]) == 0 {
		t.Errorf("the production kernel did not flag the special tensor's non-finite values")
	}

	grids := []int{4, 5, 6, 7, 8}
	qbuf := make([]byte, len(refQ))
	type qv struct {
		name string
		v    int64
	}
	qvs := []qv{{"quant_tile_bf16_nf4_b64_v4", 4}, {"quant_tile_bf16_nf4_b64_v8", 8}, {"quant_tile_bf16_nf4_b64_v2", 2},
		{"qv4_g16", 4}, {"qv4_g16_h2", 4}, {"qv4_g16_h2_lb6", 4}, {"qv4_g16_h2_lb8", 4}, {"qv8_g16_h2", 8},
		{"qv8_g16_h2_lb4", 8}, {"qv2_g16_h2", 2}, {"qv2_g16_h2_lb8", 2}, {"qv4_g16_h2_ldplain", 4},
		{"qv4_g16_h2_ldlu", 4}, {"qv4_g16_h2_stplain", 4}, {"qv8_g16_h2_stplain", 8}, {"qv4_g16_h2_lb5", 4},
		{"qv4_g16_h2_pf1_lb5", 4}, {"qv4_g16_h2_pf2_lb5", 4}, {"qv4_g16_h2_pf1_lb6", 4}, {"qv2_g16_h2_pf1_lb6", 2},
		{"qv2_g16_h2_pf2_lb6", 2}, {"qv8_g16_h2_pf1_lb4", 8}}
	// cp.async (compute_80) variants, in their own group: a fault there
	// loses only them.
	qas := []qv{{"qa4_s2", 4}, {"qa4_s2_lb5", 4}, {"qa2_s3", 2}, {"qa2_s4", 2}, {"qa2_s4_lb6", 2}}
	var list []qv
	if want("quant") {
		list = append(list, qvs...)
	}
	if want("async") {
		list = append(list, qas...)
	}
	var qres []result
	bestQ := map[string]result{}
	for _, q := range list {
		k, ok := b.find(q.name)
		if !ok {
			t.Logf("VAR quant   %-26s not in any PTX", q.name)
			continue
		}
		tiles := n / (256 * q.v)
		run := func(g int) error {
			return b.launch(k, g, tiles/8+1, 256, uint64(x), uint64(tiles), uint64(packedV), uint64(absmaxV), uint64(bad))
		}
		// Identity first, on cleared buffers.
		cu.MemsetD8(packedV, 0xAB, sz.Packed)
		cu.MemsetD8(absmaxV, 0xAB, sz.Blocks*4)
		cu.MemsetD32(bad, 0, 1)
		if err := cu.Synchronize(); err != nil {
			return err
		}
		if err := run(max(1, min(5, k.fit))); err != nil {
			return err
		}
		if err := sync(); err != nil {
			return err
		}
		downloadInto(qbuf[:sz.Packed], packedV)
		downloadInto(qbuf[sz.Packed:], absmaxV)
		got := qbuf
		gotS, err := specialQ(k, q.v, spV, saV)
		if err != nil {
			return err
		}
		same := bytes.Equal(got, refQ) && bytes.Equal(gotS, refS) && binary.LittleEndian.Uint32(download(bad, 4)) == 0
		if !same {
			b.invalid = append(b.invalid, q.name)
			t.Errorf("%s: codes, absmax or flag differ from the production kernel's (tensor equal %v, special tensor equal %v)",
				q.name, bytes.Equal(got, refQ), bytes.Equal(gotS, refS))
		}
		var mine []result
		for _, g := range grids {
			if g > k.fit {
				continue
			}
			ms, err := b.time(func() error { return run(g) })
			if err != nil {
				return err
			}
			res := result{kind: "quant", name: q.name, grid: g, ms: ms, gbs: float64(qbytes) / (ms * 1e-3) / 1e9, same: same}
			b.report(res, k)
			qres = append(qres, res)
			mine = append(mine, res)
			if res.gbs > bestQ[q.name].gbs {
				bestQ[q.name] = res
			}
		}
		b.top(mine, k)
	}
	topQ := b.best("quant", qres)

	// Double quantization: production quantize, then the best variant,
	// each followed by mean (production or ahead) and nest at several grids.
	// The production chain's codes, nested absmax and offset are the reference.
	nestK, _ := b.find("nest_quantize")
	means := []string{"mean_torch", "mean_torch_ahead4"} // mean_torch is the ahead-2 version
	gpu := quant.DefaultReduceGPU
	mg := quant.MeanGeometryFor(sz.Blocks, gpu)
	meanRun := func(k kernel, absmax cu.DevicePtr) error {
		vec := uint64(0)
		if mg.Vectorized {
			vec = 1
		}
		return b.launch(k, 1<<20, int64(mg.CTAs), mg.Threads, uint64(absmax), uint64(sz.Blocks), uint64(mg.Threads), vec,
			f32arg(float32(1)/float32(sz.Blocks)), uint64(d.mean.ptr), uint64(d.mean.count()), uint64(d.mean.result()))
	}
	nestRun := func(g int, absmax, codes, nested cu.DevicePtr) error {
		return b.launch(nestK, g, (sz.NestedBlocks()+7)/8, 256, uint64(absmax), uint64(sz.Blocks), uint64(d.mean.result()),
			uint64(d.nestTab), uint64(codes), uint64(nested))
	}
	mk0, _ := b.find("mean_torch")
	if err := meanRun(mk0, absmaxP); err != nil {
		return err
	}
	if err := nestRun(d.Grids.Nest, absmaxP, codesP, nestedP); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	refOff := download(d.mean.result(), 4)
	refDQ := append(download(codesP, sz.Blocks), download(nestedP, sz.Nested)...)
	dqBytes := 2*n + sz.Packed + 3*sz.Blocks*4 + sz.Blocks + sz.Nested
	for _, mname := range means {
		if !want("quant") {
			break
		}
		mk, ok := b.find(mname)
		if !ok {
			t.Logf("VAR mean    %-26s not in any PTX", mname)
			continue
		}
		cu.MemsetD8(d.mean.result(), 0xAB, 4)
		// The memsets run on the legacy stream, which b.st does not wait for.
		if err := cu.Synchronize(); err != nil {
			return err
		}
		if err := meanRun(mk, absmaxP); err != nil {
			return err
		}
		if err := sync(); err != nil {
			return err
		}
		same := bytes.Equal(download(d.mean.result(), 4), refOff)
		if !same {
			b.invalid = append(b.invalid, mname)
			t.Errorf("%s: offset differs from mean_torch's", mname)
		}
		ms, err := b.time(func() error { return meanRun(mk, absmaxP) })
		if err != nil {
			return err
		}
		res := result{kind: "mean", name: mname, grid: 0, ms: ms, gbs: float64(sz.Blocks*4) / (ms * 1e-3) / 1e9, same: same}
		b.report(res, mk)
		b.top([]result{res}, mk)
	}
	var nests []result
	for _, g := range []int{4, 8, 16, 32} {
		if !want("quant") {
			break
		}
		ms, err := b.time(func() error { return nestRun(g, absmaxP, codesV, nestedV) })
		if err != nil {
			return err
		}
		res := result{kind: "nest", name: "nest_quantize", grid: g, ms: ms, gbs: float64(sz.Blocks*4+sz.Blocks+sz.Nested) / (ms * 1e-3) / 1e9, same: true}
		b.report(res, nestK)
		nests = append(nests, res)
	}
	b.top(nests, nestK)
	var dqres []result
	chainQ := []result{bestQ["quant_tile_bf16_nf4_b64_v4"]}
	if topQ.name != "" && topQ.name != chainQ[0].name {
		chainQ = append(chainQ, topQ)
	}
	for _, q := range chainQ {
		if q.name == "" {
			continue
		}
		k, _ := b.find(q.name)
		v := int64(4)
		for _, c := range list {
			if c.name == q.name {
				v = c.v
			}
		}
		tiles := n / (256 * v)
		for _, mname := range means {
			mk, ok := b.find(mname)
			if !ok {
				continue
			}
			for _, g := range []int{8, 16, 32} {
				chain := func() error {
					if err := b.launch(k, q.grid, tiles/8+1, 256, uint64(x), uint64(tiles), uint64(packedV), uint64(absmaxV), uint64(bad)); err != nil {
						return err
					}
					if err := meanRun(mk, absmaxV); err != nil {
						return err
					}
					return nestRun(g, absmaxV, codesV, nestedV)
				}
				cu.MemsetD8(codesV, 0xAB, sz.Blocks)
				cu.MemsetD8(nestedV, 0xAB, sz.Nested)
				cu.MemsetD8(d.mean.result(), 0xAB, 4)
				if err := cu.Synchronize(); err != nil {
					return err
				}
				if err := chain(); err != nil {
					return err
				}
				if err := sync(); err != nil {
					return err
				}
				same := q.same && bytes.Equal(append(download(codesV, sz.Blocks), download(nestedV, sz.Nested)...), refDQ) &&
					bytes.Equal(download(d.mean.result(), 4), refOff)
				ms, err := b.time(chain)
				if err != nil {
					return err
				}
				res := result{kind: "dqchain", name: fmt.Sprintf("%s@%d+%s+nest@%d", strings.TrimPrefix(q.name, "quant_tile_bf16_nf4_b64_"), q.grid, mname, g), grid: q.grid, ms: ms,
					gbs: float64(dqBytes) / (ms * 1e-3) / 1e9, same: same}
				b.report(res, k)
				b.top([]result{res}, k)
				dqres = append(dqres, res)
			}
		}
	}
	b.best("dqchain", dqres)

	// Dequantize the production chain's output (NF4 + double quant, and
	// NF4 with f32 absmax) to bf16; production dequant_bf16_v4 is the
	// reference, on this tensor and on the special one (f32 absmax with
	// inf, -FLT_MAX and zero blocks).
	offset := math.Float32frombits(binary.LittleEndian.Uint32(refOff))
	dqRun := func(k kernel, g int, dq bool, packed, absmax, codes, nested cu.DevicePtr, count int64, out cu.DevicePtr) error {
		sec := uint64(absmax)
		cds := uint64(0)
		if dq {
			sec, cds = 0, uint64(codes)
		}
		return b.launch(k, g, count/8/128/8+1, 256, uint64(packed), uint64(count), 3, 0, sec, cds, uint64(nested),
			f32arg(offset), uint64(d.dynmap), uint64(out))
	}
	prodDQ, _ := b.find("dequant_bf16_v4_dq")
	prodF, _ := b.find("dequant_bf16_v4_f32")
	if err := dqRun(prodDQ, 16, true, packedP, 0, codesP, nestedP, n, y); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	refDeqDQ := download(y, 2*n)
	if err := dqRun(prodF, 16, false, packedP, absmaxP, 0, 0, n, y); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	refDeqF := download(y, 2*n)
	if err := dqRun(prodF, 16, false, spP, saP, 0, 0, ns, soutP); err != nil {
		return err
	}
	if err := sync(); err != nil {
		return err
	}
	refDeqS := download(soutP, 2*ns)
	type dv struct {
		base string
		v    int64
	}
	dvs := []dv{{"dequant_bf16_v4", 4}, {"dequant_bf16_v8", 8}, {"dequant_bf16_v2", 2},
		{"dv4_prmt", 4}, {"dv4_am", 4}, {"dv4_prmt_am", 4}, {"dv8_prmt_am", 8}, {"dv2_prmt_am", 2},
		{"dv4_cvt", 4}, {"dv4_prmt_cvt", 4}, {"dv4_prmt_am_cvt", 4}, {"dv8_prmt_am_cvt", 8}, {"dv2_prmt_am_cvt", 2},
		{"dv4_prmt_am_pf", 4}, {"dv4_prmt_am_cvt_pf", 4}, {"dv8_prmt_am_cvt_pf", 8}}
	var deqDQ, deqF []result
	dbuf := make([]byte, 2*n)
	for _, dvv := range dvs {
		if !want("deq") {
			break
		}
		for _, dq := range []bool{true, false} {
			kname := dvv.base + "_f32"
			if dq {
				kname = dvv.base + "_dq"
			}
			k, ok := b.find(kname)
			if !ok {
				t.Logf("VAR dequant %-26s not in any PTX", kname)
				continue
			}
			run := func(g int) error {
				if dq {
					return dqRun(k, g, true, packedP, 0, codesP, nestedP, n, outV)
				}
				return dqRun(k, g, false, packedP, absmaxP, 0, 0, n, outV)
			}
			cu.MemsetD8(outV, 0xAB, 2*n)
			if err := cu.Synchronize(); err != nil {
				return err
			}
			if err := run(16); err != nil {
				return err
			}
			if err := sync(); err != nil {
				return err
			}
			ref := refDeqF
			if dq {
				ref = refDeqDQ
			}
			same := bytes.Equal(downloadInto(dbuf, outV), ref)
			if !dq {
				cu.MemsetD8(sout, 0xAB, 2*ns)
				if err := cu.Synchronize(); err != nil {
					return err
				}
				if err := dqRun(k, 16, false, spP, saP, 0, 0, ns, sout); err != nil {
					return err
				}
				if err := sync(); err != nil {
					return err
				}
				same = same && bytes.Equal(download(sout, 2*ns), refDeqS)
			}
			if !same {
				b.invalid = append(b.invalid, kname)
				t.Errorf("%s: dequantized values differ from the production kernel's", kname)
			}
			moved := sz.Total() + 2*n
			kind := "deq-dq"
			if !dq {
				moved = sz.Packed + sz.Blocks*4 + 2*n
				kind = "deq-f32"
			}
			var mine []result
			for _, g := range []int{4, 5, 6, 8, 16, 32} {
				ms, err := b.time(func() error { return run(g) })
				if err != nil {
					return err
				}
				res := result{kind: kind, name: kname, grid: g, ms: ms, gbs: float64(moved) / (ms * 1e-3) / 1e9, same: same}
				b.report(res, k)
				mine = append(mine, res)
				if dq {
					deqDQ = append(deqDQ, res)
				} else {
					deqF = append(deqF, res)
				}
			}
			b.top(mine, k)
		}
	}
	b.best("deq-dq", deqDQ)
	b.best("deq-f32", deqF)
	end, err := timeCopy()
	if err != nil {
		return err
	}
	t.Logf("VAR copy at the end %7.1f GB/s (%.2f%% of the first); invalid variants: %v", end, 100*end/b.copyBW, b.invalid)
	return nil
}
