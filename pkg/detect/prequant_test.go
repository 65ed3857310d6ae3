package detect

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/arch"
	"github.com/nf4pipe/nf4pipe/pkg/checkpoint"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// TestPrequantizedCheckpoint: transformers' 4-bit save of the tiny llama
// counts the same parameters, tensors and decisions as the bf16 model it came
// from, and reports its stored format; its 4-bit weights stream as bnb4.
func TestPrequantizedCheckpoint(t *testing.T) {
	src, err := Open(filepath.Join("..", "..", "testdata", "models", "llama"), arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	q, err := Open(filepath.Join("..", "..", "testdata", "models", "llama-bnb-nf4"), arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.Facts.Params != src.Facts.Params || q.Facts.Tensors != src.Facts.Tensors || q.Facts.QuantizedTensors != src.Facts.QuantizedTensors {
		t.Errorf("4-bit checkpoint: params %+v, %d tensors, %d quantized; bf16 model: %+v, %d, %d",
			q.Facts.Params, q.Facts.Tensors, q.Facts.QuantizedTensors, src.Facts.Params, src.Facts.Tensors, src.Facts.QuantizedTensors)
	}
	if q.Facts.SourceDType != "BF16" || q.Facts.LayerParams[0] != src.Facts.LayerParams[0] {
		t.Errorf("source dtype %s, layer 0 params %d (want BF16, %d)", q.Facts.SourceDType, q.Facts.LayerParams[0], src.Facts.LayerParams[0])
	}
	pq := q.Facts.Prequantized
	if pq == nil || pq.Method != "bitsandbytes" || pq.Type != "nf4" || pq.BlockSize != 64 || !pq.DoubleQuant {
		t.Errorf("stored format %+v, want bitsandbytes nf4 blocksize 64 double quant", pq)
	}
	if src.Facts.Prequantized != nil {
		t.Errorf("the bf16 model reports a stored format: %+v", src.Facts.Prequantized)
	}
	want := map[string]bool{}
	for _, at := range src.Tensors {
		want[at.Name] = at.Quantize
	}
	for i, at := range q.Tensors {
		if at.Quantize != want[at.Name] {
			t.Errorf("%s: quantize %v, the bf16 model's decision is %v", at.Name, at.Quantize, want[at.Name])
		}
		d, err := q.Descriptor(i)
		if err != nil {
			t.Fatal(err)
		}
		if enc := d.Encoding; (enc == tensorstream.BNB4) != at.Quantize || (at.Quantize && (d.Quant == nil || d.Quant.NestedOffset == 0)) {
			t.Errorf("%s: encoding %s, quant %+v", at.Name, enc, d.Quant)
		}
	}
}

// TestPrequantizedConfigAlone: a config.json with a bitsandbytes
// quantization_config, without weights, counts the model's parameters and
// honours llm_int8_skip_modules.
func TestPrequantizedConfigAlone(t *testing.T) {
	path := filepath.Join("..", "..", "testdata", "configs", "unsloth__Llama-3.2-1B-Instruct-bnb-4bit.json")
	m, err := Open(path, arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	// Llama-3.2-1B: 16 layers of 2048 hidden, 8192 intermediate, 8 KV heads
	// of 64, vocab 128256, tied embeddings.
	layer := int64(2048*2048*2 + 2*2048*512 + 3*2048*8192 + 2*2048)
	if total := 16*layer + 128256*2048 + 2048; m.Facts.Params.Total != total {
		t.Errorf("params %d, want %d", m.Facts.Params.Total, total)
	}
	pq := m.Facts.Prequantized
	if pq == nil || pq.Type != "nf4" || !pq.DoubleQuant || len(pq.SkipModules) != 4 {
		t.Errorf("stored format %+v", pq)
	}

	// a skip module that covers quantizable linears keeps them 16-bit
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	cfg["quantization_config"].(map[string]any)["llm_int8_skip_modules"] = []string{"lm_head", "down_proj", "model.layers.3.self_attn"}
	b, _ := json.Marshal(cfg)
	p2 := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(p2, b, 0o644); err != nil {
		t.Fatal(err)
	}
	m2, err := Open(p2, arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	kept := 0
	for _, at := range m2.Tensors {
		in := at.Role == arch.RoleMLPDown || (at.Layer == 3 && at.Role != arch.RoleNorm && len(at.Shape) == 2 && at.Role != arch.RoleMLPGate && at.Role != arch.RoleMLPUp)
		if in && at.Quantize {
			t.Errorf("%s: quantized, though in llm_int8_skip_modules", at.Name)
		}
		if in {
			kept++
		}
	}
	if want := 16 + 4; kept != want {
		t.Errorf("%d tensors in the skip modules, want %d", kept, want)
	}
	if got, want := m2.Facts.QuantizedTensors, m.Facts.QuantizedTensors-20; got != want {
		t.Errorf("%d quantized tensors, want %d", got, want)
	}
}

// TestPrequantizedWithoutConfig: 4-bit weights are recognized by their quant
// states when no config.json says so.
func TestPrequantizedWithoutConfig(t *testing.T) {
	dir := t.TempDir()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "models", "llama-bnb-nf4", "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := Open(dir, arch.Policy{})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if pq := m.Facts.Prequantized; pq == nil || pq.Type != "nf4" || pq.BlockSize != 64 || !pq.DoubleQuant {
		t.Errorf("stored format %+v", pq)
	}
	if m.Facts.Tensors != 21 || m.Facts.QuantizedTensors != 14 || m.Facts.Params.Total != 557696 {
		t.Errorf("%d tensors, %d quantized, %d params; want 21, 14, 557696", m.Facts.Tensors, m.Facts.QuantizedTensors, m.Facts.Params.Total)
	}
}

// TestPrequantizedBadLayout: a 4-bit checkpoint whose quant states disagree
// with its entries is refused with pkg/checkpoint's sentinel.
func TestPrequantizedBadLayout(t *testing.T) {
	src := filepath.Join("..", "..", "testdata", "models", "llama-bnb-nf4")
	dir := t.TempDir()
	for _, f := range []string{"config.json", "model.safetensors"} {
		b, err := os.ReadFile(filepath.Join(src, f))
		if err != nil {
			t.Fatal(err)
		}
		if f == "model.safetensors" {
			// one quant state claims a shape of twice the elements
			b = bytes.Replace(b, []byte(`"shape": [128, 256]`), []byte(`"shape": [256, 256]`), 1)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err := Open(dir, arch.Policy{})
	if !errors.Is(err, checkpoint.ErrLayout) && !errors.Is(err, checkpoint.ErrQuantState) {
		t.Errorf("got %v, want a checkpoint layout or quant state error", err)
	}
}
