package gpus

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/nf4pipe/nf4pipe/internal/units"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

func TestParse(t *testing.T) {
	gs, err := Parse("rtx4090x2,24GiB,t4")
	require.NoError(t, err)
	require.Len(t, gs, 4)
	assert.Equal(t, 89, gs[0].CC())
	assert.Equal(t, 1, gs[1].Index)
	assert.Equal(t, 24*GiB, gs[2].TotalBytes)
	assert.False(t, gs[2].KnownCC())
	assert.Equal(t, 75, gs[3].CC())

	gs, err = Parse("rtx4090")
	require.NoError(t, err)
	assert.Len(t, gs, 1)
	b, err := ParseSize("40GB")
	require.NoError(t, err)
	assert.Equal(t, int64(40e9), b)
	for _, bad := range []string{"", "24XB", "t5", "t4x0", "-3GiB"} {
		_, err := Parse(bad)
		assert.ErrorIs(t, err, ErrSpec, "%q", bad)
	}
}

func TestMaxMemory(t *testing.T) {
	gs, err := Parse("a100-80x2")
	require.NoError(t, err)
	require.NoError(t, ApplyMaxMemory(gs, "0:20GiB,1:70GiB"))
	assert.Equal(t, 20*GiB, gs[0].Capacity())
	assert.Equal(t, 70*GiB, gs[1].Capacity())
	for _, bad := range []string{"2:1GiB", "0=1GiB", "0:lots"} {
		assert.ErrorIs(t, ApplyMaxMemory(gs, bad), ErrMaxMem, "%q", bad)
	}
}

// TestMaxMemoryOverTotal: a cap above what a device has is refused, with both
// figures; a device of unknown size takes any cap.
func TestMaxMemoryOverTotal(t *testing.T) {
	gs, err := Parse("24GiB")
	require.NoError(t, err)
	err = ApplyMaxMemory(gs, "0:30GiB")
	require.ErrorIs(t, err, ErrCapOverTotal)
	assert.NotErrorIs(t, err, ErrMaxMem)
	assert.Contains(t, err.Error(), units.Bytes(30*GiB)+" is more than its "+units.Bytes(24*GiB))
	assert.Zero(t, gs[0].CapBytes, "a refused cap is not applied")

	require.NoError(t, ApplyMaxMemory(gs, "0:24GiB"), "a cap equal to the total")
	assert.Equal(t, 24*GiB, gs[0].Capacity())

	unknown := []GPU{{Name: "x"}}
	require.NoError(t, ApplyMaxMemory(unknown, "0:30GiB"))
	assert.Equal(t, 30*GiB, unknown[0].CapBytes)
}

func TestParseNvidiaSMI(t *testing.T) {
	out := "1, NVIDIA H100 80GB HBM3, 81559, 80000, 9.0\n0, Tesla T4, 15360, 15000, 7.5\n"
	gs, err := ParseNvidiaSMI([]byte(out))
	require.NoError(t, err)
	require.Len(t, gs, 2)
	assert.Equal(t, "Tesla T4", gs[0].Name)
	assert.Equal(t, 15360*MiB, gs[0].TotalBytes)
	assert.Equal(t, 90, gs[1].CC())
	_, err = ParseNvidiaSMI([]byte("0, x\n"))
	assert.ErrorIs(t, err, ErrSMIParse, "short line")
	// Old drivers: no compute_cap column, guessed from the name.
	gs, err = ParseNvidiaSMI([]byte("0, NVIDIA A10G, 23028, 22000\n"))
	require.NoError(t, err)
	assert.Equal(t, 86, gs[0].CC())
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
		if !assert.True(t, ok, "no preset %q", name) {
			continue
		}
		// The driver reports at most the marketed size and not much less.
		hi := int64(gb * float64(GiB))
		assert.LessOrEqual(t, p.Bytes, hi, name)
		assert.GreaterOrEqual(t, p.Bytes, hi*90/100, name)
		assert.Less(t, p.Usable(), p.Bytes, name)
		assert.NotEmpty(t, p.Source, name)
		assert.Positive(t, p.Major, name)
		maj, min := GuessCC(p.Full)
		assert.Equal(t, [2]int{p.Major, p.Minor}, [2]int{maj, min}, "%s: GuessCC(%q)", name, p.Full)
	}
}

// TestBareNumberRefused: "--gpus 24" would be 24 bytes; it is refused with a hint.
func TestBareNumberRefused(t *testing.T) {
	for _, spec := range []string{"24", "24x2", "t4,16", "8.5"} {
		_, err := Parse(spec)
		if assert.ErrorIs(t, err, ErrSpec, spec) {
			assert.Contains(t, err.Error(), "GiB", spec)
			assert.Contains(t, err.Error(), "bare number", spec)
		}
	}
	gs, err := Parse("24GiBx2")
	require.NoError(t, err)
	require.Len(t, gs, 2)
	assert.Equal(t, 24*GiB, gs[0].TotalBytes)
}

// TestLocal: the first inventory that answers wins; without any, the last error.
func TestLocal(t *testing.T) {
	fail := func(context.Context) ([]GPU, error) { return nil, ErrNoGPU }
	one := func(context.Context) ([]GPU, error) { return []GPU{{Name: "x", TotalBytes: GiB}}, nil }
	gs, err := Local(context.Background(), fail, one)
	require.NoError(t, err)
	assert.Len(t, gs, 1)
	_, err = Local(context.Background(), fail)
	assert.ErrorIs(t, err, ErrNoGPU)
}

func TestDescribePresets(t *testing.T) {
	d := DescribePresets()
	for _, p := range Presets {
		assert.Contains(t, d, p.Name+" ")
		assert.Contains(t, d, units.Bytes(p.Usable()), p.Name)
	}
	if testing.Verbose() {
		t.Log("\n" + d)
	}
}

// TestPresetReduceGPU: every preset knows its multiprocessors, and the
// geometry quantize --offset-gpu takes from it matches the hardware's.
func TestPresetReduceGPU(t *testing.T) {
	for _, p := range Presets {
		if p.SMs < 1 {
			t.Errorf("%s: no multiprocessor count", p.Name)
		}
		if err := p.ReduceGPU().Validate(); err != nil {
			t.Errorf("%s: %v", p.Name, err)
		}
	}
	for name, want := range map[string]quant.ReduceGPU{
		"h200": quant.DefaultReduceGPU, "h100": quant.DefaultReduceGPU,
		"a100-80": {SMs: 108, ThreadsPerSM: 2048}, "t4": {SMs: 40, ThreadsPerSM: 1024},
		"rtx4090": {SMs: 128, ThreadsPerSM: 1536}, "rtx5090": {SMs: 170, ThreadsPerSM: 1536},
	} {
		p, ok := LookupPreset(name)
		if !ok {
			t.Fatalf("no preset %s", name)
		}
		if got := p.ReduceGPU(); got != want {
			t.Errorf("%s: %+v, want %+v", name, got, want)
		}
	}
}
