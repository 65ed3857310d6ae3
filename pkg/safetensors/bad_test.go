package safetensors

import (
	"bufio"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"github.com/stretchr/testify/require"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
)

var update = flag.Bool("update", false, "rewrite testdata/bad/safetensors from the generators and the expected errors")

// raw builds a safetensors image with the header text as given (no padding).
func raw(header string, data []byte) []byte {
	b := binary.LittleEndian.AppendUint64(nil, uint64(len(header)))
	b = append(b, header...)
	return append(b, data...)
}

func zeros(n int) []byte { return make([]byte, n) }

// goodFile is a valid two-tensor file that the truncation cases cut short.
func goodFile() []byte {
	b, err := Serialize([]Tensor{
		{"a.weight", BF16, []int64{2, 4}, zeros(16)},
		{"b.scale", F32, []int64{2}, zeros(8)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		panic(err)
	}
	return b
}

type badCase struct {
	name string
	// files: relative path -> content; one entry is a single-file case, more
	// make a checkpoint directory named after the case.
	files map[string][]byte
	want  error
}

func one(b []byte) map[string][]byte { return map[string][]byte{"": b} }

func badCases() []badCase {
	good := goodFile()
	hlen := binary.LittleEndian.Uint64(good)
	shard := func(ts ...Tensor) []byte {
		b, err := Serialize(ts, map[string]string{"format": "pt"})
		if err != nil {
			panic(err)
		}
		return b
	}
	t1 := Tensor{"model.a", BF16, []int64{4}, zeros(8)}
	t2 := Tensor{"model.b", BF16, []int64{4}, zeros(8)}
	const f1, f2 = "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"
	index := func(wm string) []byte {
		return []byte(`{"metadata": {"total_size": 16}, "weight_map": {` + wm + `}}` + "\n")
	}
	return []badCase{
		{"truncated-data", one(good[:len(good)-5]), ErrTruncated},
		{"truncated-header", one(good[:8+hlen/2]), ErrTruncated},
		{"shorter-than-length", one([]byte{1, 2, 3, 4, 5}), ErrTruncated},
		{"header-length-beyond-file", one(append(binary.LittleEndian.AppendUint64(nil, 4096), `{}`...)), ErrTruncated},
		{"header-over-100MB", one(append(binary.LittleEndian.AppendUint64(nil, 100_000_001), `{}`...)), ErrHeader},
		{"header-length-2^64-1", one(append(binary.LittleEndian.AppendUint64(nil, 1<<64-1), `{}`...)), ErrHeader},
		{"invalid-json", one(raw(`{"a":{"dtype":"F32",`, nil)), ErrHeader},
		{"not-utf8", one(raw("{\"\xff\":{}}", nil)), ErrHeader},
		{"not-an-object", one(raw(`[]`, nil)), ErrHeader},
		{"trailing-garbage", one(raw(`{} x`, nil)), ErrHeader},
		{"missing-field", one(raw(`{"a":{"dtype":"F32","shape":[1]}}`, zeros(4))), ErrHeader},
		{"metadata-not-string", one(raw(`{"__metadata__":{"format":1}}`, nil)), ErrHeader},
		{"shape-not-integer", one(raw(`{"a":{"dtype":"F32","shape":[1.5],"data_offsets":[0,4]}}`, zeros(4))), ErrHeader},
		{"unknown-dtype", one(raw(`{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,16]}}`, zeros(16))), ErrDType},
		{"size-mismatch", one(raw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, zeros(8))), ErrShape},
		{"negative-shape", one(raw(`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}`, zeros(4))), ErrShape},
		{"shape-overflow", one(raw(`{"a":{"dtype":"F32","shape":[4294967296,4294967296,16],"data_offsets":[0,4]}}`, zeros(4))), ErrShape},
		{"shape-beyond-u64", one(raw(`{"a":{"dtype":"U8","shape":[18446744073709551616],"data_offsets":[0,1]}}`, zeros(1))), ErrShape},
		{"negative-offset", one(raw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[-1,0]}}`, zeros(1))), ErrOffsets},
		{"overlapping-offsets", one(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, zeros(12))), ErrOffsets},
		{"gap-between-offsets", one(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[12,20]}}`, zeros(20))), ErrOffsets},
		{"offsets-out-of-range", one(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[1000,1008]}}`, zeros(8))), ErrOffsets},
		{"end-before-start", one(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}}`, zeros(8))), ErrOffsets},
		{"offsets-past-end", one(raw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, zeros(8))), ErrTruncated},
		{"uncovered-trailing-bytes", one(raw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, zeros(12))), ErrOffsets},
		{"duplicate-name", one(raw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, zeros(2))), ErrDuplicate},
		{"missing-shard", map[string][]byte{
			IndexFileName: index(`"model.a": "` + f1 + `", "model.b": "` + f2 + `"`),
			f1:            shard(t1),
		}, ErrMissingShard},
		{"index-tensor-not-in-shard", map[string][]byte{
			IndexFileName: index(`"model.a": "` + f1 + `", "model.b": "` + f2 + `", "model.c": "` + f2 + `"`),
			f1:            shard(t1),
			f2:            shard(t2),
		}, ErrIndex},
		{"shard-tensor-not-in-index", map[string][]byte{
			IndexFileName: index(`"model.a": "` + f1 + `"`),
			f1:            shard(t1, t2),
		}, ErrIndex},
		{"duplicate-across-shards", map[string][]byte{
			IndexFileName: index(`"model.a": "` + f1 + `", "model.b": "` + f2 + `"`),
			f1:            shard(t1),
			f2:            shard(t1, t2),
		}, ErrDuplicate},
		{"index-duplicate-key", map[string][]byte{
			IndexFileName: index(`"model.a": "` + f1 + `", "model.a": "` + f1 + `"`),
			f1:            shard(t1),
		}, ErrDuplicate},
		{"index-path-escape", map[string][]byte{
			IndexFileName: index(`"model.a": "../` + f1 + `"`),
			f1:            shard(t1),
		}, ErrIndex},
		{"index-invalid-json", map[string][]byte{
			IndexFileName: []byte(`{"weight_map": {"model.a": }`),
			f1:            shard(t1),
		}, ErrIndex},
		{"several-files-no-index", map[string][]byte{
			f1: shard(t1),
			f2: shard(t2),
		}, ErrIndex},
	}
}

