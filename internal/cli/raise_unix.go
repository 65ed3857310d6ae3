//go:build unix

package cli

import (
	"os"
	"syscall"
)

// raise sends s to this process.
func raise(s syscall.Signal) { syscall.Kill(os.Getpid(), s) }
