//go:build !unix

package cli

import "syscall"

// raise does nothing where a process cannot signal itself; the caller exits
// with 128+s instead.
func raise(syscall.Signal) {}
