#!/bin/sh
# Regenerates kernels/nf4.ptx from kernels/nf4.cu for compute_75 (the driver
# JIT-compiles it for any newer GPU). Needs nvcc (scripts/install-cuda-toolkit.sh
# installs CUDA 11.8, with which the committed PTX was built). With --check it
# only reports whether the committed PTX is current.
set -eu
cd "$(dirname "$0")/.."
out=kernels/nf4.ptx
[ "${1:-}" = "--check" ] && out=$(mktemp)
nvcc -std=c++17 -O3 -arch=compute_75 -ptx -o "$out" kernels/nf4.cu
if [ "${1:-}" = "--check" ]; then
	if ! diff -q "$out" kernels/nf4.ptx >/dev/null; then
		echo "kernels/nf4.ptx is stale: run scripts/build-ptx.sh" >&2
		rm -f "$out"
		exit 1
	fi
	rm -f "$out"
	echo "kernels/nf4.ptx is current"
fi
