package progress_test

import (
	"fmt"
	"io"
	"strings"
	"sync/atomic"

	"github.com/nf4pipe/nf4pipe/pkg/progress"
)

// counter is a Meter that counts; internal/cli's progress line is another.
type counter struct {
	tensors atomic.Int64
	bytes   atomic.Int64
}

func (c *counter) Expect(int, int64) {}
func (c *counter) Tensor(string)     { c.tensors.Add(1) }
func (c *counter) Add(n int64)       { c.bytes.Add(n) }

// A stage tells its Meter of each tensor and counts the bytes it reads
// through progress.Reader; a nil Meter is allowed (progress.Or).
func ExampleReader() {
	var c counter
	var m progress.Meter = &c
	m.Tensor("model.embed_tokens.weight")
	n, _ := io.Copy(io.Discard, progress.Reader(m, strings.NewReader("sixteen bytes!!!")))
	fmt.Println(c.tensors.Load(), n, c.bytes.Load())

	progress.Or(nil).Add(1) // nobody listens
	// Output:
	// 1 16 16
}
