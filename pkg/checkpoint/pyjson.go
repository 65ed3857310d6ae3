package checkpoint

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strconv"
	"strings"
)

// PyFloatRepr formats f as Python's repr(float) does, which is also how json.dumps
// writes a float: the shortest digits that read back to f; positional notation
// for decimal exponents in [-4, 16), with ".0" appended to integral values;
// otherwise scientific notation with a signed exponent of at least two digits
// ("1e-05", "1.5e+16"). Non-finite values are written as json.dumps writes them.
func PyFloatRepr(f float64) string {
	switch {
	case math.IsNaN(f):
		return "NaN"
	case math.IsInf(f, 1):
		return "Infinity"
	case math.IsInf(f, -1):
		return "-Infinity"
	case f == 0:
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	s := strconv.FormatFloat(f, 'e', -1, 64) // [-]d[.ddd]e±XX, shortest round trip
	sign := ""
	if s[0] == '-' {
		sign, s = "-", s[1:]
	}
	mant, expText, _ := strings.Cut(s, "e")
	exp, _ := strconv.Atoi(expText)
	digits := strings.Replace(mant, ".", "", 1)
	if exp < -4 || exp >= 16 {
		m := digits[:1]
		if len(digits) > 1 {
			m += "." + digits[1:]
		}
		es := "+"
		if exp < 0 {
			es, exp = "-", -exp
		}
		return fmt.Sprintf("%s%se%s%02d", sign, m, es, exp)
	}
	point := exp + 1 // digits before the decimal point
	switch {
	case point <= 0:
		return sign + "0." + strings.Repeat("0", -point) + digits
	case point >= len(digits):
		return sign + digits + strings.Repeat("0", point-len(digits)) + ".0"
	default:
		return sign + digits[:point] + "." + digits[point:]
	}
}

// parsePyJSON decodes a JSON document into maps, slices, strings, bools, nil and
// json.Number, as json.loads would see it (a repeated key keeps its last value).
func parsePyJSON(data []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("data after the JSON value at byte %d", d.InputOffset())
	}
	return v, nil
}

// writePyNumber writes a JSON number literal as json.loads then json.dumps would:
// an integer keeps its value (arbitrary precision), anything with a fraction or
// an exponent becomes a float and is written by repr.
func writePyNumber(b *bytes.Buffer, n json.Number) error {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		var i big.Int
		if _, ok := i.SetString(s, 10); !ok {
			return fmt.Errorf("number %q is not an integer", s)
		}
		b.WriteString(i.String())
		return nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		// Python would read 1e999 as inf and write Infinity, which is not JSON.
		return fmt.Errorf("number %q: %v", s, err)
	}
	b.WriteString(PyFloatRepr(f))
	return nil
}

// writePyIndented writes v as json.dumps(v, indent=2, sort_keys=True), the way
// transformers writes config.json (ensure_ascii on; separators "," and ": ").
func writePyIndented(b *bytes.Buffer, v any, depth int) error {
	indent := func(d int) { b.WriteString(strings.Repeat("  ", d)) }
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		writePyString(b, x)
	case json.Number:
		return writePyNumber(b, x)
	case float64:
		b.WriteString(PyFloatRepr(x))
	case int:
		b.WriteString(strconv.Itoa(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case []any:
		if len(x) == 0 {
			b.WriteString("[]")
			return nil
		}
		b.WriteString("[\n")
		for i, e := range x {
			indent(depth + 1)
			if err := writePyIndented(b, e, depth+1); err != nil {
				return err
			}
			if i < len(x)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		indent(depth)
		b.WriteByte(']')
	case map[string]any:
		if len(x) == 0 {
			b.WriteString("{}")
			return nil
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		slices.SortFunc(keys, cmpPyString)
		b.WriteString("{\n")
		for i, k := range keys {
			indent(depth + 1)
			writePyString(b, k)
			b.WriteString(": ")
			if err := writePyIndented(b, x[k], depth+1); err != nil {
				return err
			}
			if i < len(keys)-1 {
				b.WriteByte(',')
			}
			b.WriteByte('\n')
		}
		indent(depth)
		b.WriteByte('}')
	default:
		return fmt.Errorf("cannot write a %T as JSON", v)
	}
	return nil
}

// cmpPyString orders strings as Python compares str: by code point. Go compares
// UTF-8 bytes, which orders code points the same way.
func cmpPyString(a, b string) int { return strings.Compare(a, b) }

// writePyString writes s as Python's json does with ensure_ascii: short escapes
// for " \ \n \r \t \b \f, \u00XX for other control characters and everything
// outside ASCII, surrogate pairs above U+FFFF.
func writePyString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	u4 := func(r rune) {
		b.WriteString(`\u`)
		for sh := 12; sh >= 0; sh -= 4 {
			b.WriteByte(hex[(r>>sh)&0xf])
		}
	}
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r >= 0x20 && r <= 0x7e:
			b.WriteByte(byte(r))
		case r > 0xffff:
			r -= 0x10000
			u4(0xd800 | (r>>10)&0x3ff)
			u4(0xdc00 | r&0x3ff)
		default:
			u4(r)
		}
	}
	b.WriteByte('"')
}
