//go:build cuda

// Package cudainit checks that the CUDA driver finds a GPU before
// gorgonia.org/cu's package init does, which on failure prints on stdout (the
// stream) and exits. Go initializes, of the packages whose imports are done,
// the one first in import-path order: this one imports nothing cu does not,
// and sorts before it, so it runs first.
package cudainit

/*
#cgo LDFLAGS: -lcuda
#include <cuda.h>
*/
import "C"

import "os"

func init() {
	r := C.cuInit(0)
	if r == C.CUDA_SUCCESS {
		return
	}
	why := "error " + itoa(int(r))
	var s *C.char
	if C.cuGetErrorString(r, &s) == C.CUDA_SUCCESS && s != nil {
		why = C.GoString(s)
	}
	name := os.Args[0]
	for i := len(name) - 1; i >= 0; i-- {
		if name[i] == '/' {
			name = name[i+1:]
			break
		}
	}
	os.Stderr.WriteString(name + ": this is a CUDA build and the driver finds no usable GPU (" + why + "); on this machine use the CPU build (make build)\n")
	os.Exit(1)
}

func itoa(n int) string {
	if n == 0 {
		return "0"
	}
	var b []byte
	for ; n > 0; n /= 10 {
		b = append([]byte{byte('0' + n%10)}, b...)
	}
	return string(b)
}
