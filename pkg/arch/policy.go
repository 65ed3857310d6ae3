package arch

import (
	"errors"
	"fmt"
	"path"
	"strings"
)

// ErrPattern: a --skip or --only pattern that is not a valid glob.
var ErrPattern = errors.New("arch: bad name pattern")

// Policy decides which tensors are quantized. The zero Policy is the default:
// exactly what transformers 5 with bitsandbytes load_in_4bit quantizes.
type Policy struct {
	QuantizeExperts bool     // also quantize MoE expert matrices
	Skip            []string // globs (path.Match) on tensor names to keep
	Only            []string // when set, only names matching one of these are quantized
}

// Validate checks the patterns.
func (p Policy) Validate() error {
	for _, pat := range append(append([]string(nil), p.Skip...), p.Only...) {
		if _, err := path.Match(pat, ""); err != nil {
			return fmt.Errorf("%w: %q: %v", ErrPattern, pat, err)
		}
	}
	return nil
}

func matchAny(pats []string, name string) (string, bool) {
	for _, p := range pats {
		if ok, _ := path.Match(p, name); ok {
			return p, true
		}
	}
	return "", false
}

// floatSource reports whether bitsandbytes can quantize from this dtype.
func floatSource(dtype string) bool {
	switch dtype {
	case "BF16", "F16", "F32":
		return true
	}
	return false
}

// Decide returns whether the policy quantizes a tensor, and why.
func (p Policy) Decide(name, dtype string, shape []int64, c Class) (bool, string) {
	switch {
	case c.Role == RoleScale:
		return false, "FP8 block scale, not a weight"
	case dtype == "F8_E4M3" || dtype == "F8_E5M2":
		return false, "FP8 source weight: bitsandbytes quantizes only from 16/32-bit floats; dequantize the checkpoint first"
	case !floatSource(dtype):
		return false, "not a floating-point tensor (" + dtype + ")"
	}
	if pat, ok := matchAny(p.Skip, name); ok {
		return false, "skipped by --skip " + pat
	}
	if len(p.Only) > 0 {
		if _, ok := matchAny(p.Only, name); !ok {
			return false, "not matched by --only"
		}
	}
	switch c.Role {
	case RoleLMHead:
		return false, "lm_head stays 16-bit: transformers keeps the output layer out of bitsandbytes"
	case RoleExpert:
		if p.QuantizeExperts && len(shape) >= 2 {
			return true, "MoE expert matrix (--quantize-experts)"
		}
		return false, "MoE expert stays 16-bit: transformers 5 fuses experts into parameters bitsandbytes does not convert"
	case RoleEmbedding:
		return false, "embedding stays 16-bit"
	case RoleNorm:
		return false, "norm stays 16-bit"
	case RoleBias:
		return false, "bias stays 16-bit"
	}
	if c.Linear {
		if why, ok := keptLinear(name); ok {
			return false, why
		}
		if c.Role == RoleVision {
			return true, "vision tower nn.Linear weight"
		}
		return true, "nn.Linear weight"
	}
	switch c.Role {
	case RoleRouter:
		return false, "MoE router is a parameter, not an nn.Linear, in transformers 5"
	case RoleVision:
		return false, "vision tower tensor that is not an nn.Linear weight (conv, position embedding, norm, bias)"
	case RoleProjector:
		return false, "projector tensor that is not an nn.Linear weight"
	}
	return false, "not an nn.Linear weight"
}

// keptLinears are nn.Linear weights that transformers nevertheless leaves
// out of bitsandbytes, matched by name suffix, each with the reason given.
var keptLinears = []struct{ suffix, why string }{
	// SigLIP's attention-pooling head (gemma3's vision tower with
	// vision_use_head) holds a torch.nn.MultiheadAttention, which reads
	// out_proj.weight itself instead of calling the Linear; transformers 5.17
	// leaves that one 16-bit (testdata/models/gemma3-bnb-nf4).
	{".head.attention.out_proj.weight", "out_proj of torch.nn.MultiheadAttention (SigLIP pooling head): transformers keeps it 16-bit"},
}

func keptLinear(name string) (string, bool) {
	for _, k := range keptLinears {
		if strings.HasSuffix(name, k.suffix) {
			return k.why, true
		}
	}
	return "", false
}

// Tensor is a tensor descriptor with its class and policy decision.
type Tensor struct {
	Desc
	Class
	Quantize bool
	Reason   string
	// Store is the dtype a kept tensor is written in when that is not DType
	// (KeepF32Tensors); "" keeps DType.
	Store string
}

// Annotate classifies descriptors and applies the policy.
func Annotate(descs []Desc, p Policy) []Tensor {
	out := make([]Tensor, len(descs))
	for i, d := range descs {
		c := Classify(d.Name, d.Shape)
		q, why := p.Decide(d.Name, d.DType, d.Shape, c)
		out[i] = Tensor{Desc: d, Class: c, Quantize: q, Reason: why}
	}
	return out
}

// KeepF32Tensors marks the kept 16-bit tensors of the modules f holds in
// float32 (Family.KeepF32) to be stored F32: transformers upcasts them when
// it loads the model, whatever the dtype it loads the rest in, and saves them
// so (deepseek_v3's router e_score_correction_bias,
// testdata/models/deepseek_v3-bnb-nf4). f may be nil.
func KeepF32Tensors(ts []Tensor, f *Family) {
	if f == nil {
		return
	}
	for i := range ts {
		t := &ts[i]
		if t.Quantize || (t.DType != "BF16" && t.DType != "F16") {
			continue
		}
		if m, ok := inModules(t.Name, f.KeepF32); ok {
			t.Store = "F32"
			t.Reason += "; stored F32: transformers keeps " + m + " in float32 (" + f.Name + "'s _keep_in_fp32_modules_strict)"
		}
	}
}

// inModules returns the entry of mods that names a whole run of dotted
// components of name, as transformers matches _keep_in_fp32_modules_strict
// (the pattern (^|\.)module($|\.)).
func inModules(name string, mods []string) (string, bool) {
	for _, m := range mods {
		if m != "" && (name == m || strings.HasPrefix(name, m+".") || strings.HasSuffix(name, "."+m) || strings.Contains(name, "."+m+".")) {
			return m, true
		}
	}
	return "", false
}
