//go:build cuda

// See cudainit.go for why this file defines the driver's cuInit.

#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>
#include <cuda.h>

// cuInit is what the cuInit references of this executable's C code
// (gorgonia.org/cu's package init among them) resolve to: it does nothing.
// Hidden, so that it stays out of the dynamic symbol table and nothing
// loaded at run time (libcuda.so.1 itself included) can bind to it.
__attribute__((visibility("hidden"))) CUresult CUDAAPI cuInit(unsigned int Flags) {
	(void)Flags;
	return CUDA_SUCCESS;
}

// nf4_real_cuInit calls the driver's cuInit, the next definition after this
// executable's in the loader's search order (libcuda.so.1's), and stores its
// result in *r. It returns 0 when there is none.
int nf4_real_cuInit(unsigned int flags, CUresult *r) {
	CUresult (*real)(unsigned int) = (CUresult (*)(unsigned int))dlsym(RTLD_NEXT, "cuInit");
	if (real == NULL) {
		return 0;
	}
	*r = real(flags);
	return 1;
}
