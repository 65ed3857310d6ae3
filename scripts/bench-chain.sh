#!/usr/bin/env bash
# Pipe-chain benchmark (issue 2): a synthetic stream of GIB GiB of BF16 tensors
# through a chain of STAGES pass-through processes over pipes. Prints each
# stage's peak RSS (VmHWM, read by the stage itself at exit) and the chain's
# throughput, and checks the target: every stage under 64 MiB plus its chunk
# buffers (the reader's buffer and the writer's chunk).
#
#   scripts/bench-chain.sh            # 4 GiB, 5 stages
#   GIB=1 STAGES=3 scripts/bench-chain.sh
# Needs only Go. Prints markdown table rows for docs/BENCHMARKS.md.
set -euo pipefail
GIB=${GIB:-4}
STAGES=${STAGES:-5}
CHUNK_MIB=${CHUNK_MIB:-4}       # the stream writer's default chunk
OUT=${BENCH_OUT:-out/bench}
mkdir -p "$OUT"
go build -o "$OUT/synth" ./internal/synth/cmd
go build -o "$OUT/passthru" ./internal/passthru/cmd
log=$(mktemp)
trap 'rm -f "$log"' EXIT

now() { date +%s.%N; }
chunk=$((CHUNK_MIB << 20))

# The generator alone, to know the ceiling it puts on the chain.
t0=$(now)
"$OUT/synth" stream --gib "$GIB" --chunk "$chunk" >/dev/null
t1=$(now)
gen=$(echo "$GIB $t0 $t1" | awk '{printf "%.2f", $1*1.073741824/($3-$2)}')

cmd="\"$OUT/synth\" stream --gib $GIB --chunk $chunk"
for i in $(seq 1 "$STAGES"); do
  cmd+=" | \"$OUT/passthru\" --rss --label stage$i --chunk $chunk"
done
cmd+=" >/dev/null"
t0=$(now)
eval "$cmd" 2>"$log"
t1=$(now)
wall=$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')
rate=$(echo "$GIB $wall" | awk '{printf "%.2f", $1*1.073741824/$2}')

limit=$((64 + 2 * CHUNK_MIB + 1))  # 64 MiB + writer chunk + reader buffer (1 MiB slack)
machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores"
echo "# chain: $GIB GiB through $STAGES pass-through stages, chunk $CHUNK_MIB MiB; $machine; $(date -u +%F); load $(cut -d" " -f1-3 /proc/loadavg)"
echo "# generator alone: $gen GB/s; chain: $wall s wall, $rate GB/s (payload bytes / wall)"
ok=1
echo "| stage | peak RSS (MiB) | stage GB/s | target ≤ $limit MiB |"
echo "| --- | --- | --- | --- |"
while read -r label rest; do
  rss=$(echo "$rest" | sed -n 's/.*peak_rss_mib=\([0-9.]*\).*/\1/p')
  gbs=$(echo "$rest" | sed -n 's/.*gb_s=\([0-9.]*\).*/\1/p')
  pass=$(awk -v r="$rss" -v l="$limit" 'BEGIN{print (r <= l) ? "met" : "MISSED"}')
  [ "$pass" = met ] || ok=0
  echo "| $label | $rss | $gbs | $pass |"
done < <(grep '^stage' "$log" | sort -V)
grep -v '^stage' "$log" >&2 || true
[ "$(grep -c '^stage' "$log")" -eq "$STAGES" ] || { echo "bench-chain: a stage did not report" >&2; exit 1; }
[ $ok = 1 ]
