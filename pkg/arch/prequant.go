package arch

import (
	"encoding/json"
	"strings"

	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
)

// BNBBlockSize is the block size transformers' BitsAndBytesConfig always
// quantizes 4-bit weights with; its quantization_config does not record it.
const BNBBlockSize = 64

// PrequantizedFromConfig returns the bitsandbytes 4-bit format a config.json declares
// in its quantization_config, nil when it declares none or another method
// (GPTQ, FP8, 8-bit bitsandbytes: those are read as the tensors they hold).
func PrequantizedFromConfig(config []byte) *Prequantized {
	var probe struct {
		QC *struct {
			Method string `json:"quant_method"`
		} `json:"quantization_config"`
	}
	if json.Unmarshal(config, &probe) != nil || probe.QC == nil || probe.QC.Method != "bitsandbytes" {
		return nil
	}
	qc, err := checkpoint.ParseQuantizationConfig(config)
	if err != nil || qc == nil {
		return nil // load_in_8bit
	}
	return &Prequantized{Method: "bitsandbytes", Type: qc.QuantType, BlockSize: BNBBlockSize,
		DoubleQuant: qc.DoubleQuant, ComputeDType: qc.ComputeDType, SkipModules: qc.SkipModules}
}

// InSkipModules returns the llm_int8_skip_modules entry that keeps the module of
// tensor name out of bitsandbytes, as transformers matches them: the module's
// dotted name is the entry, or has it as a run of whole components.
func InSkipModules(name string, skip []string) (string, bool) {
	module := strings.TrimSuffix(name, ".weight")
	for _, s := range skip {
		if s == "" {
			continue
		}
		if module == s || strings.HasPrefix(module, s+".") || strings.HasSuffix(module, "."+s) || strings.Contains(module, "."+s+".") {
			return s, true
		}
	}
	return "", false
}

// KeepSkipModules marks the tensors of the modules pq lists in
// llm_int8_skip_modules as kept, as transformers leaves them out of
// bitsandbytes.
func KeepSkipModules(ts []Tensor, pq *Prequantized) {
	if pq == nil {
		return
	}
	for i := range ts {
		if !ts[i].Quantize {
			continue
		}
		if s, ok := InSkipModules(ts[i].Name, pq.SkipModules); ok {
			ts[i].Quantize, ts[i].Reason = false, "in the config's llm_int8_skip_modules ("+s+")"
		}
	}
}
