package quant

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
)

// setSIMD switches the vector kernels on or off and returns the undo.
func setSIMD(on bool) func() {
	old := useSIMD
	useSIMD = on && hasSIMD
	return func() { useSIMD = old }
}

// hasSIMD records whether this machine runs the vector kernels at all.
var hasSIMD = useSIMD

// kernelModes are the kernel sets a test must hold to the reference.
func kernelModes() []bool {
	if hasSIMD {
		return []bool{true, false}
	}
	return []bool{false}
}

func modeName(simd bool) string {
	if simd {
		return simdName()
	}
	return "go"
}

// countCode is the code as the vector kernels compute it: thresholds counted.
func countCode(t Type, y float32) byte {
	y = ftz(y)
	if t == NF4 {
		var c byte
		for _, th := range nf4Thresholds {
			if y > th {
				c++
			}
		}
		return c
	}
	var c byte
	if y < 0 {
		c = 8
	}
	a := float32(math.Abs(float64(y)))
	for _, th := range fp4Thresholds {
		if a > th {
			c++
		}
	}
	perm := fp4CountCodes()
	return perm[c]
}

// TestCountCodeMatchesTree checks threshold counting against the decision trees
// on every float32 within 300 ulps of each threshold, of ±0 and of the
// smallest normal, on ±Inf and NaN, and on random bit patterns.
func TestCountCodeMatchesTree(t *testing.T) {
	for i := 1; i < len(nf4Thresholds); i++ {
		if !(nf4Thresholds[i-1] < nf4Thresholds[i]) {
			t.Fatal("NF4 thresholds not ascending")
		}
	}
	for i := 1; i < len(fp4Thresholds); i++ {
		if !(fp4Thresholds[i-1] < fp4Thresholds[i]) {
			t.Fatal("FP4 thresholds not ascending")
		}
	}
	if got, want := fp4CountCodes(), [16]byte{0, 1, 6, 7, 4, 5, 2, 3, 8, 9, 14, 15, 12, 13, 10, 11}; got != want {
		t.Fatalf("FP4 count codes %v, want %v", got, want)
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, typ := range []Type{NF4, FP4} {
		code := typ.codeFunc()
		check := func(b uint32) {
			y := math.Float32frombits(b)
			if got, want := countCode(typ, y), code(ftz(y)); got != want {
				t.Fatalf("%s: y=%v (%08x): count %d, tree %d", typ, y, b, got, want)
			}
		}
		points := append([]float32{0, 0x1p-126, 1}, thresholds(typ)...)
		for _, p := range points {
			for _, s := range []float32{1, -1} {
				b := math.Float32bits(p * s)
				for d := uint32(0); d < 300; d++ {
					check(b + d)
					check(b - d)
				}
			}
		}
		for _, b := range []uint32{0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x7F800001} {
			check(b)
		}
		for range 1 << 18 {
			check(rng.Uint32())
		}
	}
}

// The element types as the tests write them.
func putValue(dst []byte, dt DType, f float32) {
	switch dt {
	case BF16:
		binary.LittleEndian.PutUint16(dst, f32ToBF16(f))
	case F16:
		binary.LittleEndian.PutUint16(dst, f32ToF16(f))
	default:
		binary.LittleEndian.PutUint32(dst, math.Float32bits(f))
	}
}

// roundTo rounds f to dt and back, so a test knows the value it stored.
func roundTo(dt DType, f float32) float32 {
	switch dt {
	case BF16:
		return bf16ToF32(f32ToBF16(f))
	case F16:
		return f16ToF32(f32ToF16(f))
	}
	return f
}

// nudge moves f by k units in the last place of dt (toward +Inf for k > 0 on
// the bit pattern's magnitude).
func nudge(dt DType, f float32, k int) float32 {
	switch dt {
	case BF16:
		return bf16ToF32(uint16(int(f32ToBF16(f)) + k))
	case F16:
		return f16ToF32(uint16(int(f32ToF16(f)) + k))
	}
	return math.Float32frombits(uint32(int64(math.Float32bits(f)) + int64(k)))
}

// blockKinds generates one block of n values of dt in x (float32 values that
// dt holds exactly). Kinds cover ordinary data, values on and beside every
// threshold after scaling, and the blocks the vector kernels hand back.
var blockKinds = []string{"normal", "threshold", "tiny", "huge", "zero", "signedzero",
	"nan", "inf", "subnormal", "subnormalmax", "constant", "onehot"}

func genBlock(rng *rand.Rand, kind string, dt DType, typ Type, x []float32) {
	mag := float32(math.Exp2(float64(rng.IntN(40) - 20)))
	for i := range x {
		x[i] = roundTo(dt, float32(rng.NormFloat64())*mag)
	}
	switch kind {
	case "threshold":
		// absmax A at some position, the others at t*A (t a threshold, either
		// sign for NF4's asymmetric ones) nudged by a few ulps either way.
		a := roundTo(dt, mag*(1+rng.Float32()))
		s := gpuRecip(a)
		ths := thresholds(typ)
		for i := range x {
			th := ths[rng.IntN(len(ths))]
			if typ == FP4 && rng.IntN(2) == 0 {
				th = -th
			}
			v := roundTo(dt, float32(float64(th)/float64(s)))
			v = nudge(dt, v, rng.IntN(7)-3)
			if !(float32(math.Abs(float64(v))) <= a) {
				v = a
			}
			x[i] = v
		}
		x[rng.IntN(len(x))] = a
		if rng.IntN(2) == 0 {
			x[rng.IntN(len(x))] = -a
		}
	case "tiny": // products that underflow, and a small absmax
		for i := range x {
			x[i] = roundTo(dt, float32(rng.NormFloat64())*1e-30)
		}
		if dt == F16 {
			for i := range x {
				x[i] = roundTo(dt, float32(rng.NormFloat64())*1e-6)
			}
		}
		x[0] = roundTo(dt, 1)
		if dt != F16 { // normal values whose products are subnormal
			for i := 1; i < len(x); i += 2 {
				x[i] = roundTo(dt, float32(rng.NormFloat64())*1e-37)
			}
			x[0] = roundTo(dt, 100)
		}
	case "huge": // absmax whose reciprocal is subnormal (flushed)
		if dt != F16 {
			x[rng.IntN(len(x))] = roundTo(dt, 3e38)
			x[rng.IntN(len(x))] = -roundTo(dt, 1e-38)
		}
	case "zero":
		clear(x)
	case "signedzero":
		for i := range x {
			x[i] = float32(math.Copysign(0, float64(rng.IntN(2)*2-1)))
		}
	case "nan":
		x[rng.IntN(len(x))] = float32(math.NaN())
	case "inf":
		x[rng.IntN(len(x))] = float32(math.Inf(rng.IntN(2)*2 - 1))
	case "subnormal": // float32 subnormals beside normal values (bf16, f32)
		for i := range x {
			if rng.IntN(3) == 0 {
				x[i] = roundTo(dt, float32(rng.NormFloat64())*1e-39)
			}
		}
		if dt == F16 {
			x[0] = f16ToF32(0x0001) // a half subnormal is a normal float32
		}
	case "subnormalmax": // absmax itself subnormal
		for i := range x {
			x[i] = roundTo(dt, float32(rng.NormFloat64())*1e-39)
		}
	case "constant":
		v := x[0]
		for i := range x {
			x[i] = v
		}
	case "onehot":
		clear(x)
		x[rng.IntN(len(x))] = roundTo(dt, -mag)
	}
}

// TestKernelsMatchReference holds the vector and the Go kernels, on one and two
// threads, to the literal reference for every element type, code type and
// block size, on tensors mixing every kind of block, with odd lengths.
func TestKernelsMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for _, dt := range []DType{BF16, F16, F32} {
		for _, typ := range []Type{NF4, FP4} {
			for bs := 32; bs <= 4096; bs *= 2 {
				blocks := max(3, 40960/bs)
				if testing.Short() {
					blocks = max(3, 4096/bs)
				}
				for trial := range 3 {
					n := blocks * bs
					switch trial {
					case 1:
						n -= rng.IntN(bs)/2*2 + 1 // odd, short last block
					case 2:
						n += 1 + rng.IntN(5) // a few values past the last whole block
					}
					x := make([]float32, n)
					for b := 0; b*bs < n; b++ {
						blk := x[b*bs : min((b+1)*bs, n)]
						genBlock(rng, blockKinds[rng.IntN(len(blockKinds))], dt, typ, blk)
					}
					src := make([]byte, n*dt.Size())
					for i, v := range x {
						putValue(src[i*dt.Size():], dt, v)
					}
					p := Params{Type: typ, BlockSize: bs, AllowNonFinite: true}
					name := fmt.Sprintf("%s/%s/bs%d/n%d", dt, typ, bs, n)
					checkAgainstReference(t, name, src, dt, p)
				}
			}
		}
	}
}

