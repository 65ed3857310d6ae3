#!/usr/bin/env bash
# Issue 18 item 2: is the CUDA path ever slower than the CPU path? On the GPU
# machine (16 cores), with tools built here:
#   scripts/bench-device-path.sh pack      # here: bin/device-path.tar.xz
#   scripts/bench-device-path.sh run OUT   # there (carry bin/device-path.tar.xz): figures on stdout and in OUT
# On a synthetic TinyLlama-1.1B (2.2 GB bf16) in the page cache, interleaved,
# five rounds, ms: detect | cat; detect | quantize | place --out with the CPU
# build, the CUDA build with --device cpu (its process start-up: it should
# match the CPU build's, since cuInit now runs only when a GPU is used,
# internal/gpu/cudainit), --device cuda and --device auto. Every output
# directory is removed (untimed, then sync) before its run; the checkpoints
# must be byte-identical (cmp of every file). Then the GPU tests, and each
# quantize's JSON summary (device, routing: when the GPU was ready, the
# throughputs auto measured), and the stage's steady state with the GPU
# already open (BenchmarkStageFileDevice). OUT gets 4 files.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf bin/dp && mkdir -p bin/dp/cpu bin/dp/cuda bin/dp/bnb
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/dp/cpu/ ./cmd/detect ./cmd/quantize ./cmd/place
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/dp/synth ./internal/synth/cmd
	CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o bin/dp/cuda/ ./cmd/quantize
	CGO_ENABLED=1 go test -c -tags cuda -o bin/dp/gpu.test ./internal/gpu
	CGO_ENABLED=1 go test -c -tags cuda -o bin/dp/quantize.test ./pkg/quantize
	cp ../shared/testdata/bnb/golden_bnb_bfloat16.safetensors ../shared/testdata/bnb/golden_bnb_float16.safetensors bin/dp/bnb/
	tar -C bin/dp -cJf bin/device-path.tar.xz . && rm -rf bin/dp
	ls -la bin/device-path.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack | run OUTDIR" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
T=/tmp/nf4dp
M=/tmp/tl
mkdir -p $T "$OUT"
tar -C $T -xJf bin/device-path.tar.xz
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
R="$OUT/results.txt"
{
	date -u; nproc; grep -m1 'model name' /proc/cpuinfo; uname -r
	nvidia-smi --query-gpu=name,driver_version,memory.total,persistence_mode --format=csv,noheader
	git log -1 --format='commit %h %s' 2>/dev/null
} 2>&1 | tee "$R"

# Start-up alone: the repo's tiny llama (a few hundred KB), five rounds.
L=testdata/models/llama
for i in 1 2 3 4 5; do
	for v in "cpu/quantize" "cuda/quantize --device cpu" "cuda/quantize --device cuda" "cuda/quantize --device auto"; do
		s=$(date +%s%N); $T/cpu/detect -q $L | $T/$v -q > /dev/null; echo "tiny llama, detect | $v: $(ms $s) ms"
	done
done 2>&1 | tee -a "$R"

