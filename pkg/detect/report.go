package detect

import (
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/nf4pipe/nf4pipe/internal/units"
	"github.com/nf4pipe/nf4pipe/pkg/arch"
)

// Report is the --json report: the model facts plus where they came from.
type Report struct {
	Source Source `json:"source"`
	*arch.Facts
	FP8Tensors int          `json:"fp8_tensors"`
	Roles      []RoleReport `json:"roles"`
}

// RoleReport sums the tensors of one role and decision.
type RoleReport struct {
	Role     string `json:"role"`
	Quantize bool   `json:"quantize"`
	Tensors  int    `json:"tensors"`
	Params   int64  `json:"params"`
	Reason   string `json:"reason"`
	// Store is the dtype the kept tensors are written in when it is not
	// their own (arch.KeepF32Tensors).
	Store string `json:"store,omitempty"`
}

// Report builds the report of an opened model.
func (m *Model) Report() *Report {
	r := &Report{Source: m.Source, Facts: m.Facts}
	idx := map[[3]string]int{}
	for _, t := range m.Tensors {
		if t.DType == "F8_E4M3" || t.DType == "F8_E5M2" {
			r.FP8Tensors++
		}
		k := [3]string{t.Role, fmt.Sprint(t.Quantize), t.Store}
		i, ok := idx[k]
		if !ok {
			i = len(r.Roles)
			idx[k] = i
			r.Roles = append(r.Roles, RoleReport{Role: t.Role, Quantize: t.Quantize, Reason: t.Reason, Store: t.Store})
		}
		r.Roles[i].Tensors++
		if t.Role != arch.RoleScale {
			r.Roles[i].Params += t.Elements()
		}
	}
	sort.SliceStable(r.Roles, func(a, b int) bool { return r.Roles[a].Params > r.Roles[b].Params })
	return r
}

// WriteJSON writes the report as one indented JSON object.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteText writes the report as a human-readable summary and role table.
func (r *Report) WriteText(w io.Writer) error {
	f := r.Facts
	var b strings.Builder
	family := f.Family
	if f.Fallback {
		family += " (FALLBACK: unknown architecture, tensor roles guessed from names)"
	}
	fmt.Fprintf(&b, "model      %s\n", r.Source.Path)
	fmt.Fprintf(&b, "type       %s, family %s\n", orDash(f.ModelType), family)
	if f.Prequantized == nil {
		if f.PolicyVerifiedOn != "" {
			fmt.Fprintf(&b, "policy     verified: byte-identical to transformers + bitsandbytes on %s\n", f.PolicyVerifiedOn)
		} else {
			fmt.Fprintf(&b, "policy     UNVERIFIED: no transformers-made fixture of this family; 4-bit decisions follow transformers' rules by tensor name\n")
		}
	}
	if r.Source.NoData {
		fmt.Fprintf(&b, "weights    none: tensor list derived from config.json\n")
	} else {
		fmt.Fprintf(&b, "weights    %d safetensors file(s), %s\n", r.Source.Files, f.SourceDType)
	}
	if pq := f.Prequantized; pq != nil {
		fmt.Fprintf(&b, "stored     already 4-bit: %s %s, blocksize %d, double quant %v", pq.Method, pq.Type, pq.BlockSize, pq.DoubleQuant)
		if len(pq.SkipModules) > 0 {
			fmt.Fprintf(&b, ", skip modules %s", strings.Join(pq.SkipModules, ","))
		}
		b.WriteString("\n")
	}
	if f.Hidden > 0 {
		fmt.Fprintf(&b, "dims       hidden %d, intermediate %d, layers %d, heads %d/%d kv, head_dim %d, vocab %d\n",
			f.Hidden, f.Intermediate, f.Layers, f.Heads, f.KVHeads, f.HeadDim, f.Vocab)
	}
	var feats []string
	if f.TiedEmbeddings {
		feats = append(feats, "tied embeddings")
	}
	if f.SlidingWindow > 0 {
		feats = append(feats, fmt.Sprintf("sliding window %d", f.SlidingWindow))
	}
	if f.AttnSoftcap > 0 || f.FinalSoftcap > 0 {
		feats = append(feats, fmt.Sprintf("soft-capping attn %g final %g", f.AttnSoftcap, f.FinalSoftcap))
	}
	if f.QKNorm {
		feats = append(feats, "qk-norm")
	}
	if f.FusedQKV {
		feats = append(feats, "fused qkv")
	}
	if f.FusedGateUp {
		feats = append(feats, "fused gate_up")
	}
	if f.MLA != nil {
		feats = append(feats, fmt.Sprintf("MLA q_lora %d kv_lora %d", f.MLA.QLoraRank, f.MLA.KVLoraRank))
	}
	if e := f.Experts; e != nil {
		feats = append(feats, fmt.Sprintf("MoE %d experts, %d per token, %d shared, %d sparse layers", e.Count, e.PerToken, e.Shared, e.SparseLayers))
	}
	if v := f.Vision; v != nil {
		feats = append(feats, fmt.Sprintf("vision tower hidden %d, %d layers", v.Hidden, v.Layers+v.GlobalLayers))
	}
	if len(feats) > 0 {
		fmt.Fprintf(&b, "features   %s\n", strings.Join(feats, ", "))
	}
	p := f.Params
	fmt.Fprintf(&b, "params     %s total: %s quantized, %s kept (embedding %s, lm_head %s, experts %s, vision %s)\n",
		human(p.Total), human(p.Quantized), human(p.Kept), human(p.Embedding), human(p.LMHead), human(p.Experts), human(p.Vision))
	fmt.Fprintf(&b, "bytes      source %d (%s), nf4 checkpoint %d (%s, ±%d B)\n",
		f.Bytes.Source, units.Bytes(f.Bytes.Source), f.Bytes.NF4, units.Bytes(f.Bytes.NF4), f.Bytes.NF4Slack)
	fmt.Fprintf(&b, "tensors    %d, %d to quantize\n", f.Tensors, f.QuantizedTensors)
	if r.FP8Tensors > 0 {
		fmt.Fprintf(&b, "WARNING    %d FP8 tensors: bitsandbytes quantizes only 16/32-bit weights; they are kept as they are\n", r.FP8Tensors)
	}
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "\nROLE\tTENSORS\tPARAMS\tDECISION\tREASON")
	for _, rr := range r.Roles {
		d := "keep"
		switch {
		case rr.Quantize:
			d = "nf4"
		case rr.Store != "":
			d = "keep " + rr.Store
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", rr.Role, rr.Tensors, human(rr.Params), d, rr.Reason)
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func human(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.2fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}
