package gpus

import (
	"errors"
	"testing"
)

func TestParse(t *testing.T) {
	gs, err := Parse("rtx4090x2,24GiB,t4")
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 4 || gs[0].CC() != 89 || gs[1].Index != 1 || gs[2].TotalBytes != 24*GiB || gs[2].KnownCC() || gs[3].CC() != 75 {
		t.Errorf("%+v", gs)
	}
	if gs, err := Parse("rtx4090"); err != nil || len(gs) != 1 {
		t.Errorf("rtx4090: %v %v", gs, err)
	}
	if b, err := ParseSize("40GB"); err != nil || b != 40e9 {
		t.Errorf("40GB = %d %v", b, err)
	}
	for _, bad := range []string{"", "24XB", "t5", "t4x0", "-3GiB"} {
		if _, err := Parse(bad); !errors.Is(err, ErrSpec) {
			t.Errorf("%q: %v, want ErrSpec", bad, err)
		}
	}
}

func TestMaxMemory(t *testing.T) {
	gs, _ := Parse("a100-80x2")
	if err := ApplyMaxMemory(gs, "0:20GiB,1:70GiB"); err != nil {
		t.Fatal(err)
	}
	if gs[0].Capacity() != 20*GiB || gs[1].Capacity() != 70*GiB {
		t.Errorf("%+v", gs)
	}
	for _, bad := range []string{"2:1GiB", "0=1GiB", "0:lots"} {
		if err := ApplyMaxMemory(gs, bad); !errors.Is(err, ErrMaxMem) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func TestParseNvidiaSMI(t *testing.T) {
	out := "1, NVIDIA H100 80GB HBM3, 81559, 80000, 9.0\n0, Tesla T4, 15360, 15000, 7.5\n"
	gs, err := ParseNvidiaSMI([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(gs) != 2 || gs[0].Name != "Tesla T4" || gs[0].TotalBytes != 15360*MiB || gs[1].CC() != 90 {
		t.Errorf("%+v", gs)
	}
	if _, err := ParseNvidiaSMI([]byte("0, x\n")); !errors.Is(err, ErrSMIParse) {
		t.Errorf("short line: %v", err)
	}
	// Old drivers: no compute_cap column, guessed from the name.
	gs, err = ParseNvidiaSMI([]byte("0, NVIDIA A10G, 23028, 22000\n"))
	if err != nil || gs[0].CC() != 86 {
		t.Errorf("%+v %v", gs, err)
	}
}