func checkAgainstReference(t *testing.T, name string, src []byte, dt DType, p Params) {
	t.Helper()
	wantPacked, wantAbsmax := refPayload(src, dt, p)
	for _, simd := range kernelModes() {
		undo := setSIMD(simd)
		for _, threads := range []int{1, 2} {
			got := make([]byte, len(wantPacked))
			absmax := make([]float32, len(wantAbsmax))
			if err := CPU(threads).QuantizeBlocks(got, absmax, src, dt, p, 0); err != nil {
				undo()
				t.Fatalf("%s %s: %v", name, modeName(simd), err)
			}
			if !bytes.Equal(got, wantPacked) {
				i := 0
				for got[i] == wantPacked[i] {
					i++
				}
				undo()
				t.Fatalf("%s %s threads %d: packed byte %d (block %d) = %02x, reference %02x",
					name, modeName(simd), threads, i, 2*i/p.BlockSize, got[i], wantPacked[i])
			}
			if !equalBits(absmax, wantAbsmax) {
				undo()
				t.Fatalf("%s %s threads %d: absmax differs", name, modeName(simd), threads)
			}
		}
		undo()
	}
}

// TestKernelsNonFiniteIndex checks that both kernel sets name the first
// non-finite element when they must refuse it, whatever block it is in.
func TestKernelsNonFiniteIndex(t *testing.T) {
	for _, dt := range []DType{BF16, F16, F32} {
		for _, bad := range []int{0, 63, 64, 5000, 40959} {
			n := 40960
			src := make([]byte, n*dt.Size())
			for i := range n {
				putValue(src[i*dt.Size():], dt, float32(i%13)-6)
			}
			putValue(src[bad*dt.Size():], dt, float32(math.Inf(-1)))
			putValue(src[(n-1)*dt.Size():], dt, float32(math.NaN()))
			for _, simd := range kernelModes() {
				undo := setSIMD(simd)
				_, err := Quantize(src, dt, DefaultParams(), CPU(2))
				undo()
				var nf *NonFiniteError
				if !errors.As(err, &nf) || nf.Index != int64(bad) {
					t.Fatalf("%s %s: bad at %d: err = %v", dt, modeName(simd), bad, err)
				}
			}
		}
	}
}

