//go:build cuda

// Package cudainit initializes the CUDA driver when a GPU is first asked
// for, not when the process starts.
//
// gorgonia.org/cu calls cuInit in its package init, before main (and exits
// when it fails), so every CUDA-build process paid the driver's start-up,
// 150-200 ms on an H200 host, even one that used no GPU. cuinit.c defines a
// cuInit of its own that does nothing. The host linker binds an undefined
// reference of the executable's C objects to a definition in another of its
// objects rather than to a shared library's, so cu's call lands in ours and
// the driver's is not called at start-up. Ours is hidden: Go links with
// -rdynamic, and exported it could be bound by the driver library itself.
// Init calls the driver's, found with dlsym(RTLD_NEXT, "cuInit"), once.
//
// Until Init, every driver call fails with CUDA_ERROR_NOT_INITIALIZED, so
// each function of package gpu that reaches the driver without a context
// calls Init first. The mechanism needs cuInit called by that name from C
// code that the host linker links into the executable (cgo's external
// linking, which cu's cgo imposes). It would break if cu looked cuInit up at
// run time (dlsym, cuGetProcAddress) or cuda.h renamed it (as it does the
// _v2 functions), and other C code linked in that relies on its own cuInit
// call (it gets the no-op too) would need Init first. TestCuInitIsOurs
// (package gpu) checks a binary: cuInit defined in it, neither imported
// from the driver nor exported to it.
package cudainit

/*
#cgo LDFLAGS: -lcuda -ldl
#include <cuda.h>

int nf4_real_cuInit(unsigned int flags, CUresult *r);
*/
import "C"

import (
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
)

var (
	once sync.Once
	err  error
	done atomic.Bool
)

// Init initializes the CUDA driver, once per process; every call returns
// the first call's result: nil, or the driver's reason in one line (such as
// "no CUDA-capable device is detected"). It may be called from any
// goroutine: cuInit is process-wide, not per thread.
func Init() error {
	once.Do(func() {
		var r C.CUresult
		switch {
		case C.nf4_real_cuInit(0, &r) == 0:
			err = errors.New("the CUDA driver library has no cuInit")
		case r != C.CUDA_SUCCESS:
			err = errors.New(errorString(r))
		}
		done.Store(true)
	})
	return err
}

// Initialized reports whether Init has run (successfully or not): whether
// this process has called the driver's cuInit.
func Initialized() bool { return done.Load() }

func errorString(r C.CUresult) string {
	var s *C.char
	if C.cuGetErrorString(r, &s) == C.CUDA_SUCCESS && s != nil {
		return C.GoString(s)
	}
	return "CUDA error " + strconv.Itoa(int(r))
}
