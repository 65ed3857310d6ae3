#!/usr/bin/env bash
# Candidate kernels (kernels/variants) against the production ones on the GPU
# machine (issue 18 item 4), with tools built elsewhere:
#   scripts/bench-variants.sh pack          # here: GPU test binary + variant PTX into bin/variants.tar.xz
#   scripts/bench-variants.sh run OUT [N]   # there: N passes (default 2) of TestBenchVariants
# Each pass writes every timing to OUT/variants-<pass>.txt (VAR lines) and
# prints the best of each kind (BEST), the copy reference and any failure to
# stdout, the first pass also the fastest grid of each kernel (TOP). Needs
# only the NVIDIA driver there; a pass should take well under two minutes
# (an estimate: not yet run).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf bin/variants && mkdir -p bin/variants
	CGO_ENABLED=1 go test -c -tags cuda -o bin/variants/gpu.test ./internal/gpu
	for a in 75 80; do
		nvcc -std=c++17 -O3 -arch=compute_$a -ptx -o bin/variants/variants$a.ptx kernels/variants/variants.cu
	done
	tar -C bin/variants -cJf bin/variants.tar.xz gpu.test variants75.ptx variants80.ptx && rm -rf bin/variants
	ls -la bin/variants.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack | run OUTDIR [PASSES]" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
PASSES=${3:-2}
T=/tmp/nf4var
rm -rf $T && mkdir -p $T "$OUT"
tar -C $T -xJf bin/variants.tar.xz
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader; } 2>&1 | tee "$OUT/machine.txt"
for pass in $(seq 1 "$PASSES"); do
	echo "== pass $pass"
	NF4PIPE_VARIANT_PTX=$T/variants75.ptx,$T/variants80.ptx timeout 110 $T/gpu.test -test.v -test.count=1 \
		-test.run '^TestBenchVariants$' -test.timeout 100s > "$OUT/variants-$pass.txt" 2>&1
	rc=$?
	echo "exit $rc"
	[ $rc != 0 ] && tail -n 5 "$OUT/variants-$pass.txt"
	# stdout keeps its last 12,000 characters: every kernel's best grid from
	# the first pass, only the winners and the copy reference from the others.
	pat='VAR (device|copy)|BEST|not in any|differ|FAIL|panic|^(ok|PASS)'
	[ "$pass" = 1 ] && pat="$pat|TOP"
	grep -E "$pat" "$OUT/variants-$pass.txt" | sed -E 's/^ +variants_test.go:[0-9]+: //'
done
