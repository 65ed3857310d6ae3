//go:build !linux

package safetensors

import (
	"errors"
	"os"
)

// startWriteback does nothing where sync_file_range is missing: fsync at
// Close writes the whole file.
func startWriteback(f *os.File, off, n int64) {}

// punchHole does nothing: the spool's space is freed when it is removed.
func punchHole(f *os.File, off, n int64) {}

// preallocate is not done: the copy allocates as it goes.
func preallocate(f *os.File, off, n int64) error { return errors.ErrUnsupported }

// allocatesPages: nothing is preallocated.
func allocatesPages(f *os.File) bool { return true }
