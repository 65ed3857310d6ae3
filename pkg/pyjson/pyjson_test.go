package pyjson

import (
	"bufio"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestFloatGolden: every value of testdata/pyrepr.txt as Python's repr writes it.
func TestFloatGolden(t *testing.T) {
	f, err := os.Open(filepath.Join("testdata", "pyrepr.txt"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		hex, want, ok := strings.Cut(line, " ")
		if !ok {
			t.Fatalf("bad line %q", line)
		}
		bits, err := strconv.ParseUint(hex, 16, 64)
		if err != nil {
			t.Fatal(err)
		}
		if got := Float(math.Float64frombits(bits)); got != want {
			t.Errorf("Float(%s) = %q, Python writes %q", hex, got, want)
		}
		n++
	}
	if n < 3000 {
		t.Fatalf("only %d golden values", n)
	}
}

func TestFloatSpecial(t *testing.T) {
	for f, want := range map[float64]string{
		math.NaN(): "NaN", math.Inf(1): "Infinity", math.Inf(-1): "-Infinity",
		1e-5: "1e-05", 1e-4: "0.0001", 1e16: "1e+16", 123: "123.0", -2.5e-7: "-2.5e-07", 1e100: "1e+100",
		0.5: "0.5", 1: "1.0", 0.050658226013183594: "0.050658226013183594", 1.5e-7: "1.5e-07", 123.25: "123.25",
	} {
		if got := Float(f); got != want {
			t.Errorf("Float(%v) = %q, want %q", f, got, want)
		}
	}
}

func TestAppendString(t *testing.T) {
	got := string(AppendString([]byte("x"), "a\"\\\n\r\t\b\f\x01\x7f caf\u00e9 \U0001F600"))
	want := `x"a\"\\\n\r\t\b\f\u0001\u007f caf\u00e9 \ud83d\ude00"`
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestMarshalIndent(t *testing.T) {
	v, err := Parse([]byte(`{"b": [1, 2.50, 1e-6, {}, null, true], "a": "\u00e9", "e": [], "x": -0, "big": 123456789012345678901234567890}`))
	if err != nil {
		t.Fatal(err)
	}
	got, err := MarshalIndent(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
  "a": "\u00e9",
  "b": [
    1,
    2.5,
    1e-06,
    {},
    null,
    true
  ],
  "big": 123456789012345678901234567890,
  "e": [],
  "x": 0
}`
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	for _, bad := range []any{map[string]any{"a": struct{}{}}, json.Number("1e999"), json.Number("12x")} {
		if _, err := MarshalIndent(bad); err == nil {
			t.Errorf("%#v: no error", bad)
		}
	}
	if _, err := Parse([]byte(`{} {}`)); err == nil {
		t.Error("two documents: no error")
	}
}
