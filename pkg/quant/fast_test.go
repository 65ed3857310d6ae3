package quant

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

// refPayload quantizes with the literal algorithm only.
func refPayload(src []byte, dt DType, p Params) (packed []byte, absmax []float32) {
	x := make([]float32, len(src)/dt.Size())
	widenInto(x, src, dt)
	return refQuantize(x, p.Type, p.BlockSize)
}

// FuzzFastMatchesReference demands that the vector kernels and the
// table-driven Go kernels, on one and several threads, produce exactly the
// reference's codes and absmax.
func FuzzFastMatchesReference(f *testing.F) {
	f.Add([]byte{0x80, 0x3f, 0x00, 0xbf, 0x01, 0x00, 0x80, 0x7f}, uint8(0), uint8(1), false)
	f.Add(bytes.Repeat([]byte{0x12, 0x3d, 0x95, 0xbe}, 100), uint8(1), uint8(0), true)
	f.Add(bytes.Repeat([]byte{0x00, 0x00, 0x00, 0x80}, 50), uint8(2), uint8(3), false)
	f.Add(bytes.Repeat([]byte{0x12, 0x3d, 0x95, 0xbe, 0x01, 0x80, 0x55, 0x3f}, 40), uint8(0), uint8(0), true)
	f.Add(bytes.Repeat([]byte{0x80, 0x3f, 0x00, 0x00, 0x22, 0x3d, 0xa3, 0xbd}, 64), uint8(1), uint8(0), false)
	f.Add(bytes.Repeat([]byte{0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x01}, 32), uint8(2), uint8(0), true)
	f.Fuzz(func(t *testing.T, src []byte, dtSel, bsSel uint8, fp4 bool) {
		dt := []DType{BF16, F16, F32}[dtSel%3]
		p := Params{Type: NF4, BlockSize: 32 << (bsSel % 8), AllowNonFinite: true}
		if fp4 {
			p.Type = FP4
		}
		src = src[:len(src)/dt.Size()*dt.Size()]
		wantPacked, wantAbsmax := refPayload(src, dt, p)
		for _, simd := range kernelModes() {
			undo := setSIMD(simd)
			for _, threads := range []int{1, 2} {
				q, err := Quantize(src, dt, p, CPU(threads))
				if err != nil {
					undo()
					t.Fatal(err)
				}
				if !bytes.Equal(q.Packed, wantPacked) {
					undo()
					t.Fatalf("%s %v %s threads %d: packed %x, reference %x", dt, p, modeName(simd), threads, q.Packed, wantPacked)
				}
				var got []float32
				for i := 0; i+4 <= len(q.Absmax); i += 4 {
					got = append(got, math.Float32frombits(binary.LittleEndian.Uint32(q.Absmax[i:])))
				}
				if !equalBits(got, wantAbsmax) {
					undo()
					t.Fatalf("%s %v %s: absmax %v, reference %v", dt, p, modeName(simd), got, wantAbsmax)
				}
			}
			undo()
		}
	})
}

// TestCodeTableAtThresholds checks the lookup against the decision tree on every
// float32 within 64 ulps of each threshold and of ±0, and on random patterns.
func TestCodeTableAtThresholds(t *testing.T) {
	points := []float32{0, 0.03979014977812767, 0.3893125355243683, 0.6427869200706482,
		0.8614784181118011, 0.5016634166240692, 0.2035212516784668, 0.2920137718319893,
		0.1202552504837513, -0.33967943489551544, -0.13791173323988914, -0.045525018125772476,
		-0.23460740596055984, -0.6106329262256622, -0.4599952697753906, -0.8480964004993439,
		0.29166667, 0.583333, 0.8333333, 0.4166667, 0.0859375, 0.20833333, 0.00260417, 1, 1e-38}
	rng := rand.New(rand.NewPCG(3, 4))
	for _, typ := range []Type{NF4, FP4} {
		tab, code := tableFor(typ), typ.codeFunc()
		check := func(b uint32) {
			y := math.Float32frombits(b)
			if math.IsNaN(float64(y)) || math.IsInf(float64(y), 0) {
				return
			}
			if got, want := tab.lookup(b), uint32(code(ftz(y))); got != want {
				t.Fatalf("%s: y=%v (%08x): table %d, tree %d", typ, y, b, got, want)
			}
		}
		for _, p := range points {
			for _, s := range []float32{1, -1} {
				b := math.Float32bits(p * s)
				for d := uint32(0); d < 64; d++ {
					check(b + d)
					check(b - d)
				}
			}
		}
		for range 1 << 20 {
			check(rng.Uint32())
		}
	}
}

