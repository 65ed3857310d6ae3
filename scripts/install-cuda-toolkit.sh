#!/bin/sh
# Installs Debian's CUDA toolkit (CUDA 11.8: nvcc, /usr/include/cuda.h and a
# libcuda to link against) so that `go build -tags cuda` and `make ptx` work on
# a Debian machine without a GPU. The binaries it builds run where an NVIDIA
# driver provides libcuda.so.1. Needs root. Safe to run twice.
set -eu

if command -v nvcc >/dev/null 2>&1 && [ -f /usr/include/cuda.h ]; then
	echo "CUDA toolkit already installed: $(nvcc --version | tail -n 1)"
	exit 0
fi

sources=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources" ]; then
	# nvidia-cuda-toolkit lives in non-free (with helpers in contrib).
	sed -i '/^Components:/{/contrib/! s/$/ contrib/; /non-free\( \|$\)/! s/$/ non-free/}' "$sources"
elif [ -f /etc/apt/sources.list ]; then
	sed -i '/^deb /{/contrib/! s/$/ contrib/; / non-free\( \|$\)/! s/$/ non-free/}' /etc/apt/sources.list
else
	echo "install-cuda-toolkit: no Debian apt sources found" >&2
	exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get install -y --no-install-recommends nvidia-cuda-toolkit nvidia-cuda-dev
nvcc --version | tail -n 1
