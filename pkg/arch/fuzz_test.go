package arch

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// FuzzConfig feeds arbitrary bytes as config.json: parsing, resolving and listing
// the tensors must never panic, and a config that resolves lists a bounded
// number of tensors whose shapes are all positive.
func FuzzConfig(f *testing.F) {
	paths, _ := filepath.Glob(filepath.Join(fixtures.Root(f), "testdata", "configs", "*.json"))
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Add([]byte(`{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":1,"num_attention_heads":2,"vocab_size":10}`))
	f.Add([]byte(`{"model_type":"mixtral","num_local_experts":1e9}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseConfig(data)
		if err != nil {
			return
		}
		m, err := Resolve(cfg)
		if err != nil {
			return
		}
		descs := m.Tensors()
		if len(descs) > 4_000_000 {
			t.Fatalf("%d tensors from one config", len(descs))
		}
		for _, d := range descs {
			for _, n := range d.Shape {
				if n <= 0 {
					t.Fatalf("tensor %s has shape %v", d.Name, d.Shape)
				}
			}
		}
	})
}

func TestConfigCountLimits(t *testing.T) {
	for _, cfg := range []string{
		`{"model_type":"llama","hidden_size":8,"intermediate_size":16,"num_hidden_layers":100000,"num_attention_heads":2,"vocab_size":10}`,
		`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_hidden_layers":2,"num_attention_heads":2,"vocab_size":10,"num_local_experts":1000000}`,
		`{"model_type":"mixtral","hidden_size":8,"intermediate_size":16,"num_hidden_layers":4000,"num_attention_heads":2,"vocab_size":10,"num_local_experts":16000}`,
	} {
		c, err := ParseConfig([]byte(cfg))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := Resolve(c); !errors.Is(err, ErrShape) {
			t.Errorf("Resolve(%s) = %v, want ErrShape", cfg, err)
		}
	}
}