func TestNonFinite(t *testing.T) {
	src := make([]byte, 2*300)
	for i := range 300 {
		binary.LittleEndian.PutUint16(src[2*i:], f32ToBF16(float32(i%7)-3))
	}
	binary.LittleEndian.PutUint16(src[2*200:], 0x7FC0) // NaN
	binary.LittleEndian.PutUint16(src[2*250:], 0xFF80) // -Inf
	for _, dt := range []DType{BF16} {
		_, err := Quantize(src, dt, DefaultParams(), CPU(2))
		var nf *NonFiniteError
		if !errors.Is(err, ErrNonFinite) || !errors.As(err, &nf) || nf.Index != 200 {
			t.Fatalf("err = %v, want ErrNonFinite at 200", err)
		}
	}
	p := DefaultParams()
	p.AllowNonFinite = true
	q, err := Quantize(src, BF16, p, nil)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := refPayload(src, BF16, p)
	if !bytes.Equal(q.Packed, want) {
		t.Fatal("allowed non-finite input differs from the reference")
	}
}

func TestEncoderErrors(t *testing.T) {
	if _, err := NewEncoder(&bytes.Buffer{}, BF16, 10, Params{Type: NF4, BlockSize: 48}, nil); !errors.Is(err, ErrParams) {
		t.Errorf("blocksize 48: %v", err)
	}
	if _, err := NewEncoder(&bytes.Buffer{}, BF16, 10, Params{Type: "nf5", BlockSize: 64}, nil); !errors.Is(err, ErrParams) {
		t.Errorf("nf5: %v", err)
	}
	if _, err := NewEncoder(&bytes.Buffer{}, "F8_E4M3", 10, DefaultParams(), nil); !errors.Is(err, ErrDType) {
		t.Errorf("fp8: %v", err)
	}
	enc, _ := NewEncoder(&bytes.Buffer{}, BF16, 10, DefaultParams(), nil)
	if _, err := enc.Write(make([]byte, 22)); !errors.Is(err, ErrLength) {
		t.Errorf("too long: %v", err)
	}
	enc, _ = NewEncoder(&bytes.Buffer{}, BF16, 10, DefaultParams(), nil)
	enc.Write(make([]byte, 19))
	if _, err := enc.Close(); !errors.Is(err, ErrLength) {
		t.Errorf("too short: %v", err)
	}
}

func TestSizesFor(t *testing.T) {
	s := SizesFor(4096*4096, DefaultParams())
	if s.Packed != 8388608 || s.Absmax != 262144 || s.Nested != 4096 || s.Total() != 8388608+262144+4096 {
		t.Errorf("%+v", s)
	}
	s = SizesFor(33153, Params{Type: NF4, BlockSize: 64})
	if s.Packed != 16577 || s.Blocks != 519 || s.Absmax != 519*4 || s.Nested != 0 {
		t.Errorf("%+v", s)
	}
}

func TestConvertRoundTrip(t *testing.T) {
	for h := range uint32(1 << 16) {
		f := f16ToF32(uint16(h))
		if math.IsNaN(float64(f)) {
			continue
		}
		if got := f32ToF16(f); got != uint16(h) {
			t.Fatalf("f16 %04x -> %v -> %04x", h, f, got)
		}
		if got := f32ToBF16(bf16ToF32(uint16(h))); got != uint16(h) && !math.IsNaN(float64(bf16ToF32(uint16(h)))) {
			t.Fatalf("bf16 %04x round trip -> %04x", h, got)
		}
	}
	// Ties go to even: halfway between two halves.
	for h := uint16(0x0001); h < 0x7BFF; h += 97 {
		lo, hi := f16ToF32(h), f16ToF32(h+1)
		mid := float32((float64(lo) + float64(hi)) / 2)
		want := h
		if h&1 == 1 {
			want = h + 1
		}
		if got := f32ToF16(mid); got != want {
			t.Fatalf("tie between %04x and %04x -> %04x, want %04x", h, h+1, got, want)
		}
	}
}

