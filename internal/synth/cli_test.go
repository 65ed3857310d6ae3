package synth

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nf4pipe/nf4pipe/internal/cli"
	"github.com/nf4pipe/nf4pipe/pkg/safetensors"
	"github.com/nf4pipe/nf4pipe/pkg/tensorstream"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	app := App()
	app.Writer, app.ErrWriter = &out, &errb
	code := cli.Run(app, nil, append([]string{"synth"}, args...))
	return code, out.String(), errb.String()
}

func TestCLIModel(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "m")
	code, _, errs := run(t, "model", "--preset", "tiny", "--layers", "3", "--max-shard-size", "50kB", dir)
	require.Equal(t, 0, code, errs)
	ck, err := safetensors.Open(dir)
	require.NoError(t, err)
	defer ck.Close()
	_, ok := ck.Tensor("model.layers.2.mlp.down_proj.weight")
	assert.True(t, ok, "--layers 3 gives layer 2")
	assert.NotNil(t, ck.Index, "50kB shards")

	code, _, errs = run(t, "model", "--preset", "nope", dir)
	assert.Equal(t, cli.ExitUsage, code)
	assert.Contains(t, errs, "unknown preset")
	code, _, _ = run(t, "model")
	assert.Equal(t, cli.ExitUsage, code)
}

func TestCLIStream(t *testing.T) {
	code, out, errs := run(t, "stream", "--gib", "0.001", "--tensor-mib", "1", "--cols", "512")
	require.Equal(t, 0, code, errs)
	r := tensorstream.NewReader(strings.NewReader(out))
	_, err := r.Header()
	require.NoError(t, err)
	n := 0
	for {
		if _, err := r.Next(); err != nil {
			break
		}
		n++
	}
	// 0.001 GiB is 1 MiB and 24.6 rows of 1 KiB more: two tensors, the last whole rows.
	assert.Equal(t, int64(2), r.End().Tensors)
	assert.Equal(t, int64(1<<20+24*1024), r.End().Bytes)
	assert.Equal(t, 2, n)
}

func TestCLIRSS(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("needs /bin/sh")
	}
	file := filepath.Join(t.TempDir(), "rss.txt")
	code, _, _ := run(t, "rss", "-o", file, "-l", "ok", "--", "/bin/sh", "-c", "true")
	require.Equal(t, 0, code)
	code, _, errs := run(t, "rss", "-o", file, "-l", "bad", "--", "/bin/sh", "-c", "exit 4")
	assert.Equal(t, 4, code, "the command's status is passed on")
	assert.Contains(t, errs, "exited with status 4")
	data, err := os.ReadFile(file)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 2)
	assert.Regexp(t, `^ok peak_rss_mib=[0-9.]+ wall_s=[0-9.]+ user_s=[0-9.]+ sys_s=[0-9.]+ exit=0$`, lines[0])
	assert.True(t, strings.HasPrefix(lines[1], "bad ") && strings.HasSuffix(lines[1], "exit=4"), lines[1])
}
