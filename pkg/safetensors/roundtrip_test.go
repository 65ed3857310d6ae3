package safetensors

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/fixtures"
	"github.com/stretchr/testify/require"
)

// modelFiles returns the transformers-written checkpoints of the test data:
// each model's source and 4-bit checkpoint in the repository's testdata, and
// those only ../shared/testdata holds when it is there.
func modelFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(fixtures.Path(t, "models"), "*", SingleFileName))
	require.NoError(t, err)
	require.Len(t, files, 2*len(fixtures.RepoModels), "the repository's models")
	for _, m := range fixtures.SharedModels {
		for _, name := range []string{m, m + "-bnb-nf4"} {
			files = append(files, fixtures.SharedGlob(t, filepath.Join("models", name, SingleFileName))...)
		}
	}
	return files
}

func loadAll(t *testing.T, path string) (*File, []Tensor) {
	t.Helper()
	f, err := OpenFile(path)
	require.NoError(t, err)
	t.Cleanup(func() { f.Close() })
	var ts []Tensor
	for _, ti := range f.Tensors {
		data, err := f.ReadTensor(ti.Name)
		require.NoError(t, err)
		ts = append(ts, Tensor{ti.Name, ti.DType, ti.Shape, data})
	}
	return f, ts
}

// TestReserializeModels is the main acceptance test: re-serializing every
// transformers-written checkpoint from its parsed tensors, given in a
// shuffled order, reproduces the file byte for byte, through each write path.
func TestReserializeModels(t *testing.T) {
	for _, path := range modelFiles(t) {
		name := filepath.Base(filepath.Dir(path))
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			f, ts := loadAll(t, path)
			rng := rand.New(rand.NewPCG(1, uint64(len(ts))))
			rng.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })

			got, err := Serialize(ts, f.Metadata)
			require.NoError(t, err)
			assertSameBytes(t, "Serialize", got, want)

			dir := t.TempDir()
			p := filepath.Join(dir, "planned.safetensors")
			require.NoError(t, WriteFile(p, ts, f.Metadata))
			got, _ = os.ReadFile(p)
			assertSameBytes(t, "WriteFile", got, want)

			p = filepath.Join(dir, "spooled.safetensors")
			w, err := NewWriter(p, f.Metadata)
			require.NoError(t, err)
			for _, x := range ts {
				require.NoError(t, w.Add(x.Name, x.DType, x.Shape, bytes.NewReader(x.Data)))
			}
			require.NoError(t, w.Close())
			got, _ = os.ReadFile(p)
			assertSameBytes(t, "Writer (spool)", got, want)
			assertOnly(t, dir, "planned.safetensors", "spooled.safetensors")
		})
	}
}

func assertSameBytes(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	lo := max(0, i-40)
	t.Fatalf("%s: output differs from the reference at byte %d (len %d vs %d)\n got: %q\nwant: %q",
		what, i, len(got), len(want), got[lo:min(len(got), i+40)], want[lo:min(len(want), i+40)])
}

// assertOnly checks that dir holds exactly the named files: no temporary or
// spool file left behind.
func assertOnly(t *testing.T, dir string, names ...string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var got []string
	for _, e := range ents {
		got = append(got, e.Name())
	}
	if len(got) != len(names) {
		t.Fatalf("%s holds %q, want %q", dir, got, names)
	}
	for i := range names {
		if got[i] != names[i] {
			t.Fatalf("%s holds %q, want %q", dir, got, names)
		}
	}
}

// TestRustGoldens checks the byte vectors asserted by the Rust crate's own
// unit tests (test_serialization, test_empty, test_serialization_forced_alignement).
func TestRustGoldens(t *testing.T) {
	f32 := func(vals ...float32) []byte {
		var b []byte
		for _, v := range vals {
			b = appendF32(b, v)
		}
		return b
	}
	data := f32(0, 1, 2, 3, 4, 5)
	cases := []struct {
		name   string
		ts     []Tensor
		meta   map[string]string
		header string
	}{
		{"one tensor", []Tensor{{"attn.0", F32, []int64{1, 2, 3}, data}}, nil,
			`{"attn.0":{"dtype":"F32","shape":[1,2,3],"data_offsets":[0,24]}}`},
		{"forced alignment", []Tensor{{"attn0", F32, []int64{1, 1, 2, 3}, data}}, nil,
			`{"attn0":{"dtype":"F32","shape":[1,1,2,3],"data_offsets":[0,24]}}       `},
		{"empty", nil, nil, `{}      `},
		{"empty with metadata", nil, map[string]string{"framework": "pt"}, `{"__metadata__":{"framework":"pt"}}     `},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Serialize(c.ts, c.meta)
			require.NoError(t, err)
			var want []byte
			want = append(want, byte(len(c.header)), 0, 0, 0, 0, 0, 0, 0)
			want = append(want, c.header...)
			for _, x := range c.ts {
				want = append(want, x.Data...)
			}
			assertSameBytes(t, "Serialize", got, want)
		})
	}
}

func appendF32(b []byte, v float32) []byte {
	u := mathFloat32bits(v)
	return append(b, byte(u), byte(u>>8), byte(u>>16), byte(u>>24))
}
