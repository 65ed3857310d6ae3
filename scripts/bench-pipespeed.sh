#!/usr/bin/env bash
# Issue 18 item 1: how close `detect | quantize` and `detect | quantize | place`
# come to `detect | cat`, for one or more builds of the tools side by side,
# interleaved, on a model in the page cache. Each line: the build, the command,
# wall ms, each process's user+sys CPU ms and minor page faults (GNU time), the
# 1-minute load average before the run.
#
#   scripts/bench-pipespeed.sh MODEL OUTDIR BINDIR... [-- ROUNDS]
#   e.g. scripts/bench-pipespeed.sh /tmp/m /dev/shm/o /tmp/base bin
#
# The model is read once first (page cache); OUTDIR (place --out) is removed
# before each run, untimed; ROUNDS defaults to 5. Summaries (median and range
# of wall per build and command) go to stderr at the end.
set -euo pipefail
M=${1:?MODEL}; O=${2:?OUTDIR}; shift 2
bins=(); rounds=5
while [ $# -gt 0 ]; do
	if [ "$1" = -- ]; then rounds=${2:-5}; break; fi
	bins+=("$1"); shift
done
TIME=/usr/bin/time
[ -x $TIME ] || { echo "bench-pipespeed: needs GNU time at $TIME" >&2; exit 1; }
cat "$M"/*.safetensors > /dev/null
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
tf='%U %S %R'
cpu() { awk '{printf "%d/%d", ($1+$2)*1000, $3}' "$1"; }
run() { # label build command...
	local label=$1 b=$2 load s w; shift 2
	load=$(cut -d' ' -f1 /proc/loadavg)
	rm -rf "$O"
	s=$(date +%s%N)
	case $label in
	cat) $TIME -f "$tf" -o $tmp/d $b/detect -q "$M" | $TIME -f "$tf" -o $tmp/q cat > /dev/null ;;
	quantize) $TIME -f "$tf" -o $tmp/d $b/detect -q "$M" | $TIME -f "$tf" -o $tmp/q $b/quantize -q > /dev/null ;;
	place) $TIME -f "$tf" -o $tmp/d $b/detect -q "$M" | $TIME -f "$tf" -o $tmp/q $b/quantize -q |
		$TIME -f "$tf" -o $tmp/p $b/place -q --no-emit --out "$O" ;;
	esac
	w=$(ms $s)
	local p=""; [ $label = place ] && p=" place $(cpu $tmp/p)"
	echo "$b $label wall $w detect $(cpu $tmp/d) next $(cpu $tmp/q)$p load $load" | tee -a $tmp/all
}
echo "# $(date -u +'%F %T') UTC; $(nproc) cores; model $M ($(cat "$M"/*.safetensors | wc -c) bytes); out $O; ms, CPU ms/minor faults per process"
for r in $(seq "$rounds"); do
	for b in "${bins[@]}"; do
		for c in cat quantize place; do run $c "$b"; done
	done
done
for b in "${bins[@]}"; do
	for c in cat quantize place; do
		awk -v b="$b" -v c="$c" '$1==b && $2==c {print $4}' $tmp/all | sort -n |
			awk -v b="$b" -v c="$c" '{v[NR]=$1} END {printf "%s %s: median %d (%d–%d) ms, n=%d\n", b, c, v[int((NR+1)/2)], v[1], v[NR], NR}' >&2
	done
done
