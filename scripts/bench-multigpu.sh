#!/usr/bin/env bash
# Multi-GPU checks, on a machine of two or more GPUs (the device tool's
# nvidia-h100-x2): quantize spread over GPUs equals the CPU, and a balanced plan
# placed with place --gpu lands on every GPU.
#   here:  build the CUDA tools and pkg/quantize's CUDA test into bin/mg.tar.xz
#          (see the commands in this file's pack section)
#   there: scripts/bench-multigpu.sh run OUT
set -uo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = pack ]; then
	set -e
	rm -rf bin/mg && mkdir -p bin/mg
	CGO_ENABLED=1 go test -c -tags cuda -o bin/mg/qz.test ./pkg/quantize
	CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o bin/mg/ ./cmd/plan ./cmd/quantize ./cmd/place
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/mg/ ./cmd/detect ./cmd/verify
	CGO_ENABLED=0 go build -o bin/mg/synth ./internal/synth/cmd
	tar -C bin/mg -cJf bin/mg.tar.xz . && rm -rf bin/mg
	exit 0
fi
OUT=${2:?OUT}
T=/tmp/mg
mkdir -p $T "$OUT"
tar -C $T -xJf bin/mg.tar.xz
{
	date -u; nvidia-smi -L
	echo "== pkg/quantize CUDA tests (two GPUs: --device cuda:0,1 equals the CPU)"
	(cd pkg/quantize && $T/qz.test -test.v -test.run 'TestCUDAMatchesCPU|TestCUDANonFinite' 2>&1 | grep -E '^(--- |ok|FAIL|PASS)|GPU')
	M=testdata/models/llama
	$T/detect -q $M | $T/quantize -q --device cuda:0,1 | $T/place -q --no-emit --out $T/two
	$T/detect -q $M | $T/quantize -q --device cpu | $T/place -q --no-emit --out $T/cpu
	diff -r $T/two $T/cpu && echo "tiny llama: cuda:0,1 checkpoint identical to the CPU's"
	M=/tmp/tl
	$T/synth model --quiet --preset tinyllama-1.1b $M > /dev/null 2>&1
	for d in cpu cuda:0 cuda:0,1; do
		s=$(date +%s%N); $T/detect -q $M | $T/quantize -q --device $d > /dev/null; echo "1.1B detect | quantize --device $d: $(( ($(date +%s%N) - s) / 1000000 )) ms"
	done
	echo "== balanced plan over the GPUs, placed with place --gpu"
	$T/detect -q $M | $T/plan --strategy balanced -o $T/planned 2>&1 | grep -E 'cuda:|FITS|NOT'
	$T/quantize -q -i $T/planned | $T/place --gpu --no-emit --json
} > "$OUT/multigpu.txt" 2>&1
cat "$OUT/multigpu.txt"