// TestEncoderReset demands that an encoder reused through Reset, tensor after
// tensor (larger, smaller, another dtype or format, with and without double
// quantization, after a failed tensor), writes exactly what a new one writes.
func TestEncoderReset(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	encode := func(e *Encoder, src []byte, dt DType, p Params) ([]byte, Result, error) {
		var out bytes.Buffer
		n := int64(len(src) / dt.Size())
		if e == nil {
			var err error
			if e, err = NewEncoder(&out, dt, n, p, CPU(2)); err != nil {
				return nil, Result{}, err
			}
		} else if err := e.Reset(&out, dt, n, p, CPU(2)); err != nil {
			return nil, Result{}, err
		}
		for b := src; len(b) > 0; {
			k := min(len(b), 1+rng.IntN(70000))
			if _, err := e.Write(b[:k]); err != nil {
				return nil, Result{}, err
			}
			b = b[k:]
		}
		res, err := e.Close()
		return out.Bytes(), res, err
	}
	var reused Encoder
	for i, n := range []int{300000, 5, 0, 64 * 1100, 1 << 20, 777, 3} {
		dt := []DType{BF16, F16, F32}[i%3]
		p := DefaultParams()
		p.DoubleQuant = i%2 == 0
		if i == 3 {
			p.Type, p.BlockSize = FP4, 128
		}
		src := make([]byte, n*dt.Size())
		for j := 0; j < n; j++ {
			v := float32(rng.NormFloat64() * 0.02)
			switch dt {
			case BF16:
				binary.LittleEndian.PutUint16(src[2*j:], uint16(math.Float32bits(v)>>16))
			case F16:
				binary.LittleEndian.PutUint16(src[2*j:], f32ToF16(v))
			default:
				binary.LittleEndian.PutUint32(src[4*j:], math.Float32bits(v))
			}
		}
		want, wantRes, err := encode(nil, src, dt, p)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		got, gotRes, err := encode(&reused, src, dt, p)
		if err != nil {
			t.Fatalf("case %d, reused: %v", i, err)
		}
		if !bytes.Equal(got, want) || gotRes != wantRes {
			t.Fatalf("case %d (%d %s, %v): the reused encoder wrote other bytes or result (%v, want %v)", i, n, dt, p, gotRes, wantRes)
		}
		if i == 2 { // a failed tensor in between: too few bytes
			if err := reused.Reset(&bytes.Buffer{}, BF16, 1000, p, CPU(2)); err != nil {
				t.Fatal(err)
			}
			reused.Write(make([]byte, 999))
			if _, err := reused.Close(); !errors.Is(err, ErrLength) {
				t.Fatalf("short tensor: %v", err)
			}
		}
	}
}

// lender is a BufferLender whose buffers have random sizes, some below
// minLent, some above a whole chunk's codes; full ones go to out.
type lender struct {
	rng     *rand.Rand
	buf     []byte
	out     bytes.Buffer
	inPlace int // bytes taken without a copy
}

func (l *lender) AvailableBuffer() []byte {
	if l.buf == nil || len(l.buf) == cap(l.buf) {
		l.out.Write(l.buf)
		l.buf = make([]byte, 0, 1+l.rng.IntN(3*minLent))
	}
	return l.buf[len(l.buf):len(l.buf)]
}

func (l *lender) Write(b []byte) (int, error) {
	if len(b) > 0 && len(b) <= cap(l.buf)-len(l.buf) && &b[0] == &l.buf[:len(l.buf)+1][len(l.buf)] {
		l.buf = l.buf[:len(l.buf)+len(b)]
		l.inPlace += len(b)
		return len(b), nil
	}
	l.out.Write(l.buf)
	l.buf = nil
	return l.out.Write(b)
}

// TestEncoderLender demands that an encoder quantizing into a lender's
// buffers writes exactly what it writes to a plain writer.
func TestEncoderLender(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i, n := range []int{1 << 20, 300001, 64*4096 + 3, 5} {
		p := DefaultParams()
		p.BlockSize = []int{64, 4096, 32, 64}[i]
		src := make([]byte, 2*n)
		for j := range n {
			binary.LittleEndian.PutUint16(src[2*j:], uint16(math.Float32bits(float32(rng.NormFloat64()*0.02))>>16))
		}
		var want bytes.Buffer
		enc, err := NewEncoder(&want, BF16, int64(n), p, CPU(2))
		if err != nil {
			t.Fatal(err)
		}
		enc.Write(src)
		if _, err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		l := &lender{rng: rng}
		if err := enc.Reset(l, BF16, int64(n), p, CPU(2)); err != nil {
			t.Fatal(err)
		}
		for b := src; len(b) > 0; {
			k := min(len(b), 1+rng.IntN(1<<20))
			if _, err := enc.Write(b[:k]); err != nil {
				t.Fatal(err)
			}
			b = b[k:]
		}
		if _, err := enc.Close(); err != nil {
			t.Fatal(err)
		}
		l.out.Write(l.buf)
		if !bytes.Equal(l.out.Bytes(), want.Bytes()) {
			t.Fatalf("case %d (%d values, block %d): the lender got other bytes", i, n, p.BlockSize)
		}
		if n > 1000 && l.inPlace == 0 {
			t.Errorf("case %d: nothing quantized in place", i)
		}
	}
}
