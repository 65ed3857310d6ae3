package safetensors

import (
	"bytes"
	"errors"
	"fmt"
	"github.com/stretchr/testify/require"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func u8(name string, n int64) TensorSpec { return TensorSpec{name, U8, []int64{n}} }

func planNames(p *ShardPlan) [][]string {
	var out [][]string
	for _, s := range p.Shards {
		var names []string
		for _, t := range s.Tensors {
			names = append(names, t.Name)
		}
		out = append(out, names)
	}
	return out
}

func TestPlanShards(t *testing.T) {
	cases := []struct {
		name  string
		sizes []int64
		max   int64
		want  string
	}{
		// huggingface_hub's docstring example: [6,6,2,6,2,2] under 10 -> [6] [6+2] [6+2+2].
		{"hub docstring", []int64{6, 6, 2, 6, 2, 2}, 10, "[[t0] [t1 t2] [t3 t4 t5]]"},
		// An oversized tensor gets its own shard, appended before the one being filled.
		{"oversized goes first", []int64{1, 1, 5, 1}, 3, "[[t2] [t0 t1 t3]]"},
		{"exact fit stays", []int64{5, 5}, 10, "[[t0 t1]]"},
		{"one over splits", []int64{5, 6}, 10, "[[t0] [t1]]"},
		{"all oversized", []int64{11, 12}, 10, "[[t0] [t1]]"},
		{"empty", nil, 10, "[[]]"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var specs []TensorSpec
			var total int64
			for i, s := range c.sizes {
				specs = append(specs, u8(fmt.Sprintf("t%d", i), s))
				total += s
			}
			p, err := PlanShards(specs, c.max)
			require.NoError(t, err)
			if got := fmt.Sprint(planNames(p)); got != c.want {
				t.Errorf("shards %s, want %s", got, c.want)
			}
			if p.TotalSize != total {
				t.Errorf("total size %d, want %d", p.TotalSize, total)
			}
			for i, s := range p.Shards {
				want := SingleFileName
				if len(p.Shards) > 1 {
					want = fmt.Sprintf("model-%05d-of-%05d.safetensors", i+1, len(p.Shards))
				}
				if s.File != want {
					t.Errorf("shard %d named %s, want %s", i, s.File, want)
				}
			}
		})
	}
	if _, err := PlanShards([]TensorSpec{u8("a", 1), u8("a", 1)}, 10); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate names: got %v, want ErrDuplicate", err)
	}
	if _, err := PlanShards([]TensorSpec{{"a", "X9", []int64{1}}}, 10); !errors.Is(err, ErrDType) {
		t.Errorf("bad dtype: got %v, want ErrDType", err)
	}
}

func TestIndexMarshal(t *testing.T) {
	p, err := PlanShards([]TensorSpec{u8("model.b", 8), u8("model.a", 8), u8("caf\u00e9.\U0001F600", 1)}, 10)
	require.NoError(t, err)
	got, err := p.Index(7).Marshal()
	require.NoError(t, err)
	// What Python's json.dumps(index, indent=2, sort_keys=True) + "\n" gives.
	want := `{
  "metadata": {
    "total_parameters": 7,
    "total_size": 17
  },
  "weight_map": {
    "caf\u00e9.\ud83d\ude00": "model-00002-of-00002.safetensors",
    "model.a": "model-00002-of-00002.safetensors",
    "model.b": "model-00001-of-00002.safetensors"
  }
}
`
	if string(got) != want {
		t.Errorf("index:\n%s\nwant:\n%s", got, want)
	}
	ix, err := ParseIndex(got)
	require.NoError(t, err)
	again, err := ix.Marshal()
	if err != nil || !bytes.Equal(again, got) {
		t.Errorf("parse -> marshal changed the index (%v):\n%s", err, again)
	}
	empty, _ := (&Index{WeightMap: map[string]string{}}).Marshal()
	if string(empty) != "{\n  \"metadata\": {},\n  \"weight_map\": {}\n}\n" {
		t.Errorf("empty index: %q", empty)
	}
}

func TestParseSize(t *testing.T) {
	good := map[string]int64{
		"5GB": 5_000_000_000, "500MB": 500_000_000, "2GiB": 2 << 30, "10KB": 10_000,
		"1.5GB": 1_500_000_000, " 3 gb ": 3_000_000_000, "2TB": 2_000_000_000_000,
		"512MiB": 512 << 20, "64KiB": 64 << 10, "1TiB": 1 << 40, "1000": 1000, "100B": 100,
		"5Gb": 5_000_000_000, // huggingface_hub upper-cases the unit
	}
	for s, want := range good {
		got, err := ParseSize(s)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "GB", "5XB", "-1GB", "0", "0GB", "inf GB", "NaNGB", "1e30TB", "0x10GB", "five GB", "5 G"} {
		if got, err := ParseSize(s); !errors.Is(err, ErrSize) {
			t.Errorf("ParseSize(%q) = %d, %v; want ErrSize", s, got, err)
		}
	}
}