// TestGoldenGoKernels runs the golden encoder and decoder tests with the
// vector kernels off (they run with them on where the CPU has them).
func TestGoldenGoKernels(t *testing.T) {
	if !hasSIMD {
		t.Skip("the Go kernels are the only ones here; the golden tests ran them")
	}
	defer setSIMD(false)()
	t.Run("encoder", TestEncoderGolden)
	t.Run("dequantize", TestDequantizeGolden)
}

// TestNestedSearchNeighbours walks all 128 answer sequences of the reference's
// seven comparisons and checks what nestedCodeFast relies on: the reference's
// lo and hi end as pivot-1 (0 at the bottom) and pivot+1, and lower and upper
// as their map values.
func TestNestedSearchNeighbours(t *testing.T) {
	m := &NestedMap
	for path := range 128 {
		pivot, hi, lo := 127, 255, 0
		lower, upper := float32(-1), float32(1)
		v := m[pivot]
		step := 0
		for i := 64; i > 0; i >>= 1 {
			if path>>step&1 == 1 {
				lo, lower = pivot, v
				pivot += i
			} else {
				hi, upper = pivot, v
				pivot -= i
			}
			v = m[pivot]
			step++
		}
		if hi == 255 {
			upper = m[255]
		}
		if lo == 0 {
			lower = m[0]
		}
		if lo != max(pivot-1, 0) || hi != pivot+1 || lower != m[lo] || upper != m[hi] {
			t.Fatalf("path %07b: pivot %d lo %d hi %d lower %v upper %v", path, pivot, lo, hi, lower, upper)
		}
	}
}

