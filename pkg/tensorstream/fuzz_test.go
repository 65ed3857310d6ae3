package tensorstream

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// FuzzReader feeds arbitrary bytes to the reader: it must never panic, and a
// stream it accepts must pass through a writer to bytes that read back the same.
func FuzzReader(f *testing.F) {
	good := writeStream(f, 100, testTensors(rand.New(rand.NewPCG(11, 12))))
	f.Add(good)
	f.Add(good[:len(good)/2])
	f.Add(writeStream(f, 7, testTensors(rand.New(rand.NewPCG(13, 14)))[:2]))
	f.Add([]byte("NF4S\x01\x00\x00\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		if readAll(data) != nil {
			return
		}
		var once bytes.Buffer
		if err := passThrough(&once, bytes.NewReader(data), 64); err != nil {
			t.Fatalf("accepted stream failed to pass through: %v", err)
		}
		var twice bytes.Buffer
		if err := passThrough(&twice, bytes.NewReader(once.Bytes()), 64); err != nil {
			t.Fatalf("rewritten stream failed to read: %v", err)
		}
		if !bytes.Equal(once.Bytes(), twice.Bytes()) {
			t.Fatalf("pass-through is not stable")
		}
	})
}
