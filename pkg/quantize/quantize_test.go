package quantize

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/sections"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// models: every tiny model with a transformers-written 4-bit fixture, those
// in the repository first (they never skip).
var models = append(append([]string(nil), fixtures.RepoModels...), fixtures.SharedModels...)

const quantStateSuffix = ".quant_state.bitsandbytes__nf4"

// checkAgainstReference compares `detect src | quantize` with the checkpoint
// transformers + bitsandbytes wrote in ref: every 4-bit tensor's packed codes,
// absmax codes, nested absmax and nested offset, every other tensor's bytes.
func checkAgainstReference(t *testing.T, src, ref string) {
	t.Helper()
	out, sum := mustRun(t, detectStream(t, src), cpuOptions())
	_, items := readAll(t, out)
	st, err := safetensors.OpenFile(filepath.Join(ref, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	read := func(name string) []byte {
		t.Helper()
		b, err := st.ReadTensor(name)
		if err != nil {
			t.Fatalf("reference %s: %v", name, err)
		}
		return b
	}
	var wantQuantized []string
	for _, e := range st.Tensors {
		if name, ok := strings.CutSuffix(e.Name, quantStateSuffix); ok {
			wantQuantized = append(wantQuantized, name)
		}
	}
	var gotQuantized []string
	for _, it := range items {
		name := it.t.Name
		if it.t.Encoding != tensorstream.BNB4 {
			if !bytes.Equal(it.payload, read(name)) {
				t.Errorf("%s: kept tensor differs from the reference", name)
			}
			continue
		}
		gotQuantized = append(gotQuantized, name)
		q := it.t.Quant
		if q.Type != "nf4" || q.BlockSize != 64 || !q.DoubleQuant || q.NestedBlockSize != 256 {
			t.Errorf("%s: quant state %+v", name, *q)
		}
		want := slices.Concat(read(name), read(name+".absmax"), read(name+".nested_absmax"))
		if !bytes.Equal(it.payload, want) {
			np, _, _ := q.Sections(it.t.NumElements())
			t.Errorf("%s: payload differs from the reference (packed equal: %v)", name, bytes.Equal(it.payload[:np], want[:np]))
		}
		var state struct {
			NestedOffset float64 `json:"nested_offset"`
			Shape        []int64 `json:"shape"`
		}
		if err := json.Unmarshal(read(name+quantStateSuffix), &state); err != nil {
			t.Fatal(err)
		}
		if got, want := q.NestedOffset, float32(state.NestedOffset); math.Float32bits(got) != math.Float32bits(want) {
			t.Errorf("%s: nested offset %v, reference %v", name, got, want)
		}
		if !slices.Equal(it.t.Shape, state.Shape) || it.t.DType != tensorstream.BF16 {
			t.Errorf("%s: %s %v, reference bfloat16 %v", name, it.t.DType, it.t.Shape, state.Shape)
		}
	}
	slices.Sort(wantQuantized)
	slices.Sort(gotQuantized)
	if !slices.Equal(gotQuantized, wantQuantized) {
		t.Errorf("quantized %v\nreference %v", gotQuantized, wantQuantized)
	}
	if sum.Quantized != len(wantQuantized) || sum.Quantized+sum.Kept != len(items) {
		t.Errorf("summary %+v for %d tensors, %d quantized", sum, len(items), len(wantQuantized))
	}
	if bpw := sum.BitsPerWeight(); bpw < 4.12 || bpw > 4.2 {
		t.Errorf("%.4f bits per weight", bpw)
	}
}

// TestRepoLlamaMatchesReference runs on the pair in the repository, always.
func TestRepoLlamaMatchesReference(t *testing.T) {
	checkAgainstReference(t, fixtures.Path(t, "models", "llama"), fixtures.Path(t, "models", "llama-bnb-nf4"))
}

// TestFixturesMatchReference: detect | quantize is byte-identical to the
// transformers-written checkpoint for every tiny model.
func TestFixturesMatchReference(t *testing.T) {
	for _, m := range models {
		t.Run(m, func(t *testing.T) {
			checkAgainstReference(t, fixtures.Model(t, m), fixtures.Model(t, m+"-bnb-nf4"))
		})
	}
}

// TestHeader: the stage is appended, its settings recorded, unknown sections
// and annotations passed on.
func TestHeader(t *testing.T) {
	in := makeStream(t, spec{name: "w", dt: tensorstream.BF16, shape: []int64{4, 64}, quantize: true},
		spec{name: "n", dt: tensorstream.BF16, shape: []int64{64}})
	o := cpuOptions()
	o.Version, o.Args = "9.9", []string{"--blocksize=128"}
	o.Params.BlockSize = 128
	out, _ := mustRun(t, in, o)
	h, items := readAll(t, out)
	if len(h.Stages) != 2 || h.Stages[1].Name != "quantize" || h.Stages[1].Version != "9.9" || !slices.Equal(h.Stages[1].Args, o.Args) {
		t.Errorf("stages %+v", h.Stages)
	}
	var set Settings
	if ok, err := h.Get(tensorstream.SectionQuantize, &set); !ok || err != nil {
		t.Fatalf("quantize section: %v %v", ok, err)
	}
	want := Settings{Type: "nf4", BlockSize: 128, DoubleQuant: true, NestedBlockSize: 256, Device: "cpu"}
	if !equalSettings(set, want) {
		t.Errorf("settings %+v, want %+v", set, want)
	}
	var custom map[string]int
	if ok, err := h.Get("custom", &custom); !ok || err != nil || custom["kept"] != 1 {
		t.Errorf("custom section lost: %v %v %v", ok, err, custom)
	}
	for _, it := range items {
		if it.t.AnnString("custom") != "x" {
			t.Errorf("%s: custom annotation lost", it.t.Name)
		}
	}
	if items[0].t.Encoding != tensorstream.BNB4 || items[0].t.Quant.BlockSize != 128 || items[1].t.Encoding != tensorstream.Raw {
		t.Errorf("encodings %v %v", items[0].t.Encoding, items[1].t.Encoding)
	}
}

func equalSettings(a, b Settings) bool {
	return a.Type == b.Type && a.BlockSize == b.BlockSize && a.DoubleQuant == b.DoubleQuant &&
		a.NestedBlockSize == b.NestedBlockSize && a.Device == b.Device && a.Cast == b.Cast &&
		slices.Equal(a.Only, b.Only) && slices.Equal(a.Skip, b.Skip) && a.AllowNonFinite == b.AllowNonFinite
}

// TestMatchesQuantPackage: every type, block size and dtype, with and without
// double quantization and with odd sizes and chunk sizes that cut blocks and
// elements, gives what pkg/quant gives for the whole tensor at once.
func TestMatchesQuantPackage(t *testing.T) {
	cases := []struct {
		typ   quant.Type
		bs    int
		dq    bool
		dt    tensorstream.DType
		shape []int64
		chunk int
	}{
		{quant.NF4, 64, true, tensorstream.BF16, []int64{96, 130}, 0},
		{quant.NF4, 64, true, tensorstream.BF16, []int64{33, 67}, 1001},
		{quant.NF4, 32, false, tensorstream.F16, []int64{7, 300}, 999},
		{quant.FP4, 128, true, tensorstream.F32, []int64{200, 257}, 4093},
		{quant.FP4, 4096, false, tensorstream.BF16, []int64{3, 5000}, 0},
		{quant.NF4, 2048, true, tensorstream.F32, []int64{1, 1}, 0},
		{quant.NF4, 256, true, tensorstream.F16, []int64{300, 1030}, 65536},
	}
	for _, c := range cases {
		in := makeStream(t, spec{name: "w", dt: c.dt, shape: c.shape, quantize: true})
		_, src := readAll(t, in)
		o := cpuOptions()
		o.Params = quant.Params{Type: c.typ, BlockSize: c.bs, DoubleQuant: c.dq}
		o.ChunkSize = c.chunk
		o.Threads = 2
		out, _ := mustRun(t, in, o)
		_, got := readAll(t, out)
		want, err := quant.Quantize(src[0].payload, quant.DType(c.dt), o.Params, quant.CPU(1))
		if err != nil {
			t.Fatal(err)
		}
		g := got[0]
		if !bytes.Equal(g.payload, slices.Concat(want.Packed, want.Absmax, want.Nested)) {
			t.Errorf("%+v: payload differs from quant.Quantize", c)
		}
		if math.Float32bits(g.t.Quant.NestedOffset) != math.Float32bits(want.NestedOffset) {
			t.Errorf("%+v: nested offset %v, want %v", c, g.t.Quant.NestedOffset, want.NestedOffset)
		}
		if g.t.Size != quant.SizesFor(src[0].t.NumElements(), o.Params).Total() || g.t.DType != c.dt || !slices.Equal(g.t.Shape, c.shape) {
			t.Errorf("%+v: descriptor %+v", c, g.t)
		}
		if c.dq != (g.t.Quant.NestedBlockSize == 256) || g.t.Quant.Type != string(c.typ) || g.t.Quant.BlockSize != c.bs {
			t.Errorf("%+v: quant state %+v", c, *g.t.Quant)
		}
	}
}

func TestOptionErrors(t *testing.T) {
	cases := []struct {
		name string
		edit func(*Options)
	}{
		{"blocksize 48", func(o *Options) { o.Params.BlockSize = 48 }},
		{"blocksize 16", func(o *Options) { o.Params.BlockSize = 16 }},
		{"blocksize 8192", func(o *Options) { o.Params.BlockSize = 8192 }},
		{"type nf5", func(o *Options) { o.Params.Type = "nf5" }},
		{"cast i8", func(o *Options) { o.Cast = tensorstream.I8 }},
		{"device tpu", func(o *Options) { o.Device = "tpu" }},
		{"device cuda:x", func(o *Options) { o.Device = "cuda:x" }},
		{"device cuda:0,0", func(o *Options) { o.Device = "cuda:0,0" }},
		{"device cuda:-1", func(o *Options) { o.Device = "cuda:-1" }},
		{"pattern", func(o *Options) { o.Skip = []string{"[a-"} }},
		{"threads", func(o *Options) { o.Threads = -1 }},
	}
	in := makeStream(t, spec{name: "w", dt: tensorstream.BF16, shape: []int64{2, 64}, quantize: true})
	for _, c := range cases {
		o := cpuOptions()
		c.edit(&o)
		if _, _, err := run(t, in, o); !errors.Is(err, ErrUsage) {
			t.Errorf("%s: %v, want ErrUsage", c.name, err)
		}
	}
	for _, s := range []string{"bf16", "F16", "float32", ""} {
		if _, err := ParseCast(s); err != nil {
			t.Errorf("ParseCast(%q): %v", s, err)
		}
	}
	if _, err := ParseCast("f8"); !errors.Is(err, ErrUsage) {
		t.Errorf("ParseCast(f8): %v", err)
	}
}

func TestParseDevice(t *testing.T) {
	for in, want := range map[string]string{"": "auto", "auto": "auto", "cpu": "cpu", "cuda": "cuda",
		"cuda:1": "cuda:1", "cuda:0,2": "cuda:0,2", "cuda:0,cuda:3": "cuda:0,3"} {
		d, err := ParseDevice(in)
		if err != nil || d.String() != want {
			t.Errorf("ParseDevice(%q) = %v, %v; want %s", in, d, err, want)
		}
	}
}

func TestCUDAWithoutCUDA(t *testing.T) {
	if CUDABuilt {
		t.Skip("built with the cuda tag")
	}
	in := makeStream(t, spec{name: "w", dt: tensorstream.BF16, shape: []int64{2, 64}, quantize: true})
	for _, dev := range []string{"cuda", "cuda:0", "cuda:0,1"} {
		o := cpuOptions()
		o.Device = dev
		if _, _, err := run(t, in, o); !errors.Is(err, ErrNoCUDA) || !strings.Contains(err.Error(), "rebuild with make cuda") {
			t.Errorf("%s: %v", dev, err)
		}
	}
	o := cpuOptions()
	o.Device = "auto"
	if _, sum, err := run(t, in, o); err != nil || sum.Device != "cpu" {
		t.Errorf("auto: %v on %q", err, sum.Device)
	}
}

// TestRefusesUnquantizable: FP8 and integer tensors marked for quantization
// fail with the tensor's name; unmarked they pass through.
func TestRefusesUnquantizable(t *testing.T) {
	for _, dt := range []tensorstream.DType{tensorstream.F8E4M3, tensorstream.F8E5M2, tensorstream.I32, tensorstream.U8, tensorstream.F64} {
		in := makeStream(t, spec{name: "ok", dt: tensorstream.BF16, shape: []int64{2, 64}, quantize: true},
			spec{name: "bad.weight", dt: dt, shape: []int64{4, 64}, quantize: true})
		_, _, err := run(t, in, cpuOptions())
		if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"bad.weight"`) || !strings.Contains(err.Error(), "keep it as it is") || strings.Contains(err.Error(), "--") {
			t.Errorf("%s: %v", dt, err)
		}
		o := cpuOptions()
		o.Skip = []string{"bad.*"}
		out, sum := mustRun(t, in, o)
		_, items := readAll(t, out)
		_, src := readAll(t, in)
		if sum.Quantized != 1 || !bytes.Equal(items[1].payload, src[1].payload) || items[1].t.AnnBool(tensorstream.AnnQuantize) {
			t.Errorf("%s with --skip: %+v", dt, sum)
		}
		if got := items[1].t.AnnString(tensorstream.AnnReason); got != "kept by --skip bad.*" {
			t.Errorf("%s: reason %q", dt, got)
		}
	}
	// --only '*' does not pick integer tensors; FP8 ones are floating and refused.
	in := makeStream(t, spec{name: "ids", dt: tensorstream.I64, shape: []int64{4, 4}})
	o := cpuOptions()
	o.Only = []string{"*"}
	if _, sum := mustRun(t, in, o); sum.Quantized != 0 || sum.Kept != 1 {
		t.Errorf("--only '*' on integers: %+v", sum)
	}
	in = makeStream(t, spec{name: "fp8", dt: tensorstream.F8E4M3, shape: []int64{4, 64}})
	if _, _, err := run(t, in, o); !errors.Is(err, ErrUnsupported) {
		t.Errorf("--only '*' on FP8: %v", err)
	}
}

func TestNonFinite(t *testing.T) {
	for _, dt := range []tensorstream.DType{tensorstream.BF16, tensorstream.F16, tensorstream.F32} {
		for _, bad := range []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1))} {
			const n, at = 4 * 640, 1234
			payload := randomPayload(newRand(), dt, n)
			putF32(payload, dt, at, bad)
			putF32(payload, dt, at+100, bad)
			in := makeStream(t, spec{name: "layer.w", dt: dt, shape: []int64{4, 640}, quantize: true, payload: payload})
			o := cpuOptions()
			o.ChunkSize = 1000 // the bad value is not in the first chunk
			_, _, err := run(t, in, o)
			var nf *quant.NonFiniteError
			if !errors.As(err, &nf) || nf.Index != at || !strings.Contains(err.Error(), `"layer.w"`) {
				t.Errorf("%s %v: %v", dt, bad, err)
			}
			o.Params.AllowNonFinite = true
			out, _ := mustRun(t, in, o)
			_, items := readAll(t, out)
			want, err := quant.Quantize(payload, quant.DType(dt), o.Params, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(items[0].payload, slices.Concat(want.Packed, want.Absmax, want.Nested)) {
				t.Errorf("%s %v: --allow-nonfinite differs from quant.Quantize", dt, bad)
			}
		}
	}
}

func putF32(b []byte, dt tensorstream.DType, i int, v float32) {
	switch dt {
	case tensorstream.F32:
		putU32(b[4*i:], math.Float32bits(v))
	case tensorstream.F16:
		putU16(b[2*i:], f32ToF16(v))
	default:
		putU16(b[2*i:], f32ToBF16(v))
	}
}

// TestOnlyAll: --only '*' quantizes every floating tensor of two or more
// dimensions, embeddings and lm_head included, and keeps the rest.
func TestOnlyAll(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	o := cpuOptions()
	o.Only = []string{"*"}
	out, sum := mustRun(t, in, o)
	_, src := readAll(t, in)
	_, got := readAll(t, out)
	if len(got) != len(src) {
		t.Fatalf("%d tensors out of %d", len(got), len(src))
	}
	for i, it := range got {
		s := src[i].t
		want := s.DType.IsFloat() && len(s.Shape) >= 2
		if (it.t.Encoding == tensorstream.BNB4) != want || it.t.AnnBool(tensorstream.AnnQuantize) != want {
			t.Errorf("%s %v: encoding %s", s.Name, s.Shape, it.t.Encoding)
		}
		if !want && !bytes.Equal(it.payload, src[i].payload) {
			t.Errorf("%s: kept payload changed", s.Name)
		}
	}
	if sum.Quantized <= 14 {
		t.Errorf("--only '*' quantized %d tensors; detect's policy alone quantizes 14", sum.Quantized)
	}
}

// TestSkipAndOnly: --skip keeps what detect marked, --only narrows, and skip
// wins over only.
func TestSkipAndOnly(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	_, src := readAll(t, in)
	cases := []struct {
		only, skip []string
		quantized  func(name string) bool
	}{
		{nil, []string{"*.q_proj.weight"}, func(n string) bool {
			return strings.Contains(n, "_proj.") && !strings.HasSuffix(n, "q_proj.weight")
		}},
		{[]string{"*.mlp.*"}, nil, func(n string) bool { return strings.Contains(n, ".mlp.") }},
		{[]string{"*.mlp.*"}, []string{"model.layers.0.*"}, func(n string) bool {
			return strings.Contains(n, ".mlp.") && !strings.HasPrefix(n, "model.layers.0.")
		}},
	}
	for _, c := range cases {
		o := cpuOptions()
		o.Only, o.Skip = c.only, c.skip
		out, _ := mustRun(t, in, o)
		_, got := readAll(t, out)
		for i, it := range got {
			if (it.t.Encoding == tensorstream.BNB4) != c.quantized(it.t.Name) {
				t.Errorf("only %v skip %v: %s is %s", c.only, c.skip, it.t.Name, it.t.Encoding)
			}
			if it.t.Encoding == tensorstream.Raw && !bytes.Equal(it.payload, src[i].payload) {
				t.Errorf("%s: kept payload changed", it.t.Name)
			}
		}
	}
}

// TestCast: kept float tensors are converted, quantized ones keep their dtype,
// a tensor already of the target type passes through.
func TestCast(t *testing.T) {
	f32 := make([]byte, 4*8)
	vals := []uint32{0x3F800000, 0x3F808000, 0x3F818000, 0x3F808001, 0x7FC00001, 0xFF800000, 0x00000001, 0x477FF000}
	for i, v := range vals {
		putU32(f32[4*i:], v)
	}
	in := makeStream(t,
		spec{name: "w", dt: tensorstream.F32, shape: []int64{4, 64}, quantize: true},
		spec{name: "norm", dt: tensorstream.F32, shape: []int64{8}, payload: f32},
		spec{name: "b", dt: tensorstream.BF16, shape: []int64{8}},
		spec{name: "ids", dt: tensorstream.I32, shape: []int64{8}})
	_, src := readAll(t, in)
	o := cpuOptions()
	o.Cast = tensorstream.BF16
	out, sum := mustRun(t, in, o)
	_, got := readAll(t, out)
	if got[0].t.Encoding != tensorstream.BNB4 || got[0].t.DType != tensorstream.F32 {
		t.Errorf("quantized tensor: %s %s", got[0].t.Encoding, got[0].t.DType)
	}
	wantBF16 := []uint16{0x3F80, 0x3F80, 0x3F82, 0x3F81, 0x7FC0, 0xFF80, 0x0000, 0x4780}
	n := got[1]
	if n.t.DType != tensorstream.BF16 || n.t.Size != 16 || n.t.AnnString("custom") != "x" {
		t.Errorf("cast descriptor %+v", n.t)
	}
	for i, w := range wantBF16 {
		if g := getU16(n.payload[2*i:]); g != w {
			t.Errorf("bf16 of %08x: %04x, want %04x", vals[i], g, w)
		}
	}
	if !bytes.Equal(got[2].payload, src[2].payload) || !bytes.Equal(got[3].payload, src[3].payload) || got[3].t.DType != tensorstream.I32 {
		t.Errorf("bf16 or integer tensor changed by --cast bf16")
	}
	if sum.Cast != 1 || sum.Kept != 3 || sum.Quantized != 1 {
		t.Errorf("summary %+v", sum)
	}
	// To f16 and back to f32 through the stage, with chunks that cut elements.
	o.Cast, o.ChunkSize = tensorstream.F16, 7
	out, _ = mustRun(t, in, o)
	_, got = readAll(t, out)
	wantF16 := []uint16{0x3C00, 0x3C04, 0x3C0C, 0x3C04, 0x7E00, 0xFC00, 0x0000, 0x7C00}
	for i, w := range wantF16 {
		if g := getU16(got[1].payload[2*i:]); g != w {
			t.Errorf("f16 of %08x: %04x, want %04x", vals[i], g, w)
		}
	}
	o.Cast = tensorstream.F32
	out, _ = mustRun(t, in, o)
	_, got = readAll(t, out)
	if got[2].t.DType != tensorstream.F32 || got[2].t.Size != 32 {
		t.Fatalf("bf16 -> f32: %+v", got[2].t)
	}
	for i := range 8 {
		if g, w := getU32(got[2].payload[4*i:]), uint32(getU16(src[2].payload[2*i:]))<<16; g != w {
			t.Errorf("f32 of bf16 %d: %08x, want %08x", i, g, w)
		}
	}
}

// TestHalfConversions checks the f16 conversions on every half: exact
// widening, round trips, and ties to even halfway between neighbours.
func TestHalfConversions(t *testing.T) {
	for h := range 1 << 16 {
		f := quant.F16ToF32(uint16(h))
		if h&0x7C00 == 0x7C00 && h&0x3FF != 0 {
			if !math.IsNaN(float64(f)) || f32ToF16(f) != uint16(h)&0x8000|0x7E00 {
				t.Fatalf("NaN %04x", h)
			}
			continue
		}
		if got := f32ToF16(f); got != uint16(h) {
			t.Fatalf("round trip %04x -> %v -> %04x", h, f, got)
		}
		if h&0x7FFF >= 0x7BFF { // the largest finite and Inf have no upper neighbour here
			continue
		}
		next := quant.F16ToF32(uint16(h + 1))
		if h&0x8000 != 0 {
			continue // mirrored by the positive side
		}
		mid := float32((float64(f) + float64(next)) / 2) // exact: halves have 11 bits
		even := uint16(h)
		if even&1 == 1 {
			even++
		}
		if got := f32ToF16(mid); got != even {
			t.Fatalf("tie between %04x and %04x: %04x", h, h+1, got)
		}
		if got := f32ToF16(math.Nextafter32(mid, 0)); got != uint16(h) {
			t.Fatalf("below the midpoint of %04x: %04x", h, got)
		}
		if got := f32ToF16(math.Nextafter32(mid, 1e9)); got != uint16(h+1) {
			t.Fatalf("above the midpoint of %04x: %04x", h, got)
		}
	}
	if got := f32ToF16(65520); got != 0x7C00 {
		t.Errorf("65520 -> %04x, want Inf", got)
	}
	if got := f32ToF16(0x1p-25); got != 0 {
		t.Errorf("2^-25 -> %04x, want 0 (tie to even)", got)
	}
	if got := f32ToF16(math.Nextafter32(0x1p-25, 1)); got != 1 {
		t.Errorf("just above 2^-25 -> %04x, want 1", got)
	}
}

// TestNoData: a config-only stream is refused with advice.
func TestNoData(t *testing.T) {
	dir := t.TempDir()
	cfg, err := os.ReadFile(fixtures.Path(t, "models", "llama", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), cfg, 0o644); err != nil {
		t.Fatal(err)
	}
	_, _, err = run(t, detectStream(t, filepath.Join(dir, "config.json")), cpuOptions())
	if !errors.Is(err, ErrNoData) || !strings.Contains(err.Error(), "run detect") {
		t.Errorf("config-only stream: %v", err)
	}
}

// TestBadInput: truncation anywhere is io.ErrUnexpectedEOF, a flipped byte a
// checksum or corruption error, never a short success.
func TestBadInput(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	for _, cut := range []int{0, 5, 100, len(in) / 3, len(in) / 2, len(in) - 1} {
		_, _, err := run(t, in[:cut], cpuOptions())
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("cut at %d of %d: %v", cut, len(in), err)
		}
	}
	for _, at := range []int{len(in) / 3, len(in) / 2, len(in) - 40} {
		bad := bytes.Clone(in)
		bad[at] ^= 0x40
		_, _, err := run(t, bad, cpuOptions())
		if !errors.Is(err, tensorstream.ErrChecksum) && !errors.Is(err, tensorstream.ErrCorrupt) {
			t.Errorf("byte %d flipped: %v", at, err)
		}
	}
	if _, _, err := run(t, []byte("not a stream at all"), cpuOptions()); !errors.Is(err, tensorstream.ErrCorrupt) && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("garbage: %v", err)
	}
}

type failingWriter struct{ left int }

var errDiskFull = errors.New("disk full")

func (f *failingWriter) Write(p []byte) (int, error) {
	if len(p) > f.left {
		n := f.left
		f.left = 0
		return n, errDiskFull
	}
	f.left -= len(p)
	return len(p), nil
}

func TestWriteError(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	for _, after := range []int{0, 1000, 100000, 400000} {
		_, err := Run(bytes.NewReader(in), &failingWriter{left: after}, cpuOptions())
		if !errors.Is(err, ErrWrite) || !errors.Is(err, errDiskFull) {
			t.Errorf("writer failing after %d bytes: %v", after, err)
		}
	}
}

func TestSummary(t *testing.T) {
	s := &Summary{Quantized: 2, Kept: 3, Cast: 1, QuantizedElements: 128, QuantizedBytes: 66, BytesIn: 2500000, BytesOut: 700000, Device: "cpu", Seconds: 0.5}
	var b bytes.Buffer
	if err := s.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	if got := b.String(); !strings.Contains(got, "2 tensors quantized, 3 kept (1 cast)") || !strings.Contains(got, "4.125 bits") ||
		!strings.Contains(got, "2.5 MB in, 700.0 kB out") || strings.Count(got, "\n") != 1 {
		t.Errorf("summary %q", got)
	}
	b.Reset()
	if err := s.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b.Bytes(), &m); err != nil || m["bits_per_weight"] != 4.125 || m["quantized"] != 2.0 {
		t.Errorf("json %s: %v", b.String(), err)
	}
}

func TestProgress(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	var p bytes.Buffer
	o := cpuOptions()
	now := time.Unix(0, 0)
	var mu sync.Mutex // the clock is read by the reading goroutine and the work
	prog := cli.NewProgressTo(&p, "quantize", 0, func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(time.Second)
		return now
	})
	o.Progress = prog
	o.ChunkSize = 64
	mustRun(t, in, o)
	// A second passes at every clock read, so every count redraws; the totals
	// come from detect's "model" section.
	got := p.String()
	if !strings.Contains(got, "\rquantize: 0/21 tensors, ") || !strings.Contains(got, "\rquantize: 20/21 tensors, ") ||
		!strings.Contains(got, " (100%), ") || !strings.Contains(got, "model.layers.0.self_attn.q_proj.weight") {
		t.Errorf("progress %q", got)
	}
	prog.Done()
	if !strings.HasSuffix(p.String(), "\r\x1b[K") {
		t.Error("Done did not clear the line")
	}
}

// TestSameFormat: a bnb4 tensor passes through only to its own format.
func TestSameFormat(t *testing.T) {
	bnb := &tensorstream.Tensor{Name: "w", DType: tensorstream.BF16, Shape: []int64{64, 64}, Encoding: tensorstream.BNB4,
		Quant: &tensorstream.QuantState{Type: "nf4", BlockSize: 64, DoubleQuant: true, NestedBlockSize: 256}}
	o := DefaultOptions()
	if err := o.sameFormat(bnb); err != nil {
		t.Errorf("same format: %v", err)
	}
	for _, change := range []func(*Options){
		func(o *Options) { o.Params.Type = "fp4" },
		func(o *Options) { o.Params.BlockSize = 128 },
		func(o *Options) { o.Params.DoubleQuant = false },
	} {
		o := DefaultOptions()
		change(&o)
		if err := o.sameFormat(bnb); !errors.Is(err, ErrFormat) || !errors.Is(err, ErrUnsupported) {
			t.Errorf("%+v: %v, want ErrFormat", o.Params, err)
		}
	}
	raw := &tensorstream.Tensor{Name: "r", DType: tensorstream.BF16, Shape: []int64{4}, Encoding: tensorstream.Raw}
	o.Params.Type = "fp4"
	if err := o.sameFormat(raw); err != nil {
		t.Errorf("raw tensor: %v", err)
	}
}

// TestStoreAnnotation: a kept tensor whose "store" annotation names another
// dtype is written in it (detect marks deepseek_v3's router correction bias
// F32, as transformers saves it), ahead of --cast; a bad one is refused.
func TestStoreAnnotation(t *testing.T) {
	bf16 := make([]byte, 2*4)
	for i, v := range []uint16{0x3F80, 0xBF81, 0x0001, 0x7F80} {
		putU16(bf16[2*i:], v)
	}
	in := makeStream(t,
		spec{name: "bias", dt: tensorstream.BF16, shape: []int64{4}, payload: bf16, store: "F32"},
		spec{name: "norm", dt: tensorstream.BF16, shape: []int64{4}, payload: bf16})
	for _, cast := range []tensorstream.DType{"", tensorstream.F16} {
		o := cpuOptions()
		o.Cast, o.ChunkSize = cast, 3
		out, sum := mustRun(t, in, o)
		_, got := readAll(t, out)
		b := got[0]
		if b.t.DType != tensorstream.F32 || b.t.Size != 16 {
			t.Fatalf("--cast %q: stored %s, %d bytes; want F32, 16", cast, b.t.DType, b.t.Size)
		}
		for i := range 4 {
			if g, w := getU32(b.payload[4*i:]), uint32(getU16(bf16[2*i:]))<<16; g != w {
				t.Errorf("--cast %q: element %d %08x, want %08x", cast, i, g, w)
			}
		}
		wantNorm := tensorstream.BF16
		if cast != "" {
			wantNorm = cast
		}
		if got[1].t.DType != wantNorm || sum.Cast != map[bool]int{true: 1, false: 2}[cast == ""] {
			t.Errorf("--cast %q: norm %s, summary %+v", cast, got[1].t.DType, sum)
		}
	}
	bad := makeStream(t, spec{name: "bias", dt: tensorstream.BF16, shape: []int64{4}, store: "I8"})
	if _, _, err := run(t, bad, cpuOptions()); err == nil || !strings.Contains(err.Error(), `store annotation "I8"`) {
		t.Errorf("store I8: %v", err)
	}
}

// The stage announces the descriptors it will write ("tensors" section):
// each one as it then comes, whatever the options, so that place can put
// every payload in its place. A stream without an announcement gets none.
func TestAnnouncesTensors(t *testing.T) {
	in := detectStream(t, fixtures.Path(t, "models", "llama"))
	h, _ := readAll(t, in)
	if ann, err := sections.GetTensors(h); err != nil || ann == nil || len(ann.Tensors) == 0 {
		t.Fatalf("detect announced nothing: %v", err)
	}
	for _, o := range []func(*Options){
		func(*Options) {},
		func(o *Options) { o.Only = []string{"*.mlp.*"} },
		func(o *Options) { o.Skip = []string{"*.q_proj.weight"}; o.Cast = tensorstream.F32 },
		func(o *Options) { o.Params.DoubleQuant = false; o.Params.Type = "fp4" },
	} {
		opt := cpuOptions()
		o(&opt)
		out, _ := mustRun(t, in, opt)
		h, got := readAll(t, out)
		ann, err := sections.GetTensors(h)
		if err != nil || ann == nil {
			t.Fatalf("no announcement after quantize: %v", err)
		}
		if len(ann.Tensors) != len(got) {
			t.Fatalf("%d tensors announced, %d came", len(ann.Tensors), len(got))
		}
		quantized := 0
		for i, it := range got {
			a, d := ann.Tensors[i], it.t
			if d.Encoding == tensorstream.BNB4 {
				quantized++
			}
			same := a.Name == d.Name && a.DType == d.DType && fmt.Sprint(a.Shape) == fmt.Sprint(d.Shape) &&
				a.Encoding == d.Encoding && a.Size == d.Size && (a.Quant == nil) == (d.Quant == nil)
			if same && a.Quant != nil {
				q, r := *a.Quant, *d.Quant
				q.NestedOffset, r.NestedOffset = 0, 0
				same = q == r
			}
			if !same {
				t.Errorf("announced %+v, came %+v", a, d)
			}
		}
		if quantized == 0 || quantized == len(got) {
			t.Errorf("%d of %d quantized: the case tests nothing", quantized, len(got))
		}
	}
	bare := makeStream(t, spec{name: "w", dt: tensorstream.F32, shape: []int64{4, 64}, quantize: true})
	out, _ := mustRun(t, bare, cpuOptions())
	if h, _ := readAll(t, out); h.Sections[tensorstream.SectionTensors] != nil {
		t.Errorf("an announcement made up for a stream that had none")
	}
}
