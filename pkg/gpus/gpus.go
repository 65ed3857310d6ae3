// Package gpus describes the GPUs a plan is made for: what the driver or
// nvidia-smi reports, or what the user names on the command line (sizes or
// datasheet presets), with optional per-device memory caps.
package gpus

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"sort"
	"strconv"
	"strings"

	"github.com/nf4pipe/nf4pipe/internal/units"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
)

// Sentinel errors; callers test them with errors.Is.
var (
	ErrSpec   = errors.New("gpus: bad GPU specification")
	ErrSize   = errors.New("gpus: bad memory size")
	ErrNoGPU  = errors.New("gpus: no GPU found")
	ErrMaxMem = errors.New("gpus: bad memory cap")
	// ErrCapOverTotal: a cap above the memory the device has, which would
	// let a plan count memory that is not there.
	ErrCapOverTotal = errors.New("gpus: cap above the device's memory")
	ErrSMIParse     = errors.New("gpus: cannot parse nvidia-smi output")
)

const (
	KiB = int64(1) << 10
	MiB = int64(1) << 20
	GiB = int64(1) << 30
)

// GPU is one device as the planner sees it.
type GPU struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// TotalBytes is the device memory as reported (driver, nvidia-smi) or given.
	TotalBytes int64 `json:"total_bytes"`
	// FreeBytes is what was free when the inventory was taken; 0 when unknown.
	FreeBytes int64 `json:"free_bytes,omitempty"`
	// CapBytes is a --max-memory cap; 0 means none.
	CapBytes int64 `json:"cap_bytes,omitempty"`
	// Major and Minor are the CUDA compute capability; 0.0 when unknown.
	Major int `json:"cc_major"`
	Minor int `json:"cc_minor"`
	// Source says where the figures came from: "cuda", "nvidia-smi", "preset", "size".
	Source string `json:"source"`
}

// Capacity is the memory the plan may use on this device: the cap when one is
// given, else the total. Free memory is reported, not used, because a training
// run normally owns the device.
func (g GPU) Capacity() int64 {
	if g.CapBytes > 0 && g.CapBytes < g.TotalBytes {
		return g.CapBytes
	}
	return g.TotalBytes
}

// CC returns the compute capability as major*10+minor (75 for 7.5); 0 when unknown.
func (g GPU) CC() int { return g.Major*10 + g.Minor }

// KnownCC reports whether the compute capability is known.
func (g GPU) KnownCC() bool { return g.Major > 0 }

// Inventory lists the GPUs of this machine. The CUDA build supplies one backed
// by the driver; NvidiaSMI is the portable one.
type Inventory func(ctx context.Context) ([]GPU, error)

// Preset is a GPU model's memory and compute capability.
type Preset struct {
	Name  string
	Full  string
	Bytes int64 // what the driver reports as total (nvidia-smi memory.total)
	Major int
	Minor int
	// Source says where Bytes comes from.
	Source string
	// SMs is the card's number of multiprocessors (NVIDIA's specifications;
	// the H100 is the SXM5 card), which torch's reductions depend on.
	SMs int
}

// ThreadsPerSM is the most resident threads per multiprocessor of the
// card's compute capability (CUDA's compute-capability tables).
func (p Preset) ThreadsPerSM() int {
	switch {
	case p.Major == 7 && p.Minor == 5:
		return 1024
	case p.Major == 8 && p.Minor > 0, p.Major == 12:
		return 1536
	}
	return 2048
}

// ReduceGPU is the geometry torch's CUDA reductions, and so bitsandbytes'
// double-quantization offset, take on this card (quant.ReduceGPU).
func (p Preset) ReduceGPU() quant.ReduceGPU {
	return quant.ReduceGPU{SMs: p.SMs, ThreadsPerSM: p.ThreadsPerSM()}
}

// ContextBytes is what the CUDA context (driver, kernels, cuBLAS and
// bitsandbytes loaded) takes on each device outside torch's allocator; the
// planner counts it in every device's total. Usable is Bytes minus it.
const ContextBytes = 500 * MiB

// Usable is the memory torch's allocator can have on the device: the total
// the driver reports minus the CUDA context.
func (p Preset) Usable() int64 { return p.Bytes - ContextBytes }