// TestNestedCodeFast compares the branch-free search with the reference on
// every map value and midpoint ± 64 ulps, specials (NaN, ±Inf, ±0,
// subnormals), and random values.
func TestNestedCodeFast(t *testing.T) {
	check := func(x float32) {
		if got, want := nestedCodeFast(x), nestedCode(&NestedMap, x); got != want {
			t.Fatalf("x=%v (%08x): fast %d, reference %d", x, math.Float32bits(x), got, want)
		}
	}
	m := NestedMap
	var points []float32
	for i, v := range m {
		points = append(points, v)
		if i > 0 {
			points = append(points, (m[i-1]+v)*0.5)
		}
	}
	points = append(points, 0, 1, -1, 2, -2, 1e-30, -1e-30)
	for _, p := range points {
		b := math.Float32bits(p)
		for d := uint32(0); d <= 64; d++ {
			check(math.Float32frombits(b + d))
			check(math.Float32frombits(b - d))
		}
	}
	for _, b := range []uint32{0x7F800000, 0xFF800000, 0x7FC00000, 0xFFC00000, 0x80000000, 1, 0x80000001} {
		check(math.Float32frombits(b))
	}
	rng := rand.New(rand.NewPCG(9, 10))
	for range 1 << 18 {
		check(rng.Float32()*2 - 1)
		check(math.Float32frombits(rng.Uint32()))
	}
}

// TestDoubleQuantizeThreads checks the parallel double quantization against
// the reference on absmax values with every kind of nested block.
func TestDoubleQuantizeThreads(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	for _, n := range []int{1, 255, 256, 257, 64*256 + 17, 300 * 256} {
		a := make([]float32, n)
		for i := range a {
			a[i] = float32(math.Abs(rng.NormFloat64())) * 0.05
		}
		if n > 600 {
			a[300] = 0              // a zero absmax
			a[600] = 1e-39          // subnormal
			a[n-1] = a[n-1] * 1e5   // an outlier
			clear(a[256*2 : 256*3]) // a nested block of zeros
		}
		offset := absmaxMean(a)
		wantCodes := make([]byte, n)
		wantNested := make([]float32, (n+255)/256)
		nestQuantize(wantCodes, wantNested, a, offset)
		for _, simd := range kernelModes() {
			undo := setSIMD(simd)
			for _, threads := range []int{1, 2, 7} {
				codes, nested, off := doubleQuantize(a, DefaultReduceGPU, threads)
				if off != offset || !bytes.Equal(codes, wantCodes) || !equalBits(nested, wantNested) {
					undo()
					t.Fatalf("n=%d threads=%d %s: differs from the reference", n, threads, modeName(simd))
				}
			}
			undo()
		}
	}
}

