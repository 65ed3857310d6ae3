package tensorstream

import (
	"encoding/json"
	"testing"
)

func TestJSONValue(t *testing.T) {
	v := map[string]any{
		"config": []byte(`{"a": 1}`),
		"name":   []byte("llama"),
		"raw":    []byte{0xff, 0xfe},
		"ids":    map[any]any{int8(3): []any{[]byte("x"), 2.5}},
	}
	got, err := json.Marshal(JSONValue(v))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"config":{"a":1},"ids":{"3":["x",2.5]},"name":"llama","raw":"//4="}`
	if string(got) != want {
		t.Errorf("got %s\nwant %s", got, want)
	}
}
