package checkpoint

import (
	"bytes"
	"testing"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// FuzzQuantStateJSON: whatever parses writes back to bytes that parse to the
// same state, and writing is a fixed point.
func FuzzQuantStateJSON(f *testing.F) {
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "bfloat16", "shape": [128, 256], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 0.05057382583618164}`))
	f.Add([]byte(`{"quant_type": "fp4", "blocksize": 128, "dtype": "float16", "shape": [3]}`))
	f.Add([]byte(`{"quant_type": "nf4", "blocksize": 64, "dtype": "float32", "shape": [], "nested_blocksize": 256, "nested_dtype": "float32", "nested_offset": 1e-05}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		q, err := ParseQuantStateJSON(data)
		if err != nil {
			return
		}
		ts := &tensorstream.Tensor{Name: "w", DType: q.DType, Shape: q.Shape, Encoding: tensorstream.BNB4, Quant: q.StreamQuant()}
		out, err := QuantStateJSON(ts)
		if err != nil {
			t.Fatalf("parsed %+v but cannot write it: %v", q, err)
		}
		q2, err := ParseQuantStateJSON(out)
		if err != nil {
			t.Fatalf("wrote %s, which does not parse: %v", out, err)
		}
		ts2 := &tensorstream.Tensor{Name: "w", DType: q2.DType, Shape: q2.Shape, Encoding: tensorstream.BNB4, Quant: q2.StreamQuant()}
		out2, _ := QuantStateJSON(ts2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("not a fixed point:\n%s\n%s", out, out2)
		}
	})
}

// FuzzReformatConfig: formatting a config is idempotent.
func FuzzReformatConfig(f *testing.F) {
	f.Add([]byte(`{"a": 1, "b": [1.5, 1e-06, "x\u00e9"], "c": {"d": null, "e": true}, "torch_dtype": "float16"}`))
	f.Add([]byte(`{"rope_theta": 10000.0, "eps": 1e-5, "big": 1e400}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		a, err := ReformatConfig(data)
		if err != nil {
			return
		}
		b, err := ReformatConfig(a)
		if err != nil {
			t.Fatalf("formatted config does not parse: %v\n%s", err, a)
		}
		if !bytes.Equal(a, b) {
			t.Fatalf("not idempotent:\n%s\n%s", a, b)
		}
	})
}
