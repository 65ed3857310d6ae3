package dtype_test

import (
	"fmt"

	"github.com/nf4pipe/nf4pipe/pkg/dtype"
)

// A dtype as safetensors spells it, its width and torch's name for it.
func ExampleDType() {
	for _, d := range []dtype.DType{dtype.BF16, dtype.F32, dtype.U8} {
		fmt.Printf("%s: %d bytes, float %v, %s\n", d, d.Size(), d.IsFloat(), d.TorchName())
	}
	d, ok := dtype.FromTorch("float16")
	fmt.Println(d, ok, dtype.DType("F12").Valid())
	// Output:
	// BF16: 2 bytes, float true, bfloat16
	// F32: 4 bytes, float true, float32
	// U8: 1 bytes, float false, uint8
	// F16 true false
}
