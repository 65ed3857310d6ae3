package pyjson_test

import (
	"fmt"
	"log"

	"github.com/nf4pipe/nf4pipe/pkg/pyjson"
)

// A config.json read and written again as Python's json.dumps(v, indent=2,
// sort_keys=True) writes it: keys sorted, floats by repr, non-ASCII escaped.
func ExampleMarshalIndent() {
	v, err := pyjson.Parse([]byte(`{"rms_norm_eps": 1e-05, "name": "café", "layers": 2, "rope": {"theta": 500000.0}}`))
	if err != nil {
		log.Fatal(err)
	}
	out, err := pyjson.MarshalIndent(v)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(out))
	// Output:
	// {
	//   "layers": 2,
	//   "name": "caf\u00e9",
	//   "rms_norm_eps": 1e-05,
	//   "rope": {
	//     "theta": 500000.0
	//   }
	// }
}
