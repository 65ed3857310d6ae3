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
)

// Sentinel errors; callers test them with errors.Is.
var (
	ErrSpec     = errors.New("gpus: bad GPU specification")
	ErrSize     = errors.New("gpus: bad memory size")
	ErrNoGPU    = errors.New("gpus: no GPU found")
	ErrMaxMem   = errors.New("gpus: bad memory cap")
	ErrSMIParse = errors.New("gpus: cannot parse nvidia-smi output")
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

// Preset is a GPU model's datasheet memory and compute capability.
type Preset struct {
	Name  string
	Full  string
	Bytes int64
	Major int
	Minor int
}

// Presets are from the vendors' datasheets. Memory is the datasheet figure
// read as GiB, which is how GPU memory is marketed; the driver reports a little
// less (ECC and firmware reservations), and H200's "141 GB" is 141e9 bytes.
var Presets = []Preset{
	{"t4", "Tesla T4 16GB", 16 * GiB, 7, 5},
	{"v100", "Tesla V100 16GB", 16 * GiB, 7, 0},
	{"v100-32", "Tesla V100 32GB", 32 * GiB, 7, 0},
	{"a10g", "NVIDIA A10G 24GB", 24 * GiB, 8, 6},
	{"l4", "NVIDIA L4 24GB", 24 * GiB, 8, 9},
	{"rtx3090", "GeForce RTX 3090 24GB", 24 * GiB, 8, 6},
	{"rtx4090", "GeForce RTX 4090 24GB", 24 * GiB, 8, 9},
	{"a100-40", "A100 40GB", 40 * GiB, 8, 0},
	{"a100-80", "A100 80GB", 80 * GiB, 8, 0},
	{"h100", "H100 80GB", 80 * GiB, 9, 0},
	{"h200", "H200 141GB", 141_000_000_000, 9, 0},
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

// single reads one device: a preset name or a size.
func single(s string) (GPU, bool) {
	if p, ok := LookupPreset(s); ok {
		return GPU{Name: p.Full, TotalBytes: p.Bytes, Major: p.Major, Minor: p.Minor, Source: "preset"}, true
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

// ApplyMaxMemory applies a --max-memory value ("0:20GiB,1:24GiB") to gs.
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
		{"l40", 8, 9}, {"l4", 8, 9}, {"4090", 8, 9}, {"4080", 8, 9}, {"3090", 8, 6}, {"3080", 8, 6},
		{"t4", 7, 5}, {"2080", 7, 5}, {"v100", 7, 0}, {"p100", 6, 0},
	}
	for _, e := range table {
		if strings.Contains(n, e.key) {
			return e.major, e.minor
		}
	}
	return 0, 0
}
