#!/usr/bin/env bash
# Issue 18's figures in one run on the GPU machine (16 cores, H200), with tools
# built here:
#   scripts/bench-limit.sh pack [BEFORE]  # here: .dev/limit.tar.xz (CPU tools, CUDA quantize, synth;
#                                      # with a commit BEFORE, its tools too, for part 1)
#   scripts/bench-limit.sh run OUT [PARTS]  # there: every figure to stdout and OUT/limit.txt
#                                      # PARTS: any of 1 2 3 (default all)
# 1. TinyLlama-1.1B-sized synthetic (2.2 GB) in the page cache, five rounds
#    interleaved: detect | cat, detect | quantize | cat, detect | quantize | place
#    --out (to disk, /tmp, and to tmpfs, /dev/shm) with the CPU build, and the
#    CUDA build's quantize with --device cpu, cuda and auto; the same with the
#    tools of BEFORE when packed; the checkpoints compared (cmp); place's
#    in_place_bytes; then each build's start-up on the repo's tiny llama.
# 2. Llama-3.1-8B-sized synthetic (16 GB): the same commands twice each with
#    each stage's peak RSS (synth rss), then transformers + bitsandbytes on it
#    (scripts/real-stack/transformers_quantize.py, needs . scripts/real-stack/setup.sh)
#    and its checkpoint compared with ours.
# 3. A 70B-sized stream (131 GiB, synth stream, no disk): synth | cat against
#    synth | quantize (cpu, cuda) > /dev/null, with peak RSS.
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf .dev/limit && mkdir -p .dev/limit/cpu .dev/limit/cuda
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o .dev/limit/cpu/ ./cmd/detect ./cmd/quantize ./cmd/place
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o .dev/limit/synth ./internal/synth/cmd
	CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o .dev/limit/cuda/ ./cmd/quantize
	if [ -n "${2:-}" ]; then
		rm -rf /tmp/nf4limit-before && git worktree add -f /tmp/nf4limit-before "$2" >/dev/null
		(cd /tmp/nf4limit-before &&
			CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$OLDPWD/.dev/limit/before-cpu/" ./cmd/detect ./cmd/quantize ./cmd/place &&
			CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o "$OLDPWD/.dev/limit/before-cuda/" ./cmd/quantize)
		git worktree remove --force /tmp/nf4limit-before
		git rev-parse --short "$2" > .dev/limit/before-commit
	fi
	git rev-parse --short HEAD > .dev/limit/commit
	tar -C .dev/limit -cJf .dev/limit.tar.xz . && rm -rf .dev/limit
	ls -la .dev/limit.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack | run OUTDIR" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