// refDecode is dequantization one value at a time, as Decoder did before it
// had block kernels.
func refDecode(p Params, n int64, absmax []float32, out DType, packed []byte) []byte {
	table := p.Type.Map()
	if p.Type == FP4 {
		table[8] = float32(math.Copysign(0, -1))
	}
	var dst []byte
	for i := int64(0); i < n; i++ {
		c := packed[i/2] >> 4
		if i&1 == 1 {
			c = packed[i/2] & 15
		}
		v := mulFTZ(table[c], absmax[i/int64(p.BlockSize)])
		switch out {
		case BF16:
			dst = binary.LittleEndian.AppendUint16(dst, f32ToBF16(v))
		case F16:
			dst = binary.LittleEndian.AppendUint16(dst, f32ToF16(v))
		default:
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	}
	return dst
}

// specialAbsmax are absmax values that exercise flush-to-zero, rounding to
// infinity, NaN and signs in dequantization.
var specialAbsmax = []float32{0, float32(math.Copysign(0, -1)), 1e-39, -1e-39, 0x1p-126, 1.5e-38,
	3e38, math.MaxFloat32, -2.5, 65504, 65520, 7e4, 6e-8, 3e-5, 1,
	float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN())}

// TestDecoderMatchesReference decodes random codes with ordinary and special
// absmax values, in chunks that split blocks anywhere, with both kernel sets.
func TestDecoderMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(15, 16))
	for _, out := range []DType{BF16, F16, F32} {
		for _, typ := range []Type{NF4, FP4} {
			for bs := 32; bs <= 4096; bs *= 2 {
				n := int64(max(3, 20000/bs)*bs) - int64(rng.IntN(3))
				p := Params{Type: typ, BlockSize: bs}
				blocks := SizesFor(n, p).Blocks
				absmax := make([]float32, blocks)
				for i := range absmax {
					if rng.IntN(4) == 0 {
						absmax[i] = specialAbsmax[rng.IntN(len(specialAbsmax))]
					} else {
						absmax[i] = float32(math.Exp2(rng.NormFloat64() * 20))
					}
				}
				packed := make([]byte, (n+1)/2)
				for i := range packed {
					packed[i] = byte(rng.Uint32())
				}
				want := refDecode(p, n, absmax, out, packed)
				for _, simd := range kernelModes() {
					undo := setSIMD(simd)
					d, err := NewDecoder(p, n, absmax, out)
					if err != nil {
						t.Fatal(err)
					}
					got := []byte("prefix")
					for rest := packed; len(rest) > 0; {
						k := min(len(rest), 1+rng.IntN(3*bs))
						if got, err = d.Decode(got, rest[:k]); err != nil {
							t.Fatal(err)
						}
						rest = rest[k:]
					}
					undo()
					if string(got[:6]) != "prefix" || !bytes.Equal(got[6:], want) {
						i := 6
						for i < len(got) && i-6 < len(want) && got[i] == want[i-6] {
							i++
						}
						t.Fatalf("%s %s bs%d %s: differs at output byte %d of %d", out, typ, bs, modeName(simd), i-6, len(want))
					}
				}
			}
		}
	}
}

// TestDequantTableRounding checks the vector kernels' per-block tables on a
// dense sweep of absmax values: every float32 exponent, many mantissas.
func TestDequantTableRounding(t *testing.T) {
	rng := rand.New(rand.NewPCG(17, 18))
	var absmax []float32
	for e := uint32(0); e < 256; e++ {
		for range 64 {
			absmax = append(absmax, math.Float32frombits(e<<23|rng.Uint32()&0x807FFFFF))
		}
	}
	packed := make([]byte, len(absmax)*16) // block size 32: each block all 16 codes, twice
	for i := range packed {
		packed[i] = byte(i%16)<<4 | byte(15-i%16)
	}
	for _, out := range []DType{BF16, F16} {
		for _, typ := range []Type{NF4, FP4} {
			p := Params{Type: typ, BlockSize: 32}
			n := int64(len(absmax) * 32)
			want := refDecode(p, n, absmax, out, packed)
			for _, simd := range kernelModes() {
				undo := setSIMD(simd)
				d, err := NewDecoder(p, n, absmax, out)
				if err != nil {
					t.Fatal(err)
				}
				got, err := d.Decode(nil, packed)
				undo()
				if err != nil || !bytes.Equal(got, want) {
					t.Fatalf("%s %s %s: differs from the reference (err %v)", out, typ, modeName(simd), err)
				}
			}
		}
	}
}

