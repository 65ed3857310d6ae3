package dtype

import "testing"

func TestTable(t *testing.T) {
	for _, c := range []struct {
		d     DType
		size  int
		bits  int
		float bool
	}{
		{BF16, 2, 16, true}, {F32, 4, 32, true}, {F8E4M3, 1, 8, true}, {U8, 1, 8, false},
		{Bool, 1, 8, false}, {I64, 8, 64, false}, {F4, 0, 4, true}, {C64, 8, 64, false}, {"F128", 0, 0, false},
	} {
		if c.d.Size() != c.size || c.d.Bits() != c.bits || c.d.IsFloat() != c.float || c.d.Valid() != (c.bits > 0) {
			t.Errorf("%s: size %d bits %d float %v valid %v", c.d, c.d.Size(), c.d.Bits(), c.d.IsFloat(), c.d.Valid())
		}
	}
	for _, d := range []DType{BF16, F16, F32} {
		if got, ok := FromTorch(d.TorchName()); !ok || got != d {
			t.Errorf("FromTorch(%q) = %s, %v", d.TorchName(), got, ok)
		}
	}
	if d, ok := FromTorch("half"); !ok || d != F16 {
		t.Errorf(`FromTorch("half") = %s, %v`, d, ok)
	}
	if _, ok := FromTorch(""); ok {
		t.Error(`FromTorch("") found a type`)
	}
}
