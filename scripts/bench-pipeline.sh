#!/usr/bin/env bash
# Whole-pipeline benchmark (issue 9): generates a synthetic BF16 checkpoint of
# a real model's dimensions (internal/synth), then times
#     bin/detect MODEL | bin/quantize | bin/place --out OUT
# as processes, with the checkpoint already in the page cache, and reports
# each stage's peak RSS (ru_maxrss, measured by `synth rss`, so GNU time is
# not needed) against the 256 MiB target.
#
#   scripts/bench-pipeline.sh                         # tinyllama-1.1b (2.2 GB)
#   PRESET=llama-3.1-8b RUNS=1 scripts/bench-pipeline.sh   # 16 GB source, ~5.7 GB out
#   EXTRA="plan verify" scripts/bench-pipeline.sh     # also plan and verify in the pipe
#
# Environment: PRESET, BENCH_DIR (where models and outputs go; default
# /tmp/nf4pipe-bench, never the repo), RUNS (timed runs, default 3), EXTRA,
# PLAN_ARGS (default "--gpus 24GiB"), KEEP=1 keeps the last output, SKIP_BUILD=1
# uses bin/ as it is instead of running make build.
# Stages whose cmd/<tool>/main.go does not exist yet are left out, and said so.
set -euo pipefail
PRESET=${PRESET:-tinyllama-1.1b}
BENCH_DIR=${BENCH_DIR:-/tmp/nf4pipe-bench}
RUNS=${RUNS:-3}
EXTRA=${EXTRA:-}
PLAN_ARGS=${PLAN_ARGS:---gpus 24GiB}
BIN=${BIN:-bin}
TOOLS=out/bench
MODEL=$BENCH_DIR/$PRESET
OUTDIR=$BENCH_DIR/$PRESET-nf4
RSS=$BENCH_DIR/$PRESET.rss

mkdir -p "$BENCH_DIR" "$TOOLS"
[ "${SKIP_BUILD:-0}" = 1 ] || make -s build   # SKIP_BUILD=1: use bin/ as it is
go build -o "$TOOLS/synth" ./internal/synth/cmd

if [ ! -f "$MODEL/config.json" ]; then
  echo "bench-pipeline: generating $PRESET into $MODEL" >&2
  df -h "$BENCH_DIR" >&2
  "$TOOLS/synth" model --preset "$PRESET" "$MODEL.tmp" && mv "$MODEL.tmp" "$MODEL"
fi
src_bytes=$(cat "$MODEL"/*.safetensors | wc -c)  # also puts it in the page cache

have() { [ -x "$BIN/$1" ] && [ -f "cmd/$1/main.go" ]; }
stage() { echo "\"$TOOLS/synth\" rss -o \"$RSS\" -l $1 -- $2"; }
pipe=() missing=()
have detect || { echo "bench-pipeline: bin/detect is missing" >&2; exit 1; }
pipe+=("$(stage detect "$BIN/detect -q $MODEL")")
case " $EXTRA " in *" plan "*) if have plan; then pipe+=("$(stage plan "$BIN/plan $PLAN_ARGS")"); else missing+=(plan); fi;; esac
if have quantize; then pipe+=("$(stage quantize "$BIN/quantize")"); else missing+=(quantize); fi
if have place; then pipe+=("$(stage place "$BIN/place --out $OUTDIR")"); else missing+=(place); fi
case " $EXTRA " in *" verify "*) if have verify; then pipe+=("$(stage verify "$BIN/verify --reference $MODEL")"); else missing+=(verify); fi;; esac
cmd=$(IFS='|'; echo "${pipe[*]}")
sink=">/dev/null"

walls=()
for run in $(seq 1 "$RUNS"); do
  rm -rf "$OUTDIR" "$RSS"
  sync
  t0=$(date +%s.%N)
  eval "$cmd $sink"
  t1=$(date +%s.%N)
  walls+=("$(echo "$t0 $t1" | awk '{printf "%.2f", $2-$1}')")
done
out_bytes=0
[ -d "$OUTDIR" ] && out_bytes=$(cat "$OUTDIR"/*.safetensors 2>/dev/null | wc -c)
[ "${KEEP:-0}" = 1 ] || rm -rf "$OUTDIR"

machine="$(lscpu | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores, $(free -g | awk '/^Mem:/{print $2}') GiB"
best=$(printf '%s\n' "${walls[@]}" | sort -n | head -1)
echo "# pipeline on $PRESET ($src_bytes source bytes -> $out_bytes output bytes); $machine; $(date -u +%F); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# command: $(IFS='|'; echo "${pipe[*]}" | sed "s|\"$TOOLS/synth\" rss -o \"$RSS\" -l [a-z]* -- ||g; s/|/ | /g")"
[ ${#missing[@]} -eq 0 ] || echo "# not built yet, left out: ${missing[*]}"
echo "# wall per run (s): ${walls[*]}; best $best s"
echo "| stage | peak RSS (MiB) | user s | sys s | target ≤ 256 MiB |"
echo "| --- | --- | --- | --- | --- |"
ok=1
while read -r label rest; do
  rss=$(echo "$rest" | sed -n 's/.*peak_rss_mib=\([0-9.]*\).*/\1/p')
  user=$(echo "$rest" | sed -n 's/.*user_s=\([0-9.]*\).*/\1/p')
  sys=$(echo "$rest" | sed -n 's/.*sys_s=\([0-9.]*\).*/\1/p')
  code=$(echo "$rest" | sed -n 's/.*exit=\([0-9]*\).*/\1/p')
  pass=$(awk -v r="$rss" 'BEGIN{print (r <= 256) ? "met" : "MISSED"}')
  [ "$code" = 0 ] || { pass="$pass (exit $code)"; ok=0; }
  [[ $pass == met* ]] || ok=0
  echo "| $label | $rss | $user | $sys | $pass |"
done <"$RSS"
[ $ok = 1 ]