// TestNestedTable compares the table with the reference search at every
// bucket boundary, every transition ± 64 keys, and random bit patterns.
func TestNestedTable(t *testing.T) {
	tab := nestedTable()
	if tab == nil {
		t.Fatal("nested code table has a bucket with two steps")
	}
	check := func(k uint32) {
		b := nestedUnkey(k)
		if nestedKey(b) != k {
			t.Fatalf("key %08x does not round-trip", k)
		}
		x := math.Float32frombits(b)
		if got, want := tab.code(b), nestedCode(&NestedMap, x); got != want {
			t.Fatalf("x=%v (%08x): table %d, reference %d", x, b, got, want)
		}
	}
	for h := range uint32(1 << 16) {
		base := h << 16
		check(base)
		check(base | 0xFFFF)
		if thr := tab[h] & 0xFFFF; thr != 0xFFFF {
			for d := uint32(0); d <= 64; d++ {
				check(base | max(thr, d) - d)
				check(base | min(thr+d, 0xFFFF))
			}
		}
	}
	rng := rand.New(rand.NewPCG(19, 20))
	for range 1 << 20 {
		check(rng.Uint32())
	}
}

func TestFTZBits(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, b := range []uint32{0, 0x80000000, 1, 0x807FFFFF, 0x00800000, 0x80800000, 0x7F800000, 0x7FC00001, 0x3F800000} {
		if got, want := ftzBits(b), math.Float32bits(ftz(math.Float32frombits(b))); got != want {
			t.Fatalf("%08x: %08x, want %08x", b, got, want)
		}
	}
	for range 1 << 16 {
		b := rng.Uint32()
		for _, b := range []uint32{b, b & 0x807FFFFF} {
			if got, want := ftzBits(b), math.Float32bits(ftz(math.Float32frombits(b))); got != want {
				t.Fatalf("%08x: %08x, want %08x", b, got, want)
			}
		}
	}
}

// FuzzDecoderMatchesReference decodes fuzzed codes with fuzzed absmax bits,
// in two chunks split anywhere, with both kernel sets, against refDecode.
func FuzzDecoderMatchesReference(f *testing.F) {
	f.Add([]byte{0x12, 0x34, 0xff, 0x00}, []byte{0x00, 0x00, 0x80, 0x3f}, uint8(0), uint16(1), false)
	f.Add(bytes.Repeat([]byte{0x7e, 0x81}, 40), []byte{0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0xc0, 0x7f}, uint8(1), uint16(7), true)
	f.Add(bytes.Repeat([]byte{0xa5}, 64), []byte{0xff, 0xff, 0x7f, 0x7f}, uint8(2), uint16(0), false)
	f.Fuzz(func(t *testing.T, packed, amBytes []byte, outSel uint8, split uint16, fp4 bool) {
		out := []DType{BF16, F16, F32}[outSel%3]
		p := Params{Type: NF4, BlockSize: 32}
		if fp4 {
			p.Type = FP4
		}
		n := int64(len(packed) * 2)
		if n > 0 && split&1 == 1 {
			n-- // odd count: the last low nibble is a pad
		}
		blocks := SizesFor(n, p).Blocks
		absmax := make([]float32, blocks)
		for i := range absmax {
			if len(amBytes) >= 4 {
				j := 4 * (i % (len(amBytes) / 4))
				absmax[i] = math.Float32frombits(binary.LittleEndian.Uint32(amBytes[j:]))
			}
		}
		want := refDecode(p, n, absmax, out, packed)
		k := int(split) % (len(packed) + 1)
		for _, simd := range kernelModes() {
			undo := setSIMD(simd)
			d, err := NewDecoder(p, n, absmax, out)
			if err != nil {
				undo()
				t.Fatal(err)
			}
			got, err := d.Decode(nil, packed[:k])
			if err == nil {
				got, err = d.Decode(got, packed[k:])
			}
			undo()
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("%s %s %s split %d: differs from the reference (err %v)", out, p.Type, modeName(simd), k, err)
			}
		}
	})
}
