#!/usr/bin/env bash
# One short GPU run that checks the production kernels (nf4.cu) bit for bit
# and times them against the kernels they replaced, with the test binary
# built elsewhere:
#   scripts/verify-kernels.sh pack      # here: GPU test binary + golden files into bin/kv.tar.xz
#   scripts/verify-kernels.sh run OUT   # there (carry bin/kv.tar.xz): tests, then TestBenchProduction
# run writes the whole logs to OUT/kv-tests.txt and OUT/kv-bench.txt and ends
# its stdout with a summary: each test's verdict, any difference reported,
# and the SUMMARY lines (% of a device-to-device copy). Needs only the NVIDIA
# driver there; the tests stop after 45 s and the benchmark after 30 s.
# The golden vectors travel in the archive and go to ../shared/testdata/bnb,
# where the tests look (as scripts/bench-cuda.sh does).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf bin/kv && mkdir -p bin/kv/bnb
	CGO_ENABLED=1 go test -c -tags cuda -o bin/kv/gpu.test ./internal/gpu
	cp ../shared/testdata/bnb/golden_bnb_bfloat16.safetensors ../shared/testdata/bnb/golden_bnb_float16.safetensors bin/kv/bnb/
	tar -C bin/kv -cJf bin/kv.tar.xz gpu.test bnb && rm -rf bin/kv
	ls -la bin/kv.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack | run OUTDIR" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
T=/tmp/nf4kv
rm -rf $T && mkdir -p $T "$OUT"
mkdir -p ../shared/testdata/bnb 2>/dev/null
tar -C $T -xJf bin/kv.tar.xz
# Where ../shared is read-only, the repository's testdata (looked in first).
cp $T/bnb/*.safetensors ../shared/testdata/bnb/ 2>/dev/null || cp $T/bnb/*.safetensors testdata/bnb/
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } > "$OUT/machine.txt" 2>&1
(cd internal/gpu && timeout 45 $T/gpu.test -test.v -test.count=1 \
	-test.run '^(TestGoldenGPU|TestGPUMatchesCPU|TestMeanTorchGPU|TestNestPathsMatchCPU|TestGPUNonFinite|TestBackendSteps)$' 2>&1) > "$OUT/kv-tests.txt"
echo "tests exit $?" >> "$OUT/kv-tests.txt"
(cd internal/gpu && NF4PIPE_GPU_BENCH=1 timeout 30 $T/gpu.test -test.v -test.count=1 -test.run '^TestBenchProduction$' 2>&1) > "$OUT/kv-bench.txt"
echo "bench exit $?" >> "$OUT/kv-bench.txt"
echo "== verify-kernels: $(head -2 "$OUT/machine.txt" | tr '\n' ' ')"
for f in "$OUT/kv-tests.txt" "$OUT/kv-bench.txt"; do
	# A binary that ran no test (no GPU, a fault at start) says why at its end.
	grep -qE '^--- ' "$f" || grep -vE 'exit [0-9]+$' "$f" | tail -3
	grep -hE '^(--- |FAIL|ok|PASS|panic)|exit [0-9]+$' "$f"
done
grep -hiE 'differ|skip|error|fault' "$OUT/kv-tests.txt" "$OUT/kv-bench.txt" | grep -v '^--- ' | head -8
grep -h 'SUMMARY' "$OUT/kv-bench.txt" | sed 's/^.*SUMMARY/SUMMARY/'
