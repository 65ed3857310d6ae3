#!/usr/bin/env bash
# GPU checks and figures for docs/BENCHMARKS.md (issue 5), run on the device
# machine from the repository root with tools built elsewhere:
#   scripts/bench-cuda.sh pack      # here: build CPU + CUDA tools and the GPU test binary into bin/dev/tools.tar.xz
#   scripts/bench-cuda.sh run OUT   # there: tests, kernel bench, whole pipeline; logs under OUT
# The golden vectors travel in bin/gpu/testdata/bnb (../shared does not travel).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf bin/dev && mkdir -p bin/dev/cpu bin/dev/cuda bin/gpu/testdata/bnb
	cp ../shared/testdata/bnb/golden_bnb_bfloat16.safetensors ../shared/testdata/bnb/golden_bnb_float16.safetensors bin/gpu/testdata/bnb/
	rm -rf bin/gpu/testdata/models && cp -r ../shared/testdata/models bin/gpu/testdata/models
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/dev/cpu/ ./cmd/detect ./cmd/quantize ./cmd/place
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/dev/cpu/synth ./internal/synth/cmd
	CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o bin/dev/cuda/ ./cmd/quantize ./cmd/place
	CGO_ENABLED=1 go test -c -tags cuda -o bin/dev/gpu.test ./internal/gpu
	CGO_ENABLED=1 go test -c -tags cuda -o bin/dev/quantize.test ./pkg/quantize
	nvcc -std=c++17 -O3 -arch=compute_75 -ptx -o bin/dev/probe.ptx kernels/probe/probe.cu
	tar -C bin/dev -cJf bin/dev.tar.xz cpu cuda gpu.test quantize.test probe.ptx && rm -rf bin/dev
	ls -la bin/dev.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack | run OUTDIR" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
T=/tmp/nf4dev
mkdir -p $T "$OUT" ../shared/testdata/bnb
tar -C $T -xJf bin/dev.tar.xz
cp bin/gpu/testdata/bnb/*.safetensors ../shared/testdata/bnb/
[ -d bin/gpu/testdata/models ] && [ ! -d ../shared/testdata/models ] && cp -r bin/gpu/testdata/models ../shared/testdata/models
{
	date -u; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv; nproc
} 2>&1 | tee "$OUT/machine.txt"
(cd internal/gpu && $T/gpu.test -test.v -test.count=1 \
	-test.run 'TestGoldenGPU|TestThresholdSweep|TestGPUMatchesCPU|TestGPUNonFinite|TestMeanF32Golden|TestMeanTorchGPU|TestNestPathsMatchCPU|TestSpread|TestOutOfMemory' 2>&1) > "$OUT/tests.txt"
(cd pkg/quantize && $T/quantize.test -test.v -test.count=1 -test.run 'TestCUDA' 2>&1) >> "$OUT/tests.txt"
grep -E '^(--- |FAIL|ok|PASS)' "$OUT/tests.txt" | head -30
grep -E 'differ|offset' "$OUT/tests.txt" | head -8
(cd internal/gpu && NF4PIPE_GPU_BENCH=1 NF4PIPE_PROBE_PTX=$T/probe.ptx $T/gpu.test -test.v -test.count=1 -test.run 'TestBenchReport|TestBenchProbe' 2>&1) > "$OUT/bench.txt"
grep -E 'copy|RESULT|PROBE|v4 grid 8|host' "$OUT/bench.txt"
# Every tiny model through the GPU: the checkpoint must be transformers' own.
for m in ../shared/testdata/models/*-bnb-nf4; do
	src=${m%-bnb-nf4}; name=$(basename "$src")
	$T/cpu/detect -q "$src" | $T/cuda/quantize -q --device cuda | $T/cuda/place -q --no-emit --force --out /tmp/gm-$name \
		&& cmp -s /tmp/gm-$name/model.safetensors "$m/model.safetensors" \
		&& echo "$name: detect | quantize --device cuda | place: model.safetensors identical to transformers'" \
		|| echo "$name: CUDA checkpoint DIFFERS from transformers'"
done 2>&1 | tee "$OUT/models.txt"
# Whole pipeline on a TinyLlama-dimension checkpoint in the page cache.
M=/tmp/tinyllama
$T/cpu/synth model --quiet --preset tinyllama-1.1b $M > /dev/null
cat $M/* > /dev/null
pipe() { # label quantize-binary place-binary extra-quantize-flags
	for i in 1 2 3; do
		s=$(date +%s%N)
		$T/cpu/detect $M 2>/dev/null | $2 $4 2>>"$OUT/pipe-stderr.txt" | $3 --out /tmp/out-$1 --force >/dev/null 2>>"$OUT/pipe-stderr.txt" || echo "$1: pipeline failed"
		e=$(date +%s%N)
		echo "$1 run $i: $(( (e - s) / 1000000 )) ms"
	done
}
pipe cpu $T/cpu/quantize $T/cpu/place "" | tee -a "$OUT/pipeline.txt"
pipe cuda $T/cuda/quantize $T/cuda/place "--device cuda" | tee -a "$OUT/pipeline.txt"
diff -r /tmp/out-cpu /tmp/out-cuda > /dev/null && echo "cpu and cuda checkpoints identical" | tee -a "$OUT/pipeline.txt" || echo "cpu and cuda checkpoints DIFFER" | tee -a "$OUT/pipeline.txt"
du -sh $M /tmp/out-cuda | tee -a "$OUT/pipeline.txt"
tail -3 "$OUT/pipe-stderr.txt"
s=$(date +%s%N); $T/cpu/detect testdata/models/llama 2>/dev/null | $T/cuda/quantize --device cuda 2>/dev/null >/dev/null; e=$(date +%s%N); echo "tiny llama detect|quantize --device cuda: $(( (e - s) / 1000000 )) ms" | tee -a "$OUT/pipeline.txt"
$T/cpu/detect testdata/models/llama 2>/dev/null | $T/cuda/quantize --device cuda 2>/dev/null | $T/cuda/place --gpu --json 2>&1 >/dev/null | head -c 1500 > "$OUT/place-gpu.txt"; head -c 600 "$OUT/place-gpu.txt"
