package tensorstream

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

// TestWorkedExample writes the stream of docs/tensorstream.md's worked example
// and demands the bytes the document shows, so the document cannot drift.
func TestWorkedExample(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join(fixtures.Root(t), "docs", "tensorstream.md"))
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, line := range strings.Split(string(doc), "\n") {
		line = strings.TrimPrefix(line, "    ")
		if len(line) < 10 || !strings.HasPrefix(line, "000000") {
			continue
		}
		cols := line[10:]
		if i := strings.Index(cols, "|"); i >= 0 {
			cols = cols[:i]
		}
		b, err := hex.DecodeString(strings.Join(strings.Fields(cols), ""))
		if err != nil {
			t.Fatalf("hex dump line %q: %v", line, err)
		}
		want = append(want, b...)
	}
	if len(want) == 0 {
		t.Fatal("no hex dump found in docs/tensorstream.md")
	}

	var got bytes.Buffer
	w := NewWriter(&got)
	h := &Header{}
	h.AddStage("detect", "0.1.0", nil)
	tt := &Tensor{Name: "norm.weight", DType: F32, Shape: []int64{2}, Encoding: Raw, Size: 8}
	if err := tt.SetAnn(AnnLayer, -1); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHeader(h); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor(tt); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Fatalf("the worked example is\n%s\nthe writer gives\n%s", hex.Dump(want), hex.Dump(got.Bytes()))
	}
	if err := readAll(want); err != nil {
		t.Fatalf("the worked example does not read: %v", err)
	}
}
