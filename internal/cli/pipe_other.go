//go:build !linux

package cli

import "os"

// GrowPipe does nothing outside Linux; see the Linux version.
func GrowPipe(f *os.File, size int) int { return 0 }

// umask is the usual mask outside Linux.
func umask() os.FileMode { return 0o022 }