// casePath returns where a case lives under testdata/bad/safetensors.
func (c badCase) path(root string) string {
	if _, single := c.files[""]; single {
		return filepath.Join(root, c.name+".safetensors")
	}
	return filepath.Join(root, c.name)
}

func writeCase(t *testing.T, root string, c badCase) {
	t.Helper()
	p := c.path(root)
	if data, single := c.files[""]; single {
		require.NoError(t, os.WriteFile(p, data, 0o644))
		return
	}
	require.NoError(t, os.MkdirAll(p, 0o755))
	for name, data := range c.files {
		require.NoError(t, os.WriteFile(filepath.Join(p, name), data, 0o644))
	}
}

const expectedName = "expected-errors.txt"

// TestHostileFiles opens every case of testdata/bad/safetensors (files made
// by badCases; -update rewrites them and the expected first lines) and checks
// the sentinel and the exact one-line message.
func TestHostileFiles(t *testing.T) {
	root := filepath.Join(fixtures.Root(t), "testdata", "bad", "safetensors")
	cases := badCases()
	if *update {
		os.RemoveAll(root)
		require.NoError(t, os.MkdirAll(root, 0o755))
		for _, c := range cases {
			writeCase(t, root, c)
		}
	}
	expected := map[string]string{}
	if !*update {
		f, err := os.Open(filepath.Join(root, expectedName))
		require.NoError(t, err)
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			name, line, ok := strings.Cut(sc.Text(), "\t")
			if ok {
				expected[name] = line
			}
		}
		f.Close()
	}
	var out strings.Builder
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ck, err := Open(c.path(root))
			if err == nil {
				ck.Close()
				t.Fatalf("opened without error; want %v", c.want)
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("error %q does not wrap %v", err, c.want)
			}
			msg := strings.ReplaceAll(err.Error(), root+string(filepath.Separator), "")
			if strings.Contains(msg, "\n") {
				t.Fatalf("error spans several lines: %q", msg)
			}
			fmt.Fprintf(&out, "%s\t%s\n", c.name, msg)
			if !*update && expected[c.name] != msg {
				t.Errorf("error line changed:\n got: %s\nwant: %s\n(run go test -update after checking)", msg, expected[c.name])
			}
		})
	}
	if *update {
		require.NoError(t, os.WriteFile(filepath.Join(root, expectedName), []byte(out.String()), 0o644))
	}
}

// TestHostileFixturesCurrent checks that the committed fixtures are what the
// generators make, so the two cannot drift apart.
func TestHostileFixturesCurrent(t *testing.T) {
	root := fixtures.Path(t, "bad", "safetensors")
	for _, c := range badCases() {
		for name, want := range c.files {
			p := c.path(root)
			if name != "" {
				p = filepath.Join(p, name)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%v (run go test -update)", err)
			}
			if string(got) != string(want) {
				t.Errorf("%s differs from its generator (run go test -update)", p)
			}
		}
	}
}
