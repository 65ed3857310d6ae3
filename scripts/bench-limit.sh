#!/usr/bin/env bash
# Issue 18's figures in one run on the GPU machine (16 cores, H200), with tools
# built here:
#   scripts/bench-limit.sh pack        # here: .dev/limit.tar.xz (CPU tools, CUDA quantize, synth)
#   scripts/bench-limit.sh run OUT [PARTS]  # there: every figure to stdout and OUT/limit.txt
#                                      # PARTS: any of 1 2 3 (default all)
# 1. TinyLlama-1.1B-sized synthetic (2.2 GB) in the page cache, five rounds
#    interleaved: detect | cat, detect | quantize | cat, detect | quantize | place
#    --out with --device cpu, cuda and auto; the checkpoints compared (cmp).
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
# first CUDA use on this machine JIT-compiles the PTX into the driver's cache: once, untimed
$C/detect -q $M | $G/quantize -q --device cuda >/dev/null || echo "first CUDA run failed"
: > $T/t1
for r in 1 2 3 4 5; do
	s=$(date +%s%N); $C/detect -q $M | cat >/dev/null; echo "cat $(ms $s)" >> $T/t1
	s=$(date +%s%N); $C/detect -q $M | $C/quantize -q | cat >/dev/null; echo "quantize-cat $(ms $s)" >> $T/t1
	for d in cpu cuda auto; do
		Q=$G/quantize; [ $d = cpu ] && Q=$C/quantize
		rm -rf /tmp/o-$d; sync
		s=$(date +%s%N); $C/detect -q $M | $Q -q --device $d | $C/place -q --no-emit --out /tmp/o-$d; echo "place-$d $(ms $s)" >> $T/t1
	done
done
for k in cat quantize-cat place-cpu place-cuda place-auto; do
	case $k in cat) l="detect | cat" ;; quantize-cat) l="detect | quantize | cat" ;; *) l="detect | quantize --device ${k#place-} | place --out" ;; esac
	echo "tinyllama $l: $(awk -v k=$k '$1==k {print $2}' $T/t1 | med) ms"
done
for d in cuda auto; do cmp -s /tmp/o-cpu/model.safetensors /tmp/o-$d/model.safetensors && echo "tinyllama: $d checkpoint identical to cpu" || echo "tinyllama: $d checkpoint DIFFERS"; done
rm -rf $M /tmp/o-*
fi
if want 2; then
M=/tmp/l8; $S model -q --preset llama-3.1-8b $M >/dev/null; echo "llama-3.1-8b synthetic: $(cat $M/*.safetensors | wc -c) bytes"; cat $M/*.safetensors >/dev/null
for r in $(seq ${ROUNDS8B:-2}); do
	s=$(date +%s%N); $S rss -o $T/rss -l "8b r$r cat: detect" -- $C/detect -q $M | $S rss -o $T/rss -l "8b r$r cat: cat" -- cat >/dev/null; echo "8b detect | cat: $(ms $s) ms"
	for d in cpu cuda auto; do
		Q=$G/quantize; [ $d = cpu ] && Q=$C/quantize
		rm -rf /tmp/o8-$d; sync
		s=$(date +%s%N); $S rss -o $T/rss -l "8b r$r $d: detect" -- $C/detect -q $M | $S rss -o $T/rss -l "8b r$r $d: quantize" -- $Q -q --device $d | $S rss -o $T/rss -l "8b r$r $d: place" -- $C/place -q --no-emit --out /tmp/o8-$d; echo "8b detect | quantize --device $d | place: $(ms $s) ms"
		[ $r != ${ROUNDS8B:-2} ] && [ $d != cpu ] && rm -rf /tmp/o8-$d
	done
done
cat $T/rss
cmp -s /tmp/o8-cpu/model-00001-of-00002.safetensors /tmp/o8-cuda/model-00001-of-00002.safetensors; ls /tmp/o8-cpu
for d in cuda auto; do diff -rq /tmp/o8-cpu /tmp/o8-$d >/dev/null && echo "8b: $d checkpoint identical to cpu" || echo "8b: $d checkpoint DIFFERS"; done
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
