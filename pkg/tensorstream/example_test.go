package tensorstream_test

import (
	"bytes"
	"fmt"
	"io"
	"log"

	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
)

// A stage writes a header, then each tensor's descriptor and payload, and
// closes the stream; the next stage reads it back the way archive/tar reads
// an archive. This is the usage the package documentation shows.
func Example() {
	var pipe bytes.Buffer

	w := tensorstream.NewWriter(&pipe)
	h := &tensorstream.Header{}
	h.AddStage("detect", "0.1.0", nil)
	if err := w.WriteHeader(h); err != nil {
		log.Fatal(err)
	}
	for _, t := range []struct {
		name    string
		payload []byte
	}{
		{"model.norm.weight", []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}}, // 1.0, 2.0
		{"lm_head.bias", []byte{0, 0, 0x40, 0x40}},                     // 3.0
	} {
		n := int64(len(t.payload))
		desc := &tensorstream.Tensor{Name: t.name, DType: tensorstream.F32, Shape: []int64{n / 4}, Encoding: tensorstream.Raw, Size: n}
		if err := w.WriteTensor(desc); err != nil {
			log.Fatal(err)
		}
		if _, err := w.Write(t.payload); err != nil { // as many calls as needed, Size bytes in all
			log.Fatal(err)
		}
	}
	if err := w.Close(); err != nil { // finishes the last tensor, writes the end record
		log.Fatal(err)
	}

	r := tensorstream.NewReader(&pipe)
	rh, err := r.Header()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("written by", rh.Stages[0].Name)
	for {
		t, err := r.Next()
		if err == io.EOF {
			break // the end record was read and its counts matched
		}
		if err != nil {
			log.Fatal(err)
		}
		var payload bytes.Buffer
		if _, err := io.Copy(&payload, r); err != nil { // r serves the payload of t
			log.Fatal(err)
		}
		fmt.Printf("%s %s %v: % x\n", t.Name, t.DType, t.Shape, payload.Bytes())
	}
	// Output:
	// written by detect
	// model.norm.weight F32 [2]: 00 00 80 3f 00 00 00 40
	// lm_head.bias F32 [1]: 00 00 40 40
}
