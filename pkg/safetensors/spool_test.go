package safetensors

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"testing/iotest"

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
	defer ro.Close()
	w.spw = newSpoolWriter(ro)
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