// TestShardedRoundTrip splits a real checkpoint into shards, writes them with
// tensors arriving in a shuffled order, opens the directory and compares
// every payload, the index bytes and each shard's bytes.
func TestShardedRoundTrip(t *testing.T) {
	src := modelFiles(t)[0] // gemma2-bnb-nf4: F32, BF16 and U8 tensors
	f, ts := loadAll(t, src)
	specs := make([]TensorSpec, len(ts))
	for i, x := range ts {
		specs[i] = TensorSpec{x.Name, x.DType, x.Shape}
	}
	const maxShard = 100_000
	plan, err := PlanShards(specs, maxShard)
	require.NoError(t, err)
	if len(plan.Shards) < 3 {
		t.Fatalf("want several shards for the test to mean something, got %d", len(plan.Shards))
	}
	dir := t.TempDir()
	cw := NewCheckpointWriter(dir, plan, f.Metadata, plan.Index(12345))
	order := slices.Clone(ts)
	rand.New(rand.NewPCG(7, 7)).Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, x := range order {
		require.NoError(t, cw.Add(x.Name, x.DType, x.Shape, bytes.NewReader(x.Data)))
	}
	require.NoError(t, cw.Close())
	var names []string
	for _, s := range plan.Shards {
		names = append(names, s.File)
		if s.Size > maxShard && len(s.Tensors) > 1 {
			t.Errorf("%s: %d bytes in %d tensors, over the limit", s.File, s.Size, len(s.Tensors))
		}
	}
	names = append(names, IndexFileName)
	slices.Sort(names)
	assertOnly(t, dir, names...)

	wantIndex, _ := plan.Index(12345).Marshal()
	gotIndex, _ := os.ReadFile(filepath.Join(dir, IndexFileName))
	assertSameBytes(t, "index", gotIndex, wantIndex)

	ck, err := Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	if len(ck.Tensors()) != len(ts) || len(ck.Files) != len(plan.Shards) {
		t.Fatalf("reopened: %d tensors in %d files, want %d in %d", len(ck.Tensors()), len(ck.Files), len(ts), len(plan.Shards))
	}
	for _, x := range ts {
		ti, ok := ck.Tensor(x.Name)
		if !ok {
			t.Fatalf("tensor %q missing after the round trip", x.Name)
		}
		got := make([]byte, ti.Size())
		if _, err := ck.Section(ti).ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, x.Data) || ti.DType != x.DType || !equalShape(ti.Shape, x.Shape) {
			t.Errorf("tensor %q changed in the round trip", x.Name)
		}
		if filepath.Base(ti.File) != plan.Shards[mustShard(t, plan, x.Name)].File {
			t.Errorf("tensor %q in %s, planned for another shard", x.Name, ti.File)
		}
	}
	// Each shard is what Python would write for its tensors.
	for _, s := range plan.Shards {
		var sts []Tensor
		for _, spec := range s.Tensors {
			for _, x := range ts {
				if x.Name == spec.Name {
					sts = append(sts, x)
				}
			}
		}
		want, _ := Serialize(sts, f.Metadata)
		got, _ := os.ReadFile(filepath.Join(dir, s.File))
		assertSameBytes(t, s.File, got, want)
	}
	// Deterministic listing: shards in index order, data order inside each.
	var prev TensorInfo
	for i, ti := range ck.Tensors() {
		if i > 0 && ti.Shard == prev.Shard && ti.Begin < prev.End {
			t.Errorf("listing not in data order at %q", ti.Name)
		}
		if i > 0 && ti.Shard < prev.Shard {
			t.Errorf("listing not in shard order at %q", ti.Name)
		}
		prev = ti
	}
	byName := ck.TensorsByName()
	if !slices.IsSortedFunc(byName, func(a, b TensorInfo) int { return strings.Compare(a.Name, b.Name) }) {
		t.Error("TensorsByName is not sorted")
	}
}

func mustShard(t *testing.T, p *ShardPlan, name string) int {
	i, ok := p.ShardOf(name)
	if !ok {
		t.Fatalf("tensor %q not in the plan", name)
	}
	return i
}

// TestCheckpointWriterFailure: a failed or aborted checkpoint leaves nothing,
// not even the shards already finished.
func TestCheckpointWriterFailure(t *testing.T) {
	specs := []TensorSpec{u8("a", 8), u8("b", 8), u8("c", 8)}
	plan, err := PlanShards(specs, 10)
	require.NoError(t, err)
	t.Run("short payload", func(t *testing.T) {
		dir := t.TempDir()
		cw := NewCheckpointWriter(dir, plan, nil, nil)
		require.NoError(t, cw.Add("a", U8, []int64{8}, bytes.NewReader(make([]byte, 8))))
		if err := cw.Add("b", U8, []int64{8}, bytes.NewReader(make([]byte, 3))); err == nil {
			t.Fatal("short payload accepted")
		}
		if err := cw.Close(); err == nil {
			t.Fatal("Close after a failure succeeded")
		}
		assertOnly(t, dir)
	})
	t.Run("missing tensor", func(t *testing.T) {
		dir := t.TempDir()
		cw := NewCheckpointWriter(dir, plan, nil, nil)
		for _, n := range []string{"a", "b"} {
			require.NoError(t, cw.Add(n, U8, []int64{8}, bytes.NewReader(make([]byte, 8))))
		}
		if err := cw.Close(); !errors.Is(err, ErrIncomplete) {
			t.Fatalf("Close with a tensor missing: %v, want ErrIncomplete", err)
		}
		assertOnly(t, dir)
	})
	t.Run("unknown tensor", func(t *testing.T) {
		dir := t.TempDir()
		cw := NewCheckpointWriter(dir, plan, nil, nil)
		if err := cw.Add("zz", U8, []int64{8}, bytes.NewReader(make([]byte, 8))); !errors.Is(err, ErrNotFound) {
			t.Fatalf("unplanned tensor: %v, want ErrNotFound", err)
		}
		cw.Abort()
		assertOnly(t, dir)
	})
	t.Run("abort", func(t *testing.T) {
		dir := t.TempDir()
		cw := NewCheckpointWriter(dir, plan, nil, nil)
		require.NoError(t, cw.Add("a", U8, []int64{8}, bytes.NewReader(make([]byte, 8))))
		cw.Abort()
		assertOnly(t, dir)
	})
}