const (
	srcMeasured = "nvidia-smi memory.total on the device machine (docs/BENCHMARKS.md)"
	srcSMI      = "nvidia-smi memory.total as commonly reported for this card (ECC on where clouds ship it on), not measured here"
)

// Presets are the cards people train on. Bytes is the device total the
// driver reports, which is below the marketed figure (ECC and firmware
// reservations); a desktop card that also drives a display has a few
// hundred MiB less: cap it with --max-memory.
var Presets = []Preset{
	{"rtx3060", "GeForce RTX 3060 12GB", 12288 * MiB, 8, 6, srcSMI, 28},
	{"rtx3070", "GeForce RTX 3070 8GB", 8192 * MiB, 8, 6, srcSMI, 46},
	{"rtx3080", "GeForce RTX 3080 10GB", 10240 * MiB, 8, 6, srcSMI, 68},
	{"rtx3090", "GeForce RTX 3090 24GB", 24576 * MiB, 8, 6, srcSMI, 82},
	{"rtx4060", "GeForce RTX 4060 8GB", 8188 * MiB, 8, 9, srcSMI, 24},
	{"rtx4060ti", "GeForce RTX 4060 Ti 16GB", 16380 * MiB, 8, 9, srcSMI, 34},
	{"rtx4070", "GeForce RTX 4070 12GB", 12282 * MiB, 8, 9, srcSMI, 46},
	{"rtx4080", "GeForce RTX 4080 16GB", 16376 * MiB, 8, 9, srcSMI, 76},
	{"rtx4090", "GeForce RTX 4090 24GB", 24564 * MiB, 8, 9, srcSMI, 128},
	{"rtx5090", "GeForce RTX 5090 32GB", 32607 * MiB, 12, 0, srcSMI, 170},
	{"a4000", "RTX A4000 16GB", 16376 * MiB, 8, 6, srcSMI, 48},
	{"a5000", "RTX A5000 24GB", 24564 * MiB, 8, 6, srcSMI, 64},
	{"a6000", "RTX A6000 48GB", 49140 * MiB, 8, 6, srcSMI, 84},
	{"l4", "NVIDIA L4 24GB", 23034 * MiB, 8, 9, srcSMI, 58},
	{"l40s", "NVIDIA L40S 48GB", 46068 * MiB, 8, 9, srcSMI, 142},
	{"a10g", "NVIDIA A10G 24GB", 23028 * MiB, 8, 6, srcSMI, 80},
	{"t4", "Tesla T4 16GB", 15360 * MiB, 7, 5, srcSMI, 40},
	{"v100", "Tesla V100 16GB", 16160 * MiB, 7, 0, srcSMI, 80},
	{"v100-32", "Tesla V100 32GB", 32510 * MiB, 7, 0, srcSMI, 80},
	{"a100-40", "A100 40GB", 40960 * MiB, 8, 0, srcSMI, 108},
	{"a100-80", "A100 80GB", 81920 * MiB, 8, 0, srcSMI, 108},
	{"h100", "H100 80GB", 81559 * MiB, 9, 0, srcSMI, 132},
	{"h200", "H200 141GB", 143771 * MiB, 9, 0, srcMeasured, 132},
}

// LookupPreset finds a preset by name, case-insensitively.
func LookupPreset(name string) (Preset, bool) {
	name = strings.ToLower(strings.TrimSpace(name))
	for _, p := range Presets {
		if p.Name == name {
			return p, true
		}
	}
	return Preset{}, false
}

// PresetNames lists the preset names, for help texts and errors.
func PresetNames() []string {
	out := make([]string, len(Presets))
	for i, p := range Presets {
		out[i] = p.Name
	}
	return out
}

