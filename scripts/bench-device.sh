#!/usr/bin/env bash
# The figures of docs/BENCHMARKS.md that need the accelerator machine, in one run:
# pipe and stream throughput, the whole pipeline on a TinyLlama-1.1B checkpoint
# (CPU and CUDA builds, output on disk and on tmpfs), the stages one by one,
# place --gpu, plan from the driver's inventory, and the GPU kernels' bandwidth.
#
#   scripts/bench-device.sh pack      # here: builds everything into bin/device.tar.xz
#   scripts/bench-device.sh run OUT   # there (no Go needed): logs under OUT
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf bin/device && mkdir -p bin/device/cpu bin/device/cuda
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/device/cpu/ ./cmd/detect ./cmd/plan ./cmd/quantize ./cmd/place ./cmd/verify
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/device/cpu/synth ./internal/synth/cmd
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/device/cpu/passthru ./internal/passthru/cmd
	CGO_ENABLED=0 go test -c -o bin/device/stream.test ./pkg/tensorstream
	CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o bin/device/cuda/ ./cmd/plan ./cmd/quantize ./cmd/place
	CGO_ENABLED=1 go test -c -tags cuda -o bin/device/gpu.test ./internal/gpu
	tar -C bin/device -cJf bin/device.tar.xz . && rm -rf bin/device
	ls -la bin/device.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack | run OUTDIR" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
T=/tmp/nf4dev
mkdir -p $T "$OUT"
tar -C $T -xJf bin/device.tar.xz
C=$T/cpu G=$T/cuda
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
{
	date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
	nproc; grep -m1 'model name' /proc/cpuinfo; df -h /tmp /dev/shm | tail -2
} > "$OUT/machine.txt" 2>&1
cat "$OUT/machine.txt"

{
	echo "== pipe baseline: 2 GiB through dd | cat"
	s=$(date +%s%N); dd if=/dev/zero bs=1M count=2048 status=none | cat > /dev/null; echo "dd|cat $(ms $s) ms"
	echo "== stream: writer+reader and one pass-through stage, 64 MiB tensors"
	$T/stream.test -test.run '^$' -test.bench . -test.benchtime 20x -test.count 3 2>&1 | grep Benchmark
	echo "== five pass-through processes over pipes, 4 GiB stream"
	s=$(date +%s%N)
	$C/synth stream --gib 4 | $C/passthru --rss -label p1 | $C/passthru --rss -label p2 | $C/passthru --rss -label p3 \
		| $C/passthru --rss -label p4 | $C/passthru --rss -label p5 > /dev/null
	echo "chain $(ms $s) ms"
} > "$OUT/stream.txt" 2>&1
cat "$OUT/stream.txt"

M=/tmp/tinyllama
$C/synth model --quiet --preset tinyllama-1.1b $M > /dev/null 2>&1
cat $M/* > /dev/null
{
	du -sh $M
	echo "== stages one by one (model in the page cache)"
	s=$(date +%s%N); $C/detect -q $M > /dev/null; echo "detect > /dev/null: $(ms $s) ms"
	s=$(date +%s%N); $C/detect -q $M | cat > /dev/null; echo "detect | cat: $(ms $s) ms"
	s=$(date +%s%N); $C/detect -q $M | $C/quantize -q > /dev/null; echo "detect | quantize (cpu): $(ms $s) ms"
	s=$(date +%s%N); $C/detect -q $M | $G/quantize -q --device cuda > /dev/null; echo "detect | quantize --device cuda: $(ms $s) ms"
	$C/detect -q $M | $C/quantize -q > /dev/shm/q.stream
	s=$(date +%s%N); $C/place -q --force --no-emit --out /tmp/o-disk < /dev/shm/q.stream; echo "place from tmpfs stream, out on disk: $(ms $s) ms"
	s=$(date +%s%N); $C/place -q --force --no-emit --out /dev/shm/o-shm < /dev/shm/q.stream; echo "place from tmpfs stream, out on tmpfs: $(ms $s) ms"
	rm -rf /dev/shm/o-shm
	echo "== whole pipeline: detect | quantize | place --out (3 runs each)"
	for i in 1 2 3; do
		s=$(date +%s%N); $C/detect -q $M | $C/quantize -q | $C/place -q --force --no-emit --out /tmp/o-cpu; echo "cpu, out on disk: $(ms $s) ms"
	done
	for i in 1 2 3; do
		s=$(date +%s%N); $C/detect -q $M | $C/quantize -q | $C/place -q --force --no-emit --out /dev/shm/o-cpu; echo "cpu, out on tmpfs: $(ms $s) ms"
	done
	for i in 1 2 3; do
		s=$(date +%s%N); $C/detect -q $M | $G/quantize -q --device cuda | $C/place -q --force --no-emit --out /tmp/o-cuda; echo "cuda, out on disk: $(ms $s) ms"
	done
	diff -r /tmp/o-cpu /tmp/o-cuda > /dev/null && echo "cpu and cuda checkpoints identical" || echo "cpu and cuda checkpoints DIFFER"
	diff -r /tmp/o-cpu /dev/shm/o-cpu > /dev/null && echo "disk and tmpfs checkpoints identical" || echo "disk and tmpfs checkpoints DIFFER"
	du -sh /tmp/o-cpu
	echo "== verify of the 1.1B checkpoint (cpu, all cores)"
	s=$(date +%s%N); $C/verify -q --checkpoint /tmp/o-cpu --reference $M; echo "verify status $? in $(ms $s) ms"
} > "$OUT/pipeline.txt" 2>&1
cat "$OUT/pipeline.txt"

{
	echo "== plan from the driver's inventory (CUDA build)"
	$C/detect -q testdata/models/llama | $G/plan --report 2>&1 | head -30
	echo "== place --gpu, tiny llama"
	$C/detect -q testdata/models/llama | $G/quantize -q --device cuda | $G/plan -q | $G/place --gpu --no-emit --json
	echo "== place --gpu, TinyLlama-1.1B"
	$C/detect -q $M | $G/quantize -q --device cuda | $G/place --gpu --no-emit --json
} > "$OUT/gpu-place.txt" 2>&1
head -c 3000 "$OUT/gpu-place.txt"

(cd internal/gpu && NF4PIPE_GPU_BENCH=1 timeout 120 $T/gpu.test -test.v -test.count=1 -test.run TestBenchReport 2>&1) > "$OUT/kernels.txt"
grep -E 'copy|RESULT|quantize|dequant' "$OUT/kernels.txt" | head -20
