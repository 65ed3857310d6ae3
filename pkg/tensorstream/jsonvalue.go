package tensorstream

import (
	"encoding/json"
	"fmt"
	"unicode/utf8"
)

// JSONValue makes a value msgpack decoded generically (a header section or an
// annotation read into an any) encodable by encoding/json: maps with
// non-string keys get their keys printed, byte strings holding JSON (such as
// config.json) stay JSON, other UTF-8 byte strings become strings. It
// converts maps and slices in place.
func JSONValue(v any) any {
	switch x := v.(type) {
	case map[string]any:
		for k, e := range x {
			x[k] = JSONValue(e)
		}
		return x
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = JSONValue(e)
		}
		return m
	case []any:
		for i, e := range x {
			x[i] = JSONValue(e)
		}
		return x
	case []byte:
		if json.Valid(x) {
			return json.RawMessage(x)
		}
		if utf8.Valid(x) {
			return string(x)
		}
		return x
	}
	return v
}
