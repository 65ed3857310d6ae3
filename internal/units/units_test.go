package units

import (
	"math"
	"testing"
)

func TestBytes(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{812, "812 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{310<<20 + 200<<10, "310.2 MiB"},
		{1<<30 - 1, "1024.0 MiB"},
		{1 << 30, "1.00 GiB"},
		{24 << 30, "24.00 GiB"},
		{21<<30 + 348<<20, "21.34 GiB"},
		{1<<40 + 20<<30, "1.02 TiB"},
		{-(3 << 30), "-3.00 GiB"},
		{math.MaxInt64, "8.00 EiB"},
		{math.MinInt64, "-8.00 EiB"},
	} {
		if got := Bytes(c.n); got != c.want {
			t.Errorf("Bytes(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}

func TestSI(t *testing.T) {
	for _, c := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{999, "999 B"},
		{1000, "1.0 kB"},
		{4000, "4.0 kB"},
		{500e6, "500.0 MB"},
		{2.2e9, "2.2 GB"},
		{3e12, "3.0 TB"},
		{-1500, "-1.5 kB"},
	} {
		if got := SI(c.n); got != c.want {
			t.Errorf("SI(%d) = %q, want %q", c.n, got, c.want)
		}
	}
}