T=/tmp/nf4limit
mkdir -p $T "$OUT"
tar -C $T -xJf .dev/limit.tar.xz
C=$T/cpu G=$T/cuda S=$T/synth
[ -n "${LIMIT_CPU_ONLY:-}" ] && G=$C  # a dry run of the script on a machine without a GPU
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
PARTS=${3:-1 2 3}
want() { [[ " $PARTS " == *" $1 "* ]]; }
med() { sort -n | awk '{v[NR]=$1} END {printf "median %d (%d-%d) n=%d", v[int((NR+1)/2)], v[1], v[NR], NR}'; }
{
date -u; nproc; grep -m1 'model name' /proc/cpuinfo; nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
if want 1; then
M=/dev/shm/tl; $S model -q --preset tinyllama-1.1b $M >/dev/null; cat $M/*.safetensors >/dev/null; echo "tinyllama synthetic: $(cat $M/*.safetensors | wc -c) bytes"
BUILDS=after; [ -d $T/before-cpu ] && BUILDS="before after"
echo "after: $(cat $T/commit)${BUILDS/after/}; before: $(cat $T/before-commit 2>/dev/null)"
# first CUDA use on this machine JIT-compiles the PTX into the driver's cache: once, untimed
$C/detect -q $M | $G/quantize -q --device cuda >/dev/null || echo "first CUDA run failed"
: > $T/t1
tools() { if [ $1 = before ]; then PC=$T/before-cpu PG=$T/before-cuda; [ -n "${LIMIT_CPU_ONLY:-}" ] && PG=$PC; else PC=$C PG=$G; fi; }
for r in 1 2 3 4 5; do
	s=$(date +%s%N); $C/detect -q $M | cat >/dev/null; echo "cat $(ms $s)" >> $T/t1
	for b in $BUILDS; do
		tools $b
		s=$(date +%s%N); $PC/detect -q $M | $PC/quantize -q | cat >/dev/null; echo "$b-quantize-cat $(ms $s)" >> $T/t1
		for v in cpu:disk cpu:tmpfs cudabuild-cpu:disk cuda:disk auto:disk; do
			d=${v%%:*} fs=${v#*:}; Q=$PG/quantize; dev=$d
			[ $d = cpu ] && Q=$PC/quantize
			[ $d = cudabuild-cpu ] && dev=cpu
			o=/tmp/o-$b-$d-$fs; [ $fs = tmpfs ] && o=/dev/shm/o-$b-$d-$fs
			rm -rf $o; sync
			s=$(date +%s%N); $PC/detect -q $M | $Q -q --device $dev | $PC/place -q --no-emit --json --out $o 2>$T/place.json; echo "$b-place-$d-$fs $(ms $s)" >> $T/t1
			grep -o '"in_place_bytes": [0-9]*' $T/place.json | sed "s/^/$b $d $fs: /" >> $T/inplace
		done
	done
done
echo "tinyllama detect | cat: $(awk '$1=="cat" {print $2}' $T/t1 | med) ms"
for k in $(awk '$1!="cat" {print $1}' $T/t1 | awk '!seen[$0]++'); do
	echo "tinyllama $k: $(awk -v k=$k '$1==k {print $2}' $T/t1 | med) ms"
done
sort -u $T/inplace
for o in /tmp/o-* /dev/shm/o-*; do cmp -s /tmp/o-after-cpu-disk/model.safetensors $o/model.safetensors && echo "tinyllama: $(basename $o) identical to after-cpu-disk" || echo "tinyllama: $(basename $o) DIFFERS"; done
rm -rf $M /tmp/o-* /dev/shm/o-*
# start-up: the repo's tiny llama, five rounds each
L=testdata/models/llama
for b in $BUILDS; do
	tools $b
	for v in "$PC/quantize" "$PG/quantize --device cpu" "$PG/quantize --device auto" "$PG/quantize --device cuda"; do
		: > $T/su
		for r in 1 2 3 4 5; do s=$(date +%s%N); $PC/detect -q $L | $v -q > /dev/null; ms $s >> $T/su; done
		echo "tiny llama, $b, detect | ${v#$T/}: $(med < $T/su) ms"
	done
done
fi
if want 2; then
M=/tmp/l8; $S model -q --preset llama-3.1-8b $M >/dev/null; echo "llama-3.1-8b synthetic: $(cat $M/*.safetensors | wc -c) bytes"; cat $M/*.safetensors >/dev/null
for r in $(seq ${ROUNDS8B:-2}); do
	s=$(date +%s%N); $S rss -o $T/rss -l "8b r$r cat: detect" -- $C/detect -q $M | $S rss -o $T/rss -l "8b r$r cat: cat" -- cat >/dev/null; echo "8b detect | cat: $(ms $s) ms"
	for d in cpu cuda auto; do
		Q=$G/quantize; [ $d = cpu ] && Q=$C/quantize
		rm -rf /tmp/o8-$d; sync
		s=$(date +%s%N); $S rss -o $T/rss -l "8b r$r $d: detect" -- $C/detect -q $M | $S rss -o $T/rss -l "8b r$r $d: quantize" -- $Q -q --device $d | $S rss -o $T/rss -l "8b r$r $d: place" -- $C/place -q --no-emit --json --out /tmp/o8-$d 2>$T/place8.json; grep -o '"in_place_bytes": [0-9]*' $T/place8.json | sed "s/^/8b r$r $d: /"; echo "8b detect | quantize --device $d | place: $(ms $s) ms"
		[ $r != ${ROUNDS8B:-2} ] && [ $d != cpu ] && rm -rf /tmp/o8-$d
	done
done
cat $T/rss
cmp -s /tmp/o8-cpu/model-00001-of-00002.safetensors /tmp/o8-cuda/model-00001-of-00002.safetensors; ls /tmp/o8-cpu
# nf4pipe_plan.json records each stage's arguments (--device) and the device
# quantize named: those lines differ by design; every other file must not.
planlines() { grep -v -e '"--device' -e '"--out=' -e '"device"' "$1"; }
for d in cuda auto; do
	same=yes
	for f in /tmp/o8-cpu/*; do
		g=/tmp/o8-$d/$(basename "$f")
		if [ "$(basename "$f")" = nf4pipe_plan.json ]; then
			diff <(planlines "$f") <(planlines "$g") >/dev/null || { same=no; echo "8b: $d nf4pipe_plan.json differs beyond --device/--out/device"; }
		else
			cmp -s "$f" "$g" || { same=no; echo "8b: $d $(basename "$f") DIFFERS"; }
		fi
	done
	echo "8b: $d checkpoint identical to cpu (cmp of every file, nf4pipe_plan.json but for --device/--out/device): $same"
done
rm -rf /tmp/o8-cuda /tmp/o8-auto
if [ -n "${PYTHONPATH:-}" ]; then
	sync; s=$(date +%s%N); python3 scripts/real-stack/transformers_quantize.py $M /tmp/o8-tf bfloat16 2>/dev/null; echo "8b transformers + bitsandbytes (load, quantize on the GPU, save): $(ms $s) ms wall"
	python3 scripts/real-stack/compare_checkpoints.py /tmp/o8-cpu /tmp/o8-tf 8b 2>&1 | tail -2 | cut -c1-300
	rm -rf /tmp/o8-tf
fi
rm -rf $M /tmp/o8-cpu
fi
if want 3; then
for r in 1; do
	s=$(date +%s%N); $S stream --gib 131 | $S rss -o $T/rss70 -l "70b r$r: cat" -- cat >/dev/null; echo "70b-sized stream | cat: $(ms $s) ms"
	for d in cpu cuda; do
		Q=$G/quantize; [ $d = cpu ] && Q=$C/quantize
		s=$(date +%s%N); $S stream --gib 131 | $S rss -o $T/rss70 -l "70b r$r: quantize --device $d" -- $Q -q --device $d >/dev/null; echo "70b-sized stream | quantize --device $d: $(ms $s) ms"
	done
done
cat $T/rss70
fi
} 2>&1 | tee "$OUT/limit.txt"
