//go:build !linux

package tensorstream

import (
	"io"
	"os"
)

// spliceState is empty where there is no splice(2).
type spliceState struct{}

// spliceChunks moves nothing: WriteFrom copies through the chunk buffer.
func (w *Writer) spliceChunks(src *os.File, off, n int64) (int64, error) { return 0, nil }

// hint does nothing: there is nothing to checksum ahead of.
func (w *Writer) hint(src io.ReaderAt, off, n int64) {}

func (w *Writer) stopAhead() {}
