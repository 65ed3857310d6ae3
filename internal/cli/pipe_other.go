//go:build !linux

package cli

import "os"

// GrowPipe does nothing outside Linux; see the Linux version.
func GrowPipe(f *os.File, size int) int { return 0 }
