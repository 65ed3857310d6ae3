package arch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Sentinel errors; callers test them with errors.Is.
var (
	ErrConfig = errors.New("arch: invalid config.json")
	ErrShape  = errors.New("arch: config gives an impossible shape")
)

// Config is a parsed config.json. The raw bytes are kept so that detect can pass
// them on unchanged.
type Config struct {
	Raw []byte
	m   obj
}

// ParseConfig parses config.json bytes. Only the JSON syntax and the top level
// being an object are checked here; Resolve checks the values a family needs.
func ParseConfig(data []byte) (*Config, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	if m == nil {
		return nil, fmt.Errorf("%w: top level is not an object", ErrConfig)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the object", ErrConfig)
	}
	return &Config{Raw: append([]byte(nil), data...), m: m}, nil
}

// ModelType returns the top-level model_type, "" when absent.
func (c *Config) ModelType() string { return c.m.str("model_type") }

// Architectures returns the top-level architectures list.
func (c *Config) Architectures() []string {
	var out []string
	if l, ok := c.m["architectures"].([]any); ok {
		for _, v := range l {
			if s, ok := v.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

// obj is a JSON object with typed accessors. Absent and null read as absent.
type obj map[string]any

func (o obj) sub(key string) obj {
	if v, ok := o[key].(map[string]any); ok {
		return v
	}
	return nil
}

func (o obj) str(key string) string {
	s, _ := o[key].(string)
	return s
}

// num returns a JSON number as float64.
func (o obj) num(key string) (float64, bool) {
	n, ok := o[key].(json.Number)
	if !ok {
		return 0, false
	}
	f, err := n.Float64()
	return f, err == nil
}

// int returns an integral JSON number; a fractional or huge one is an error.
func (o obj) int(key string) (int64, bool, error) {
	f, ok := o.num(key)
	if !ok {
		return 0, false, nil
	}
	if f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, true, fmt.Errorf("%w: %s = %v is not an integer", ErrConfig, key, f)
	}
	return int64(f), true, nil
}

func (o obj) boolean(key string) (bool, bool) {
	b, ok := o[key].(bool)
	return b, ok
}

func (o obj) ints(key string) ([]int64, error) {
	l, ok := o[key].([]any)
	if !ok {
		return nil, nil
	}
	out := make([]int64, 0, len(l))
	for _, v := range l {
		n, ok := v.(json.Number)
		if !ok {
			return nil, fmt.Errorf("%w: %s holds a non-number", ErrConfig, key)
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrConfig, key, err)
		}
		out = append(out, i)
	}
	return out, nil
}

func (o obj) len(key string) int {
	l, _ := o[key].([]any)
	return len(l)
}

// view reads keys from a config object, falling back to a defaults table (the
// defaults of the transformers config class), and records the first error.
// where names a sub-object ("vision_config"); the caller names the file.
type view struct {
	o, def obj
	where  string
	err    error
}

func (v *view) fail(err error) {
	switch {
	case v.err != nil:
	case v.where != "":
		v.err = fmt.Errorf("%s: %w", v.where, err)
	default:
		v.err = err
	}
}

// lookup returns the object to read key from: the config when it has the key,
// even as null (the config class then holds None, not its default), else the
// defaults.
func (v *view) lookup(key string) obj {
	if _, ok := v.o[key]; ok {
		return v.o
	}
	return v.def
}

// pos reads a dimension that must be present (here or in the defaults) and > 0.
func (v *view) pos(key string) int64 {
	n, ok, err := v.lookup(key).int(key)
	switch {
	case err != nil:
		v.fail(err)
	case !ok:
		v.fail(fmt.Errorf("%w: %s is missing", ErrConfig, key))
	case n <= 0 || n > 1<<40:
		v.fail(fmt.Errorf("%w: %s = %d is out of range", ErrShape, key, n))
	}
	return n
}

// opt reads an optional non-negative integer, returning def when absent.
func (v *view) opt(key string, def int64) int64 {
	n, ok, err := v.lookup(key).int(key)
	switch {
	case err != nil:
		v.fail(err)
		return def
	case !ok:
		return def
	case n < 0 || n > 1<<40:
		v.fail(fmt.Errorf("%w: %s = %d is out of range", ErrShape, key, n))
		return def
	}
	return n
}

func (v *view) boolean(key string, def bool) bool {
	if b, ok := v.lookup(key).boolean(key); ok {
		return b
	}
	return def
}

func (v *view) float(key string) float64 {
	f, _ := v.lookup(key).num(key)
	return f
}

func (v *view) ints(key string) []int64 {
	l, err := v.lookup(key).ints(key)
	if err != nil {
		v.fail(err)
	}
	return l
}

func (v *view) str(key string) string { return v.lookup(key).str(key) }

func (v *view) has(key string) bool {
	x, ok := v.o[key]
	return ok && x != nil
}

// n makes a JSON number for the defaults tables.
func n(v int64) json.Number { return json.Number(strconv.FormatInt(v, 10)) }
