package qtype

import (
	"errors"
	"math"
	"testing"
)

func TestLookup(t *testing.T) {
	for _, ty := range Types() {
		got, err := Lookup(ty.Name)
		if err != nil || got != ty {
			t.Errorf("Lookup(%q) = %v, %v", ty.Name, got, err)
		}
	}
	if _, err := Lookup("nf5"); !errors.Is(err, ErrType) {
		t.Errorf("Lookup(nf5): %v, want ErrType", err)
	}
	if Names() != "nf4 or fp4" {
		t.Errorf("Names() = %q", Names())
	}
}

func TestDequantTables(t *testing.T) {
	if NF4.Dequant != NF4.Map {
		t.Error("NF4 dequantizes with another table than its code book")
	}
	for c := range 16 {
		want := FP4.Map[c]
		if c == 8 {
			want = float32(math.Copysign(0, -1))
		}
		if math.Float32bits(FP4.Dequant[c]) != math.Float32bits(want) {
			t.Errorf("FP4 code %d dequantizes with %v, want %v", c, FP4.Dequant[c], want)
		}
	}
}

func TestSizes(t *testing.T) {
	for _, c := range []struct {
		n       int64
		bs, nbs int
		want    Sizes
	}{
		{128 * 256, 64, 256, Sizes{128 * 256, 512, 16384, 512, 8}},
		{128 * 256, 64, 0, Sizes{128 * 256, 512, 16384, 2048, 0}},
		{65, 64, 256, Sizes{65, 2, 33, 2, 4}},
		{0, 64, 256, Sizes{0, 0, 0, 0, 0}},
	} {
		if got := SizesFor(c.n, c.bs, c.nbs); got != c.want {
			t.Errorf("SizesFor(%d, %d, %d) = %+v, want %+v", c.n, c.bs, c.nbs, got, c.want)
		}
	}
}

func TestBlockSizes(t *testing.T) {
	for _, bs := range []int{2, 64, 4096, 1 << 20} {
		if err := CheckBlockSize(bs); err != nil {
			t.Errorf("%d: %v", bs, err)
		}
	}
	for _, bs := range []int{0, 1, 48, 1 << 21, -64} {
		if err := CheckBlockSize(bs); !errors.Is(err, ErrBlockSize) {
			t.Errorf("%d: %v, want ErrBlockSize", bs, err)
		}
	}
}
