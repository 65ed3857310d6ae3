package checkpoint

import (
	"encoding/json"
	"fmt"

	"github.com/nf4pipe/nf4pipe/pkg/pyjson"
	"github.com/nf4pipe/nf4pipe/pkg/qtype"
)

// QuantizationConfig is what a checkpoint's config.json says about its
// bitsandbytes 4-bit quantization.
type QuantizationConfig struct {
	QuantType    string   // bnb_4bit_quant_type: a name of pkg/qtype's registry
	DoubleQuant  bool     // bnb_4bit_use_double_quant
	ComputeDType string   // bnb_4bit_compute_dtype: "bfloat16", "float16" or "float32"
	QuantStorage string   // bnb_4bit_quant_storage; "" means qtype.Storage ("uint8")
	SkipModules  []string // llm_int8_skip_modules; nil is written as null
}

// block returns the quantization_config object transformers 5 writes for a
// BitsAndBytesConfig with these settings (BitsAndBytesConfig.to_dict), all of
// its keys and defaults.
func (qc QuantizationConfig) block() map[string]any {
	storage := qc.QuantStorage
	if storage == "" {
		storage = qtype.Storage
	}
	var skip any
	if qc.SkipModules != nil {
		s := make([]any, len(qc.SkipModules))
		for i, m := range qc.SkipModules {
			s[i] = m
		}
		skip = s
	}
	compute := qc.ComputeDType
	if compute == "" {
		compute = "float32" // BitsAndBytesConfig's default
	}
	return map[string]any{
		"_load_in_4bit":                    true,
		"_load_in_8bit":                    false,
		"bnb_4bit_compute_dtype":           compute,
		"bnb_4bit_quant_storage":           storage,
		"bnb_4bit_quant_type":              qc.QuantType,
		"bnb_4bit_use_double_quant":        qc.DoubleQuant,
		"llm_int8_enable_fp32_cpu_offload": false,
		"llm_int8_has_fp16_weight":         false,
		"llm_int8_skip_modules":            skip,
		"llm_int8_threshold":               json.Number("6.0"),
		"load_in_4bit":                     true,
		"load_in_8bit":                     false,
		"quant_method":                     "bitsandbytes",
	}
}

// maxConfigSize bounds a config.json read into memory.
const maxConfigSize = 16 << 20

// WithQuantizationConfig returns the config.json transformers writes when it
// saves the model described by src loaded in 4 bits with qc: src's fields, with
// "quantization_config" set to qc's block, as PretrainedConfig.to_json_string
// formats it (json.dumps(indent=2, sort_keys=True) and a newline).
//
// Of transformers' rewrites, only the one that depends on no model code is
// applied: a "torch_dtype" key is renamed "dtype" (kept when both exist, as
// transformers 5 does). transformers also updates "transformers_version" and,
// for configs from older releases, may add or rename fields from the model
// class's defaults (rope_scaling to rope_parameters, say); those keep their
// source values here.
func WithQuantizationConfig(src []byte, qc QuantizationConfig) ([]byte, error) {
	if len(src) > maxConfigSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrConfig, len(src), maxConfigSize)
	}
	if _, err := qtype.Lookup(qc.QuantType); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrConfig, err)
	}
	cfg, err := parseConfigObject(src)
	if err != nil {
		return nil, err
	}
	if td, ok := cfg["torch_dtype"]; ok {
		if _, has := cfg["dtype"]; !has && td != nil {
			cfg["dtype"] = td
		}
		delete(cfg, "torch_dtype")
	}
	cfg["quantization_config"] = qc.block()
	return FormatConfig(cfg)
}

// FormatConfig writes a parsed config as transformers does:
// json.dumps(cfg, indent=2, sort_keys=True) + "\n". Values are those
// encoding/json decodes into any (numbers as json.Number or float64).
func FormatConfig(cfg map[string]any) ([]byte, error) {
	b, err := pyjson.MarshalIndent(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	return append(b, '\n'), nil
}

// ReformatConfig parses a config.json and writes it back as transformers
// formats it; a config that transformers saved comes back byte for byte.
func ReformatConfig(src []byte) ([]byte, error) {
	cfg, err := parseConfigObject(src)
	if err != nil {
		return nil, err
	}
	return FormatConfig(cfg)
}

// parseConfigObject parses a config.json as json.loads does; it must be an object.
func parseConfigObject(src []byte) (map[string]any, error) {
	v, err := pyjson.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	cfg, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: not a JSON object", ErrConfig)
	}
	return cfg, nil
}

// ParseQuantizationConfig reads the quantization_config of a config.json. It
// returns nil and no error when there is none, and ErrConfig when there is one
// that is not bitsandbytes 4-bit.
func ParseQuantizationConfig(config []byte) (*QuantizationConfig, error) {
	var c struct {
		QC *struct {
			QuantMethod  string   `json:"quant_method"`
			LoadIn4Bit   *bool    `json:"load_in_4bit"`
			LoadIn4BitU  *bool    `json:"_load_in_4bit"`
			QuantType    string   `json:"bnb_4bit_quant_type"`
			DoubleQuant  bool     `json:"bnb_4bit_use_double_quant"`
			ComputeDType string   `json:"bnb_4bit_compute_dtype"`
			QuantStorage string   `json:"bnb_4bit_quant_storage"`
			SkipModules  []string `json:"llm_int8_skip_modules"`
		} `json:"quantization_config"`
	}
	if len(config) > maxConfigSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrConfig, len(config), maxConfigSize)
	}
	if err := json.Unmarshal(config, &c); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if c.QC == nil {
		return nil, nil
	}
	q := c.QC
	in4 := (q.LoadIn4Bit != nil && *q.LoadIn4Bit) || (q.LoadIn4BitU != nil && *q.LoadIn4BitU)
	if q.QuantMethod != "bitsandbytes" || !in4 {
		return nil, fmt.Errorf("%w: quantization_config is not bitsandbytes 4-bit (quant_method %q)", ErrConfig, q.QuantMethod)
	}
	if q.QuantType == "" {
		q.QuantType = qtype.FP4.Name // BitsAndBytesConfig's default
	}
	return &QuantizationConfig{QuantType: q.QuantType, DoubleQuant: q.DoubleQuant, ComputeDType: q.ComputeDType,
		QuantStorage: q.QuantStorage, SkipModules: q.SkipModules}, nil
}