// Parse reads a --gpus value: a comma-separated list whose items are a size
// ("24GiB", "16000MiB", "40GB"), a preset ("t4", "a100-80"), either followed
// by xN for N such devices ("rtx4090x2", "24GiBx4").
func Parse(spec string) ([]GPU, error) {
	var out []GPU
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		count := 1
		base := item
		if _, whole := single(item); !whole {
			if i := strings.LastIndexAny(item, "xX"); i > 0 && i < len(item)-1 {
				if n, err := strconv.Atoi(item[i+1:]); err == nil {
					if n < 1 || n > 64 {
						return nil, fmt.Errorf("%w: %q: count must be 1..64", ErrSpec, item)
					}
					count, base = n, item[:i]
				}
			}
		}
		g, ok := single(base)
		if !ok && bare(base) {
			return nil, fmt.Errorf("%w: %q is a bare number: give a unit (%sGiB, %sGB) or a preset (%s)", ErrSpec, item, base, base, strings.Join(PresetNames(), ", "))
		}
		if !ok {
			return nil, fmt.Errorf("%w: %q is neither a size nor a preset (%s)", ErrSpec, item, strings.Join(PresetNames(), ", "))
		}
		for k := 0; k < count; k++ {
			g.Index = len(out)
			out = append(out, g)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q lists no GPU", ErrSpec, spec)
	}
	return out, nil
}

// bare reports whether s is a number without a unit.
func bare(s string) bool {
	_, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	return err == nil
}

// single reads one device: a preset name or a size with a unit (a bare
// number is refused: "24" would be 24 bytes).
func single(s string) (GPU, bool) {
	if p, ok := LookupPreset(s); ok {
		return GPU{Name: p.Full, TotalBytes: p.Bytes, Major: p.Major, Minor: p.Minor, Source: "preset"}, true
	}
	if bare(s) {
		return GPU{}, false
	}
	b, err := ParseSize(s)
	if err != nil {
		return GPU{}, false
	}
	return GPU{Name: "GPU " + units.Bytes(b), TotalBytes: b, Source: "size"}, true
}

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"tib", 1 << 40}, {"gib", GiB}, {"mib", MiB}, {"kib", KiB},
	{"tb", 1e12}, {"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3},
	{"t", 1 << 40}, {"g", GiB}, {"m", MiB}, {"k", KiB}, {"b", 1},
}

// ParseSize reads a memory size: a number with a unit, binary (KiB, MiB, GiB,
// TiB, or the bare letters K, M, G, T) or decimal (KB, MB, GB, TB), as
// accelerate reads max_memory. A bare number is bytes.
func ParseSize(s string) (int64, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			mult, t = u.mult, strings.TrimSpace(strings.TrimSuffix(t, u.suffix))
			break
		}
	}
	v, err := strconv.ParseFloat(t, 64)
	if err != nil || v <= 0 || v*float64(mult) > 1<<50 {
		return 0, fmt.Errorf("%w: %q", ErrSize, s)
	}
	return int64(v * float64(mult)), nil
}

// ApplyMaxMemory applies per-device caps ("0:20GiB,1:24GiB", as accelerate's
// max_memory) to gs. A malformed entry wraps ErrMaxMem; a cap above a device's
// known total wraps ErrCapOverTotal.
func ApplyMaxMemory(gs []GPU, spec string) error {
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		idx, size, ok := strings.Cut(item, ":")
		if !ok {
			return fmt.Errorf("%w: %q: want INDEX:SIZE", ErrMaxMem, item)
		}
		i, err := strconv.Atoi(strings.TrimPrefix(strings.TrimSpace(idx), "cuda"))
		if err != nil || i < 0 || i >= len(gs) {
			return fmt.Errorf("%w: %q: no device %s among %d", ErrMaxMem, item, idx, len(gs))
		}
		b, err := ParseSize(size)
		if err != nil {
			return fmt.Errorf("%w: %q: %w", ErrMaxMem, item, err)
		}
		if total := gs[i].TotalBytes; total > 0 && b > total {
			return fmt.Errorf("%w: device %d: %s is more than its %s", ErrCapOverTotal, i, units.Bytes(b), units.Bytes(total))
		}
		gs[i].CapBytes = b
	}
	return nil
}

