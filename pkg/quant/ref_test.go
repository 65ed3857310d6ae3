package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// checkOffset demands the golden offset bit for bit: MeanF32 replays the order
// of torch's CUDA reduction, so no case is allowed to be off by one ulp.
func checkOffset(t *testing.T, file string, c goldenCase, got float32) {
	t.Helper()
	if want := float32(*c.NestedOffset); got != want {
		t.Errorf("%s: %v: offset %v, want %v", file, c, got, want)
	}
}

// TestReferenceGolden holds the literal algorithm to every golden case.
func TestReferenceGolden(t *testing.T) {
	forEachGoldenFile(t, func(t *testing.T, name string, f *stFile) {
		for _, c := range goldenCases(t, f) {
			x := widen(c.dtype(), f.get(t, c.Input).Data)
			packed, absmax := refQuantize(x, Type(c.QuantType), c.BlockSize)
			if !bytes.Equal(packed, f.get(t, c.Key+".packed").Data) {
				t.Errorf("%s: %v: packed differs", name, c)
			}
			if !c.DoubleQuant {
				if got, want := absmax, f32s(f.get(t, c.Key+".absmax").Data); !equalBits(got, want) {
					t.Errorf("%s: %v: absmax differs", name, c)
				}
				continue
			}
			checkOffset(t, name, c, absmaxMean(absmax))
			// Given bitsandbytes' offset, the nested quantization matches exactly.
			codes := make([]byte, len(absmax))
			nested := make([]float32, (len(absmax)+255)/256)
			nestQuantize(codes, nested, absmax, float32(*c.NestedOffset))
			if !bytes.Equal(codes, f.get(t, c.Key+".absmax").Data) {
				t.Errorf("%s: %v: absmax codes differ", name, c)
			}
			if !equalBits(nested, f32s(f.get(t, c.Key+".nested_absmax").Data)) {
				t.Errorf("%s: %v: nested absmax differs", name, c)
			}
		}
	})
}

// TestEncoderGolden streams every golden input through the Encoder in chunks of
// random lengths, on one and on several threads, and demands the golden payload.
func TestEncoderGolden(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	forEachGoldenFile(t, func(t *testing.T, name string, f *stFile) {
		for _, c := range goldenCases(t, f) {
			src := f.get(t, c.Input).Data
			for _, threads := range []int{1, 3} {
				var out bytes.Buffer
				n := int64(len(src) / 2)
				enc, err := NewEncoder(&out, c.dtype(), n, c.params(), CPU(threads))
				if err != nil {
					t.Fatal(err)
				}
				for rest := src; len(rest) > 0; {
					k := min(len(rest), 1+rng.IntN(3000))
					if _, err := enc.Write(rest[:k]); err != nil {
						t.Fatalf("%v: %v", c, err)
					}
					rest = rest[k:]
				}
				res, err := enc.Close()
				if err != nil {
					t.Fatalf("%v: %v", c, err)
				}
				s := res.Sizes
				got := out.Bytes()
				if int64(len(got)) != s.Total() {
					t.Fatalf("%v: payload %d bytes, want %d", c, len(got), s.Total())
				}
				if !bytes.Equal(got[:s.Packed], f.get(t, c.Key+".packed").Data) {
					t.Errorf("%s: %v: packed differs", name, c)
				}
				if !c.DoubleQuant {
					if !bytes.Equal(got[s.Packed:], f.get(t, c.Key+".absmax").Data) {
						t.Errorf("%s: %v: absmax differs", name, c)
					}
					continue
				}
				checkOffset(t, name, c, res.NestedOffset)
				if !bytes.Equal(got[s.Packed:s.Packed+s.Absmax], f.get(t, c.Key+".absmax").Data) {
					t.Errorf("%s: %v: absmax codes differ", name, c)
				}
				if !bytes.Equal(got[s.Packed+s.Absmax:], f.get(t, c.Key+".nested_absmax").Data) {
					t.Errorf("%s: %v: nested absmax differs", name, c)
				}
			}
		}
	})
}

// TestDequantizeGolden decodes bitsandbytes' own quantized data and demands its
// dequantized values bit for bit.
func TestDequantizeGolden(t *testing.T) {
	forEachGoldenFile(t, func(t *testing.T, name string, f *stFile) {
		for _, c := range goldenCases(t, f) {
			q := &Quantized{Params: c.params(), N: int64(len(f.get(t, c.Input).Data) / 2),
				Packed: f.get(t, c.Key+".packed").Data, Absmax: f.get(t, c.Key+".absmax").Data}
			if c.DoubleQuant {
				q.Nested = f.get(t, c.Key+".nested_absmax").Data
				q.NestedOffset = float32(*c.NestedOffset)
			}
			got, err := q.Dequantize(c.dtype())
			if err != nil {
				t.Fatalf("%v: %v", c, err)
			}
			want := f.get(t, c.Key+".dequant").Data
			if !bytes.Equal(got, want) {
				i := 0
				for i < len(got) && i < len(want) && got[i] == want[i] {
					i++
				}
				t.Errorf("%s: %v: dequant differs at byte %d", name, c, i)
			}
		}
	})
}

// TestTablesMatchGolden checks the exported code books and the nested map.
func TestTablesMatchGolden(t *testing.T) {
	forEachGoldenFile(t, func(t *testing.T, name string, f *stFile) {
		nf4, fp4 := NF4Map, FP4Map
		if !equalBits(nf4[:], f32s(f.get(t, "quant_map.nf4").Data)) {
			t.Errorf("%s: NF4Map differs from quant_map.nf4", name)
		}
		if !equalBits(fp4[:], f32s(f.get(t, "quant_map.fp4").Data)) {
			t.Errorf("%s: FP4Map differs from quant_map.fp4", name)
		}
		nm := NestedMap
		if !equalBits(nm[:], f32s(f.get(t, "nested_quant_map").Data)) {
			t.Errorf("%s: NestedMap differs from nested_quant_map", name)
		}
	})
}

func equalBits(a, b []float32) bool {
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
