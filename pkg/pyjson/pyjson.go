// Package pyjson writes JSON byte for byte as Python's json module does, for
// the files transformers and bitsandbytes write with json.dumps: config.json,
// model.safetensors.index.json and the quant-state entries of a 4-bit
// checkpoint. Floats are written by repr, strings with ensure_ascii (the
// default), and MarshalIndent is json.dumps(v, indent=2, sort_keys=True).
package pyjson

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

// Float formats f as Python's repr(float) does, which is also how json.dumps
// writes a float: the shortest digits that read back to f; positional notation
// for decimal exponents in [-4, 16), with ".0" appended to integral values;
// otherwise scientific notation with a signed exponent of at least two digits
// ("1e-05", "1.5e+16"). Non-finite values are written as json.dumps writes them.
func Float(f float64) string {
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

// AppendString appends s quoted as Python's json does with ensure_ascii: short
// escapes for " \ \n \r \t \b \f, \u00XX for other control characters and
// \uXXXX (lower-case hex) for everything outside printable ASCII, as surrogate
// pairs above U+FFFF.
func AppendString(dst []byte, s string) []byte {
	const hex = "0123456789abcdef"
	u4 := func(r rune) {
		dst = append(dst, '\\', 'u', hex[(r>>12)&0xf], hex[(r>>8)&0xf], hex[(r>>4)&0xf], hex[r&0xf])
	}
	dst = append(dst, '"')
	for _, r := range s {
		switch {
		case r == '"':
			dst = append(dst, `\"`...)
		case r == '\\':
			dst = append(dst, `\\`...)
		case r == '\n':
			dst = append(dst, `\n`...)
		case r == '\r':
			dst = append(dst, `\r`...)
		case r == '\t':
			dst = append(dst, `\t`...)
		case r == '\b':
			dst = append(dst, `\b`...)
		case r == '\f':
			dst = append(dst, `\f`...)
		case r >= 0x20 && r <= 0x7e:
			dst = append(dst, byte(r))
		case r > 0xffff:
			r -= 0x10000
			u4(0xd800 | (r>>10)&0x3ff)
			u4(0xdc00 | r&0x3ff)
		default:
			u4(r)
		}
	}
	return append(dst, '"')
}

// Parse decodes one JSON document into maps, slices, strings, bools, nil and
// json.Number, as json.loads would see it (a repeated key keeps its last value).
func Parse(data []byte) (any, error) {
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

// MarshalIndent returns v as json.dumps(v, indent=2, sort_keys=True) writes it
// (separators "," and ": ", no trailing newline). v is built of nil, bool,
// string, int, int64, float64, json.Number, []any and map[string]any, as
// Parse or encoding/json return them. A json.Number is written as json.loads
// then json.dumps would: an integer keeps its value whatever its size, and a
// number with a fraction or an exponent becomes a float written by repr.
func MarshalIndent(v any) ([]byte, error) {
	return appendIndented(nil, v, 0)
}

func appendIndented(b []byte, v any, depth int) ([]byte, error) {
	indent := func(d int) { b = append(b, strings.Repeat("  ", d)...) }
	var err error
	switch x := v.(type) {
	case nil:
		b = append(b, "null"...)
	case bool:
		b = strconv.AppendBool(b, x)
	case string:
		b = AppendString(b, x)
	case json.Number:
		return appendNumber(b, x)
	case float64:
		b = append(b, Float(x)...)
	case int:
		b = strconv.AppendInt(b, int64(x), 10)
	case int64:
		b = strconv.AppendInt(b, x, 10)
	case []any:
		if len(x) == 0 {
			return append(b, "[]"...), nil
		}
		b = append(b, "[\n"...)
		for i, e := range x {
			indent(depth + 1)
			if b, err = appendIndented(b, e, depth+1); err != nil {
				return nil, err
			}
			if i < len(x)-1 {
				b = append(b, ',')
			}
			b = append(b, '\n')
		}
		indent(depth)
		b = append(b, ']')
	case map[string]any:
		if len(x) == 0 {
			return append(b, "{}"...), nil
		}
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		// Python compares str by code point; Go compares UTF-8 bytes, which
		// orders code points the same way.
		slices.Sort(keys)
		b = append(b, "{\n"...)
		for i, k := range keys {
			indent(depth + 1)
			b = AppendString(b, k)
			b = append(b, ": "...)
			if b, err = appendIndented(b, x[k], depth+1); err != nil {
				return nil, err
			}
			if i < len(keys)-1 {
				b = append(b, ',')
			}
			b = append(b, '\n')
		}
		indent(depth)
		b = append(b, '}')
	default:
		return nil, fmt.Errorf("cannot write a %T as JSON", v)
	}
	return b, nil
}

// appendNumber appends a JSON number literal as json.loads then json.dumps
// would write it.
func appendNumber(b []byte, n json.Number) ([]byte, error) {
	s := string(n)
	if !strings.ContainsAny(s, ".eE") {
		var i big.Int
		if _, ok := i.SetString(s, 10); !ok {
			return nil, fmt.Errorf("number %q is not an integer", s)
		}
		return i.Append(b, 10), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		// Python would read 1e999 as inf and write Infinity, which is not JSON.
		return nil, fmt.Errorf("number %q: %v", s, err)
	}
	return append(b, Float(f)...), nil
}