// NvidiaSMI is the Inventory that asks nvidia-smi. It returns ErrNoGPU when
// nvidia-smi is not on the PATH or lists nothing.
func NvidiaSMI(ctx context.Context) ([]GPU, error) {
	path, err := exec.LookPath("nvidia-smi")
	if err != nil {
		return nil, fmt.Errorf("%w: nvidia-smi not on PATH", ErrNoGPU)
	}
	out, err := exec.CommandContext(ctx, path,
		"--query-gpu=index,name,memory.total,memory.free,compute_cap",
		"--format=csv,noheader,nounits").Output()
	if err != nil {
		// Drivers before 510 lack compute_cap; ask again without it.
		out, err = exec.CommandContext(ctx, path,
			"--query-gpu=index,name,memory.total,memory.free",
			"--format=csv,noheader,nounits").Output()
		if err != nil {
			return nil, fmt.Errorf("%w: nvidia-smi: %w", ErrNoGPU, err)
		}
	}
	gs, err := ParseNvidiaSMI(out)
	if err != nil {
		return nil, err
	}
	if len(gs) == 0 {
		return nil, fmt.Errorf("%w: nvidia-smi lists no device", ErrNoGPU)
	}
	return gs, nil
}

// ParseNvidiaSMI reads the CSV that NvidiaSMI asks for (memory in MiB).
func ParseNvidiaSMI(out []byte) ([]GPU, error) {
	var gs []GPU
	sc := bufio.NewScanner(bytes.NewReader(out))
	for line := 1; sc.Scan(); line++ {
		text := strings.TrimSpace(sc.Text())
		if text == "" {
			continue
		}
		f := strings.Split(text, ",")
		for i := range f {
			f[i] = strings.TrimSpace(f[i])
		}
		if len(f) < 4 {
			return nil, fmt.Errorf("%w: line %d: %q", ErrSMIParse, line, text)
		}
		idx, err1 := strconv.Atoi(f[0])
		total, err2 := strconv.ParseInt(f[2], 10, 64)
		free, err3 := strconv.ParseInt(f[3], 10, 64)
		if err := errors.Join(err1, err2, err3); err != nil {
			return nil, fmt.Errorf("%w: line %d: %w", ErrSMIParse, line, err)
		}
		g := GPU{Index: idx, Name: f[1], TotalBytes: total * MiB, FreeBytes: free * MiB, Source: "nvidia-smi"}
		if len(f) >= 5 {
			if maj, min, ok := strings.Cut(f[4], "."); ok {
				g.Major, _ = strconv.Atoi(maj)
				g.Minor, _ = strconv.Atoi(min)
			}
		}
		if !g.KnownCC() {
			g.Major, g.Minor = GuessCC(g.Name)
		}
		gs = append(gs, g)
	}
	sort.Slice(gs, func(i, j int) bool { return gs[i].Index < gs[j].Index })
	return gs, nil
}

// GuessCC infers a compute capability from a marketing name, for inventories
// that do not report it. It returns 0, 0 when the name is not recognized.
func GuessCC(name string) (major, minor int) {
	n := strings.ToLower(name)
	table := []struct {
		key          string
		major, minor int
	}{
		{"h200", 9, 0}, {"h100", 9, 0}, {"gh200", 9, 0}, {"b200", 10, 0},
		{"a100", 8, 0}, {"a30", 8, 0}, {"a10", 8, 6}, {"a40", 8, 6}, {"a6000", 8, 6},
		{"l40", 8, 9}, {"l4", 8, 9}, {"5090", 12, 0}, {"5080", 12, 0},
		{"4090", 8, 9}, {"4080", 8, 9}, {"4070", 8, 9}, {"4060", 8, 9},
		{"3090", 8, 6}, {"3080", 8, 6}, {"3070", 8, 6}, {"3060", 8, 6}, {"a4000", 8, 6}, {"a5000", 8, 6},
		{"t4", 7, 5}, {"2080", 7, 5}, {"v100", 7, 0}, {"p100", 6, 0},
	}
	for _, e := range table {
		if strings.Contains(n, e.key) {
			return e.major, e.minor
		}
	}
	return 0, 0
}

// DescribePresets is a table of the presets: name, card, the driver's total,
// what is usable after the CUDA context, compute capability, and where the
// total comes from.
func DescribePresets() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-10s %-26s %10s %10s %4s  %s\n", "preset", "card", "total", "usable", "cc", "source of the total")
	for _, p := range Presets {
		fmt.Fprintf(&b, "%-10s %-26s %10s %10s %d.%d  %s\n", p.Name, p.Full, units.Bytes(p.Bytes), units.Bytes(p.Usable()), p.Major, p.Minor, p.Source)
	}
	return b.String()
}
