//go:build !linux

package tensorstream

import "os"

// spliceState is empty where there is no splice(2).
type spliceState struct{}

// spliceChunks moves nothing: WriteFrom copies through the chunk buffer.
func (w *Writer) spliceChunks(src *os.File, off, n int64) (int64, error) { return 0, nil }
