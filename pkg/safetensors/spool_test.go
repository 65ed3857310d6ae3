package safetensors

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"testing/iotest"
	"time"

	"github.com/stretchr/testify/require"
)

// The spool holds what ReadFrom was given, in order, whatever the sizes of
// the pieces and of the reads relative to the buffers.
func TestSpoolWriterKeepsOrder(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "spool"))
	require.NoError(t, err)
	defer f.Close()
	s := newSpoolWriter(f)
	rng := rand.NewChaCha8([32]byte{1})
	var want bytes.Buffer
	sizes := []int{0, 1, spoolBufSize - 1, 1, spoolBufSize, 3*spoolBufSize + 7, 64, spoolBufs * spoolBufSize, 5}
	for i, n := range sizes {
		p := make([]byte, n)
		rng.Read(p)
		want.Write(p)
		var r io.Reader = bytes.NewReader(p)
		if i%2 == 1 {
			r = iotest.HalfReader(r)
		}
		got, err := s.ReadFrom(r)
		require.NoError(t, err)
		require.EqualValues(t, n, got)
	}
	require.NoError(t, s.finish())
	require.NoError(t, s.finish(), "a second finish")
	data, err := os.ReadFile(f.Name())
	require.NoError(t, err)
	require.True(t, bytes.Equal(want.Bytes(), data), "spool differs from the input")
}

// A failed write in the spooling goroutine reaches the caller: at a later
// ReadFrom, or at finish.
func TestSpoolWriterWriteError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "spool")
	require.NoError(t, os.WriteFile(p, nil, 0o600))
	f, err := os.Open(p) // read-only: every write fails
	require.NoError(t, err)
	defer f.Close()
	s := newSpoolWriter(f)
	_, err = s.ReadFrom(bytes.NewReader(make([]byte, (spoolBufs+2)*spoolBufSize)))
	if err == nil {
		err = s.finish()
	} else {
		s.finish()
	}
	require.Error(t, err)
	require.True(t, errors.Is(err, syscall.EBADF), "got %v", err)
}

// Writer.Add reports a spool write failure with the tensor's name.
func TestWriterSpoolWriteError(t *testing.T) {
	dir := t.TempDir()
	w, err := NewWriter(filepath.Join(dir, "m.safetensors"), nil)
	require.NoError(t, err)
	// Swap the spool for a read-only file so that the goroutine's writes fail.
	w.spw.finish()
	ro, err := os.Open(w.spool.Name())
	require.NoError(t, err)
	rw := w.spool
	defer rw.Close()
	w.spool, w.spw = ro, newSpoolWriter(ro) // Abort closes and removes ro
	err = w.Add("big", U8, []int64{int64(spoolBufs+2) * spoolBufSize}, bytes.NewReader(make([]byte, (spoolBufs+2)*spoolBufSize)))
	if err == nil {
		err = w.Close()
	} else {
		w.Abort()
	}
	require.Error(t, err)
	require.True(t, errors.Is(err, syscall.EBADF), "got %v", err)
	left, _ := filepath.Glob(filepath.Join(dir, "*"))
	hidden, _ := filepath.Glob(filepath.Join(dir, ".*"))
	require.Empty(t, append(left, hidden...), "files left behind")
}

// While payloads are spooled, the final file is allocated as far as the spool
// is written, in whole steps, never beyond; Close still writes exactly the
// file Serialize makes.
func TestWriterPreallocatesFinalFile(t *testing.T) {
	for _, cores := range []int{minCoresToRead, 0} {
		t.Run(fmt.Sprintf("read_from_%d_cores", cores), func(t *testing.T) {
			defer func(n int) { minCoresToRead = n }(minCoresToRead)
			minCoresToRead = cores
			testWriterPreallocates(t)
		})
	}
}

func testWriterPreallocates(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	w, err := NewWriter(p, map[string]string{"format": "pt"})
	require.NoError(t, err)
	n := int64(2*preallocStep + preallocStep/2)
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{2}).Read(data)
	require.NoError(t, w.Add("w", U8, []int64{n}, bytes.NewReader(data)))
	require.NoError(t, w.Add("b", BF16, []int64{3}, bytes.NewReader([]byte{1, 2, 3, 4, 5, 6})))
	// The preallocation runs behind the spool; wait for it, then stop it as
	// Close does.
	size := func() int64 {
		st, err := w.out.Stat()
		require.NoError(t, err)
		return st.Size()
	}
	for deadline := time.Now().Add(10 * time.Second); size() < 2*preallocStep && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, w.spw.finish())
	if size() == 0 {
		t.Skip("the file system of the test's temporary directory does not fallocate")
	}
	require.EqualValues(t, 2*preallocStep, size(), "allocated as far as the spool in whole steps")
	require.NoError(t, w.Close())
	got, err := os.ReadFile(p)
	require.NoError(t, err)
	want, err := Serialize([]Tensor{{"w", U8, []int64{n}, data}, {"b", BF16, []int64{3}, []byte{1, 2, 3, 4, 5, 6}}}, map[string]string{"format": "pt"})
	require.NoError(t, err)
	require.True(t, bytes.Equal(want, got), "assembled file differs from Serialize")
	left, _ := filepath.Glob(filepath.Join(dir, ".*"))
	require.Empty(t, left, "temporary files left behind")
}

// release gives the preallocated space back (for a spool out of space) and
// says whether there was any; stop and release may be called again.
func TestPreallocatorRelease(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	require.NoError(t, err)
	defer f.Close()
	p := newPreallocator(f)
	p.grow(preallocStep - 1)
	p.grow(3*preallocStep + 5)
	alloc := p.complete()
	if alloc == 0 {
		t.Skip("the file system of the test's temporary directory does not fallocate")
	}
	require.EqualValues(t, 3*preallocStep, alloc)
	require.EqualValues(t, alloc, p.stop())
	require.EqualValues(t, alloc, p.complete())
	require.True(t, p.release())
	st, err := f.Stat()
	require.NoError(t, err)
	require.Zero(t, st.Size())
	require.False(t, p.release(), "nothing left to give back")
}
