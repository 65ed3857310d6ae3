package quantize

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/progress"
	"github.com/nf4pipe/nf4pipe/pkg/quant"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// Sentinel errors; every error Run returns wraps one of these, a quant or a
// tensorstream sentinel, or an error of the input reader.
var (
	// ErrUsage marks options that cannot work: a bad type, block size,
	// pattern, cast type or device.
	ErrUsage = errors.New("quantize: invalid option")
	// ErrUnsupported marks a tensor marked for quantization whose element type
	// bitsandbytes cannot quantize from (FP8, integers, F64).
	ErrUnsupported = errors.New("quantize: cannot quantize")
	// ErrFormat marks a tensor already 4-bit in another format than the one
	// asked for (type, block size, double quantization): a pre-quantized
	// checkpoint passes through only to its own format.
	ErrFormat = fmt.Errorf("%w: already 4-bit in another format", ErrUnsupported)
	// ErrNoData marks a stream of descriptors without payloads, as detect
	// writes from a config.json alone.
	ErrNoData = errors.New("quantize: stream has no tensor data")
	// ErrNoCUDA marks a CUDA device asked of a build without the cuda tag.
	ErrNoCUDA = errors.New("quantize: built without CUDA; rebuild with make cuda")
	// ErrWrite marks a failure to write the output stream.
	ErrWrite = errors.New("quantize: writing the output")
	// ErrRead marks a failure to read the input (not a malformed stream).
	ErrRead = errors.New("quantize: reading the input")
)

// StageName is the name the stage records in the stream header.
const StageName = "quantize"

// Options configure Run. The zero value is not valid: start from
// DefaultOptions.
type Options struct {
	// Params are the quantization settings (type, block size, double quant,
	// whether non-finite weights are accepted).
	Params quant.Params
	// Device is "auto", "cpu" or "cuda[:N[,N...]]"; "" means auto.
	Device string
	// Backends, when set, are used instead of opening Device (tensors go to
	// them in turn); the caller owns them. For a program that quantizes many
	// streams and opens its GPUs once.
	Backends []quant.Backend
	// Threads is the number of CPU goroutines; 0 means all cores.
	Threads int
	// Only and Skip are path.Match globs on tensor names. A name matching Skip
	// is kept; with Only set, exactly the floating tensors of two or more
	// dimensions matching Only are quantized. Skip wins over Only.
	Only, Skip []string
	// Cast converts kept raw F32, F16 and BF16 tensors to this type ("" keeps
	// them as they are); quantized tensors keep their original dtype.
	Cast tensorstream.DType
	// Version and Args are recorded in the header's stage list.
	Version string
	Args    []string
	// Progress, when not nil, is told of every tensor and of the input bytes
	// read, and learns the totals from the header's "model" section; the
	// caller draws it (cmd/quantize: a progress line).
	Progress progress.Meter
	// ChunkSize is the input bytes fed to the encoder at a time; 0 picks a
	// default for the device.
	ChunkSize int
	// LocalOffsetGPU, with Params.ReduceGPU unset in a CUDA build, makes the
	// double-quantization offset follow the reduction order of the first
	// local GPU (where the driver finds one) rather than
	// quant.DefaultReduceGPU's, whatever the device: the bytes do not depend
	// on where the work runs. The driver is asked only when a tensor has
	// enough blocks for the GPU to matter (offsetGPUMatters), in the
	// background as soon as the stream's announcement shows one. The quantize
	// command sets it for --offset-gpu local.
	LocalOffsetGPU bool
	// Warn receives one-line warnings that do not stop the run: a GPU out of
	// device memory hands its work to the CPU (same bytes) and says so once.
	// nil writes them to os.Stderr as "quantize: warning: ...".
	Warn func(msg string)
}

// DefaultOptions are NF4, block size 64, double quantization, device auto, all
// cores: what transformers' load_in_4bit with bnb_4bit_use_double_quant writes.
func DefaultOptions() Options {
	return Options{Params: quant.DefaultParams(), Device: "auto"}
}

// OptionError is an invalid option, wrapping ErrUsage: Option names the
// Options field (Type and BlockSize for Params'), so that a command can name
// its own flag for it.
type OptionError struct {
	Option string // Type, BlockSize, Pattern, Cast, Threads, Device
	Value  string // as given, quoted where it is a string
	Why    string
}

func (e *OptionError) Error() string {
	return fmt.Sprintf("%v: %s %s: %s", ErrUsage, optionWords[e.Option], e.Value, e.Why)
}

func (e *OptionError) Unwrap() error { return ErrUsage }

var optionWords = map[string]string{"Type": "quant type", "BlockSize": "block size", "Pattern": "pattern",
	"Cast": "cast to", "Threads": "threads", "Device": "device"}

func optionError(option, value, why string) error {
	return &OptionError{Option: option, Value: value, Why: why}
}

// Validate checks the options and says what is wrong in *OptionError errors.
func (o *Options) Validate() error {
	if err := o.Params.Validate(); err != nil {
		var pe *quant.ParamError
		if !errors.As(err, &pe) {
			return fmt.Errorf("%w: %v", ErrUsage, err)
		}
		switch pe.Param {
		case "type":
			return optionError("Type", pe.Value, "want "+pe.Want)
		case "blocksize":
			return optionError("BlockSize", pe.Value, fmt.Sprintf("want %s (%d is bitsandbytes' default)", pe.Want, quant.DefaultBlockSize))
		}
		return fmt.Errorf("%w: %v", ErrUsage, err)
	}
	for _, list := range [][]string{o.Only, o.Skip} {
		for _, pat := range list {
			if _, err := path.Match(pat, ""); err != nil {
				return optionError("Pattern", fmt.Sprintf("%q", pat), err.Error())
			}
		}
	}
	switch o.Cast {
	case "", tensorstream.BF16, tensorstream.F16, tensorstream.F32:
	default:
		return optionError("Cast", fmt.Sprintf("%q", strings.ToLower(string(o.Cast))), "want bf16, f16 or f32")
	}
	if o.Threads < 0 {
		return optionError("Threads", fmt.Sprint(o.Threads), "want 0 (all cores) or more")
	}
	if _, err := ParseDevice(o.Device); err != nil {
		return err
	}
	return nil
}

