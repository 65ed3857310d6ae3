package gpus

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/units"
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

// TestPresets: the cards people train on are there, each with a plausible
// usable memory and a source for its figure.
func TestPresets(t *testing.T) {
	want := map[string]float64{ // marketed GB
		"rtx3060": 12, "rtx3070": 8, "rtx3080": 10, "rtx4060": 8, "rtx4060ti": 16, "rtx4070": 12,
		"rtx4080": 16, "rtx4090": 24, "rtx5090": 32, "a4000": 16, "a5000": 24, "a6000": 48, "l4": 24,
		"l40s": 48, "a10g": 24, "t4": 16, "v100": 16, "a100-40": 40, "a100-80": 80, "h100": 80, "h200": 141,
	}
	for name, gb := range want {
		p, ok := LookupPreset(name)
		if !ok {
			t.Errorf("no preset %q", name)
			continue
		}
		// The driver reports at most the marketed size and not much less.
		hi := int64(gb * float64(GiB))
		if p.Bytes > hi || p.Bytes < hi*90/100 || p.Usable() >= p.Bytes || p.Source == "" || !(p.Major > 0) {
			t.Errorf("%s: %d bytes (usable %d), cc %d.%d, source %q; marketed %g GB", name, p.Bytes, p.Usable(), p.Major, p.Minor, p.Source, gb)
		}
		if maj, min := GuessCC(p.Full); maj != p.Major || min != p.Minor {
			t.Errorf("%s: GuessCC(%q) = %d.%d, preset %d.%d", name, p.Full, maj, min, p.Major, p.Minor)
		}
	}
}

// TestBareNumberRefused: "--gpus 24" would be 24 bytes; it is refused with a hint.
func TestBareNumberRefused(t *testing.T) {
	for _, spec := range []string{"24", "24x2", "t4,16", "8.5"} {
		_, err := Parse(spec)
		if !errors.Is(err, ErrSpec) || !strings.Contains(err.Error(), "GiB") || !strings.Contains(err.Error(), "bare number") {
			t.Errorf("%q: %v, want ErrSpec with a unit hint", spec, err)
		}
	}
	if gs, err := Parse("24GiBx2"); err != nil || len(gs) != 2 || gs[0].TotalBytes != 24*GiB {
		t.Errorf("24GiBx2: %+v %v", gs, err)
	}
}

// TestLocal: the first inventory that answers wins; without any, the last error.
func TestLocal(t *testing.T) {
	fail := func(context.Context) ([]GPU, error) { return nil, ErrNoGPU }
	one := func(context.Context) ([]GPU, error) { return []GPU{{Name: "x", TotalBytes: GiB}}, nil }
	if gs, err := Local(context.Background(), fail, one); err != nil || len(gs) != 1 {
		t.Errorf("%+v %v", gs, err)
	}
	if _, err := Local(context.Background(), fail); !errors.Is(err, ErrNoGPU) {
		t.Errorf("%v, want ErrNoGPU", err)
	}
}

func TestDescribePresets(t *testing.T) {
	d := DescribePresets()
	for _, p := range Presets {
		if !strings.Contains(d, p.Name+" ") || !strings.Contains(d, units.Bytes(p.Usable())) {
			t.Errorf("%s missing from:\n%s", p.Name, d)
		}
	}
	if testing.Verbose() {
		t.Log("\n" + d)
	}
}