$T/synth model --quiet --preset tinyllama-1.1b $M > /dev/null 2>&1
cat $M/* > /dev/null
du -sh $M | tee -a "$R"
Q="$OUT/quantize-json.txt"
: > "$Q"
# label, then the quantize command (its JSON summary goes to $Q)
pipe() {
	local label=$1; shift
	rm -rf /tmp/dp-$label; sync
	printf '%s ' "$label" >> "$Q"
	local s=$(date +%s%N)
	$T/cpu/detect -q $M | "$@" -q --json 2>>"$Q" | $T/cpu/place -q --no-emit --out /tmp/dp-$label 2>>"$OUT/place-stderr.txt" || echo "$label: pipeline FAILED"
	echo "$label: $(ms $s) ms"
}
for i in 1 2 3 4 5; do
	s=$(date +%s%N); $T/cpu/detect -q $M | cat > /dev/null; echo "detect | cat: $(ms $s) ms"
	echo "-- round $i" >> "$Q"
	pipe cpu $T/cpu/quantize
	pipe cudabuild-cpu $T/cuda/quantize --device cpu
	pipe cuda $T/cuda/quantize --device cuda
	pipe auto $T/cuda/quantize --device auto
done 2>&1 | tee -a "$R"
# nf4pipe_plan.json records each stage's arguments (--device, --out) and
# the device quantize named: those lines differ by design, the rest must not.
planlines() { grep -v -e '"--device' -e '"--out=' -e '"device"' "$1"; }
for v in cudabuild-cpu cuda auto; do
	same=yes
	for f in /tmp/dp-cpu/*; do
		g=/tmp/dp-$v/$(basename "$f")
		if [ "$(basename "$f")" = nf4pipe_plan.json ]; then
			diff <(planlines "$f") <(planlines "$g") > /dev/null || { same=no; echo "$v: nf4pipe_plan.json differs beyond --device/--out/device:"; diff <(planlines "$f") <(planlines "$g") | head -5; }
		else
			cmp -s "$f" "$g" || { same=no; echo "$v: $(basename "$f") DIFFERS from the CPU's"; }
		fi
	done
	[ "$(ls /tmp/dp-cpu | wc -l)" = "$(ls /tmp/dp-$v | wc -l)" ] || same=no
	echo "checkpoint $v vs cpu: identical=$same (cmp: $(ls /tmp/dp-cpu | grep -v nf4pipe_plan.json | tr '\n' ' '); nf4pipe_plan.json but for --device/--out/device)"
done 2>&1 | tee -a "$R"
# Where each quantize ran, when its GPU was ready, what auto measured.
sed -nE '/^-- /p; s/^([a-z-]+) .*"device":"([^"]*)","seconds":([0-9.]+)(,"routing":"(([^"\\]|\\.)*)")?.*/\1: \2, \3 s; \5/p' "$Q" | tee -a "$R"

# The stage alone, in process, from a stream file in tmpfs, the GPU already
# open: the steady state of the CPU, the GPU alone and shared, at 4 and 32
# MiB chunks (MB/s of input stream).
$T/cpu/detect -q $M > /dev/shm/tl.stream
(cd pkg/quantize && NF4PIPE_STREAM=/dev/shm/tl.stream $T/quantize.test -test.run '^$' -test.v -test.bench StageFileDevice -test.benchtime 5x 2>&1) |
	grep -E 'Benchmark|cpu alone|FAIL|panic' | tee -a "$R"
rm -f /dev/shm/tl.stream

# GPU tests: the pipelined steps, the backend against the CPU, the golden
# vectors, and the stage's CUDA tests (GPU from the first run, auto sharing,
# starting on the CPU, out of memory, no device).
mkdir -p ../shared/testdata/bnb && cp -n $T/bnb/*.safetensors ../shared/testdata/bnb/ 2>/dev/null
{
	(cd internal/gpu && $T/gpu.test -test.v -test.count=1 -test.run 'TestOpenTimes' 2>&1) # the process's first Open, and its cuInit
	(cd internal/gpu && $T/gpu.test -test.v -test.count=1 \
		-test.run 'TestBackendSteps|TestGPUMatchesCPU|TestGPUNonFinite|TestGoldenGPU|TestSpread|TestOutOfMemory|TestPipelineStep|TestCuInitIsOurs|TestDriverInitDeferred' 2>&1)
	(cd pkg/quantize && $T/quantize.test -test.v -test.count=1 -test.run 'TestCUDA|TestHybrid|TestRouter' 2>&1)
} > "$OUT/tests.txt"
grep -E '^(--- |FAIL|ok|PASS)|ran on|start-up:|child:' "$OUT/tests.txt" | tee -a "$R"
rm -rf /tmp/dp-cpu /tmp/dp-cudabuild-cpu /tmp/dp-cuda /tmp/dp-auto $M
