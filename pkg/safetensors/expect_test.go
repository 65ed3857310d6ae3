package safetensors

import (
	"bytes"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// expectCase is a way the tensors a Writer was told to expect can differ
// from those that arrive, with how much should go straight to its place.
type expectCase struct {
	name string
	// expected returns the specs for Expect from the tensors in file order.
	expected func(ts []Tensor) []Expected
	// arrival reorders the tensors (file order on entry).
	arrival func(ts []Tensor, rng *rand.Rand)
	// allDirect: every byte should go straight to its place.
	allDirect bool
}

func exactly(ts []Tensor) []Expected {
	var out []Expected
	for _, x := range ts {
		out = append(out, Expected{TensorSpec{x.Name, x.DType, x.Shape}, true})
	}
	return out
}

func inFileOrder([]Tensor, *rand.Rand) {}

func shuffled(ts []Tensor, rng *rand.Rand) {
	rng.Shuffle(len(ts), func(i, j int) { ts[i], ts[j] = ts[j], ts[i] })
}

var expectCases = []expectCase{
	{"exact, file order", exactly, inFileOrder, true},
	{"exact, shuffled", exactly, shuffled, false},
	{"exact, reversed", exactly, func(ts []Tensor, _ *rand.Rand) { slices.Reverse(ts) }, false},
	// U8 tensors' sizes guessed 3 bytes long, as place guesses quant-state
	// JSON lengths: in file order each arrives before the tensors after it.
	{"U8 sizes guessed wrong, file order", func(ts []Tensor) []Expected {
		out := exactly(ts)
		for i := range out {
			if out[i].DType == U8 && len(out[i].Shape) == 1 {
				out[i].Shape, out[i].Exact = []int64{out[i].Shape[0] + 3}, false
			}
		}
		return out
	}, inFileOrder, false},
	{"a tensor expected that never comes", func(ts []Tensor) []Expected {
		return append(exactly(ts), Expected{TensorSpec{"zz.extra", F32, []int64{3}}, true})
	}, inFileOrder, false},
	{"a tensor comes that was not expected", func(ts []Tensor) []Expected {
		return exactly(ts[1:])
	}, inFileOrder, false},
	{"an exact size that is wrong", func(ts []Tensor) []Expected {
		out := exactly(ts)
		i := len(out) / 2
		out[i].Shape = append(slices.Clone(out[i].Shape), 1, 1)
		out[i].Shape[0]++
		return out
	}, inFileOrder, false},
	{"nothing expected", func([]Tensor) []Expected { return nil }, inFileOrder, false},
}

// A Writer told what to expect writes the same bytes as Serialize whatever
// arrives, in whatever order; given exactly what arrives, in the file's
// order, it writes every payload straight to its place and spools nothing.
func TestWriterExpect(t *testing.T) {
	for _, path := range modelFiles(t) {
		name := filepath.Base(filepath.Dir(path))
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(path)
			require.NoError(t, err)
			f, ts := loadAll(t, path) // file order
			var total int64
			for _, x := range ts {
				total += int64(len(x.Data))
			}
			for ci, c := range expectCases {
				dir := t.TempDir()
				p := filepath.Join(dir, "m.safetensors")
				w, err := NewWriter(p, f.Metadata)
				require.NoError(t, err)
				require.NoError(t, w.Expect(c.expected(ts)), c.name)
				arrival := slices.Clone(ts)
				c.arrival(arrival, rand.New(rand.NewPCG(uint64(ci), uint64(len(ts)))))
				for _, x := range arrival {
					require.NoError(t, w.Add(x.Name, x.DType, x.Shape, bytes.NewReader(x.Data)), c.name)
				}
				direct := w.DirectBytes()
				require.NoError(t, w.Close(), c.name)
				got, _ := os.ReadFile(p)
				assertSameBytes(t, c.name, got, want)
				assertOnly(t, dir, "m.safetensors")
				if c.allDirect {
					require.Equal(t, total, direct, "%s: bytes written straight to their place", c.name)
				}
			}
		})
	}
}

// With guessed sizes, a tensor after a guessed one in the file waits in the
// spool until the guessed one has arrived; everything else goes direct.
func TestWriterExpectGuessed(t *testing.T) {
	ts := []Tensor{
		{"a.weight", F32, []int64{4}, bytes.Repeat([]byte{1}, 16)},
		{"b.state", U8, []int64{5}, []byte("{\"x\"}")},
		{"c.weight", U8, []int64{64}, bytes.Repeat([]byte{3}, 64)},
	}
	want, err := Serialize(ts, map[string]string{"format": "pt"})
	require.NoError(t, err)
	exp := exactly(ts)
	exp[1].Shape, exp[1].Exact = []int64{7}, false // a guess, 2 bytes long
	for _, order := range [][]int{{0, 1, 2}, {0, 2, 1}, {2, 1, 0}} {
		dir := t.TempDir()
		p := filepath.Join(dir, "m.safetensors")
		w, err := NewWriter(p, map[string]string{"format": "pt"})
		require.NoError(t, err)
		require.NoError(t, w.Expect(exp))
		for _, i := range order {
			require.NoError(t, w.Add(ts[i].Name, ts[i].DType, ts[i].Shape, bytes.NewReader(ts[i].Data)))
		}
		wantDirect := int64(16 + 5 + 64)
		if order[1] == 2 || order[0] == 2 { // c before b: c spooled
			wantDirect -= 64
		}
		require.Equal(t, wantDirect, w.DirectBytes(), "order %v", order)
		require.NoError(t, w.Close())
		got, _ := os.ReadFile(p)
		assertSameBytes(t, "order", got, want)
		assertOnly(t, dir, "m.safetensors")
	}
}

// Expect refuses what it cannot use, and comes before the first Add.
func TestWriterExpectMisuse(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(filepath.Join(dir, "m.safetensors"), nil)
	require.NoError(t, err)
	err = w.Expect([]Expected{{TensorSpec{"a", F32, []int64{1}}, true}, {TensorSpec{"a", F32, []int64{1}}, true}})
	require.ErrorIs(t, err, ErrDuplicate)
	require.NoError(t, w.Add("a", F32, []int64{1}, bytes.NewReader(make([]byte, 4))))
	err = w.Expect(nil)
	require.ErrorIs(t, err, ErrIncomplete)
	require.True(t, strings.Contains(err.Error(), "before"), err.Error())
	require.NoError(t, w.Close())
	planned, err := NewWriterFor(filepath.Join(dir, "p.safetensors"), nil, nil)
	require.NoError(t, err)
	require.ErrorIs(t, planned.Expect(nil), ErrIncomplete)
	planned.Abort()
}

// Abort of an expecting writer leaves nothing, also after direct writes.
func TestWriterExpectAbort(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(filepath.Join(dir, "m.safetensors"), nil)
	require.NoError(t, err)
	ts := []Tensor{{"a", U8, []int64{3 << 20}, make([]byte, 3<<20)}, {"b", U8, []int64{5}, make([]byte, 5)}}
	require.NoError(t, w.Expect(exactly(ts)))
	require.NoError(t, w.Add("a", U8, []int64{3 << 20}, bytes.NewReader(ts[0].Data)))
	require.Equal(t, int64(3<<20), w.DirectBytes())
	require.NoError(t, w.Abort())
	assertOnly(t, dir)
}
