#!/usr/bin/env bash
# Candidate kernels (kernels/variants) against the production ones on the GPU
# machine (issue 18 item 4), with tools built elsewhere:
#   scripts/bench-variants.sh pack          # here: GPU test binary + variant PTX into bin/variants.tar.xz
#   scripts/bench-variants.sh run OUT [N]   # there: N passes (default 2) of TestBenchVariants
# Each pass writes every timing to OUT/variants-<pass>-<group>.txt (VAR lines; groups
# quant, deq, async) and
# prints the best of each kind (BEST), the copy reference and any failure to
# stdout, the first pass also the fastest grid of each kernel (TOP). Needs
# only the NVIDIA driver there; a pass should take about a minute (an
# estimate: not yet run), and the run stops within BUDGET seconds.
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
# One process per group (quantize with the double-quantization chain,
# dequantize, then the cp.async quantize variants), so that a kernel fault
# loses only its group. The whole run stays within BUDGET seconds (default
# 230): quant and deq get at most 80 s each, async 50 s, none more than what
# is left, and a later pass starts only with 120 s left.
BUDGET=${BUDGET:-230}
SECONDS=0
for pass in $(seq 1 "$PASSES"); do
	if [ "$pass" -gt 1 ] && [ $((BUDGET - SECONDS)) -lt 120 ]; then
		echo "== pass $pass skipped: $SECONDS s used of $BUDGET"
		break
	fi
	for group in quant deq async; do
		f="$OUT/variants-$pass-$group.txt"
		left=$((BUDGET - SECONDS))
		cap=80
		[ "$group" = async ] && cap=50
		lim=$(( left < cap ? left : cap ))
		if [ "$lim" -lt 10 ]; then echo "== pass $pass $group skipped: $SECONDS s used of $BUDGET"; continue; fi
		echo "== pass $pass $group (limit $lim s, $SECONDS s used)"
		NF4PIPE_VARIANT_PTX=$T/variants75.ptx,$T/variants80.ptx NF4PIPE_VARIANT_GROUPS=$group timeout $lim \
			$T/gpu.test -test.v -test.count=1 -test.run '^TestBenchVariants$' > "$f" 2>&1
		rc=$?
		echo "exit $rc"
		[ $rc != 0 ] && tail -n 5 "$f"
		# stdout keeps its last 12,000 characters: every kernel's best grid
		# from the first pass, only the winners and the copy from the others.
		pat='VAR (device|copy)|BEST|not in any|differ|FAIL|panic|^(ok|PASS)'
		[ "$pass" = 1 ] && pat="$pat|TOP"
		grep -E "$pat" "$f" | sed -E 's/^ +variants_test.go:[0-9]+: //'
	done
done
echo "== done in $SECONDS s"