// warnFunc is o.Warn, or a writer of warning lines to os.Stderr that first
// clears the progress line when one is drawn there.
func (o *Options) warnFunc() func(string) {
	if o.Warn != nil {
		return o.Warn
	}
	clear := ""
	if o.Progress != nil {
		clear = "\r\x1b[K"
	}
	return func(msg string) { fmt.Fprintf(os.Stderr, "%squantize: warning: %s\n", clear, msg) }
}

// ParseCast turns a --cast value (bf16, f16, f32, any case; "" for none) into
// a dtype.
func ParseCast(s string) (tensorstream.DType, error) {
	switch strings.ToLower(s) {
	case "":
		return "", nil
	case "bf16", "bfloat16":
		return tensorstream.BF16, nil
	case "f16", "fp16", "float16":
		return tensorstream.F16, nil
	case "f32", "fp32", "float32":
		return tensorstream.F32, nil
	}
	return "", optionError("Cast", fmt.Sprintf("%q", s), "want bf16, f16 or f32")
}

// Device is a parsed --device value.
type Device struct {
	Kind     string // "auto", "cpu" or "cuda"
	Ordinals []int  // for cuda: the listed GPUs; empty means every visible one
}

func (d Device) String() string {
	if d.Kind != "cuda" || len(d.Ordinals) == 0 {
		return d.Kind
	}
	s := make([]string, len(d.Ordinals))
	for i, o := range d.Ordinals {
		s[i] = fmt.Sprint(o)
	}
	return "cuda:" + strings.Join(s, ",")
}

// ParseDevice parses auto, cpu, cuda, cuda:N or cuda:N,M,... (also
// cuda:0,cuda:1).
func ParseDevice(s string) (Device, error) {
	bad := func(why string) (Device, error) {
		return Device{}, optionError("Device", fmt.Sprintf("%q", s), why+" (want auto, cpu, cuda or cuda:N[,N...])")
	}
	switch s {
	case "", "auto":
		return Device{Kind: "auto"}, nil
	case "cpu":
		return Device{Kind: "cpu"}, nil
	case "cuda":
		return Device{Kind: "cuda"}, nil
	}
	rest, ok := strings.CutPrefix(s, "cuda:")
	if !ok {
		return bad("unknown device")
	}
	d := Device{Kind: "cuda"}
	seen := map[int]bool{}
	for _, f := range strings.Split(rest, ",") {
		f = strings.TrimPrefix(strings.TrimSpace(f), "cuda:")
		var n int
		if _, err := fmt.Sscanf(f, "%d", &n); err != nil || fmt.Sprint(n) != f || n < 0 {
			return bad(fmt.Sprintf("%q is not a GPU ordinal", f))
		}
		if seen[n] {
			return bad(fmt.Sprintf("GPU %d listed twice", n))
		}
		seen[n] = true
		d.Ordinals = append(d.Ordinals, n)
	}
	return d, nil
}

// quantizable reports whether bitsandbytes quantizes from dt.
func quantizable(dt tensorstream.DType) bool {
	switch dt {
	case tensorstream.F32, tensorstream.F16, tensorstream.BF16:
		return true
	}
	return false
}

func matchAny(pats []string, name string) (string, bool) {
	for _, p := range pats {
		if ok, _ := path.Match(p, name); ok {
			return p, true
		}
	}
	return "", false
}

// decide says whether t is to be quantized and why, and whether that
// overrides what the stream's "quantize" annotation said.
func (o *Options) decide(t *tensorstream.Tensor) (quantize bool, reason string, override bool) {
	marked := t.AnnBool(tensorstream.AnnQuantize)
	if t.Encoding != tensorstream.Raw {
		return false, "already " + string(t.Encoding), false
	}
	if pat, ok := matchAny(o.Skip, t.Name); ok {
		return false, "kept by --skip " + pat, true
	}
	if len(o.Only) > 0 {
		pat, ok := matchAny(o.Only, t.Name)
		switch {
		case !ok:
			return false, "not matched by --only", true
		case !t.DType.IsFloat() || len(t.Shape) < 2:
			return false, "matched by --only " + pat + " but not a floating tensor of two or more dimensions", true
		}
		return true, "matched by --only " + pat, true
	}
	return marked, "", false
}

// refusal explains why a tensor marked for quantization cannot be.
func refusal(t *tensorstream.Tensor) error {
	what := "bitsandbytes quantizes only F32, F16 and BF16 weights"
	switch {
	case t.DType == tensorstream.F8E4M3 || t.DType == tensorstream.F8E5M2:
		what += "; dequantize the FP8 checkpoint to BF16 first"
	case !t.DType.IsFloat():
		what = "an integer or boolean tensor is not a weight to quantize"
	}
	return fmt.Errorf("%w: tensor %q is %s: %s, or keep it as it is", ErrUnsupported, t.Name, t.DType, what)
}
