package cli

import (
	"os"
	"runtime"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestGrowPipe(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer r.Close()
	defer w.Close()
	if runtime.GOOS != "linux" {
		assert.Zero(t, GrowPipe(w, 1<<20))
		return
	}
	assert.GreaterOrEqual(t, GrowPipe(w, 256<<10), 256<<10)
	f, err := os.CreateTemp(t.TempDir(), "x")
	require.NoError(t, err)
	defer f.Close()
	assert.Zero(t, GrowPipe(f, 1<<20), "not a pipe")
}
