#!/usr/bin/env bash
# Issue 5's whole-tool figure: detect | quantize | place --out on a synthetic
# TinyLlama-1.1B (2.2 GB bf16) in the page cache, with the baselines that bound
# it, on the device machine (16 cores), with tools built here:
#   scripts/bench-whole.sh pack [BEFORE_COMMIT]  # here: bin/whole.tar.xz (and the tools of an older commit)
#   scripts/bench-whole.sh run OUT               # there: figures into OUT/whole.txt
# Every timed run starts with no output directory (removing one is not timed).
set -uo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in
pack)
	set -e
	rm -rf bin/whole && mkdir -p bin/whole/now bin/whole/cuda
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/whole/now/ ./cmd/detect ./cmd/quantize ./cmd/place
	CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o bin/whole/synth ./internal/synth/cmd
	CGO_ENABLED=1 go build -tags cuda -trimpath -ldflags '-s -w' -o bin/whole/cuda/ ./cmd/quantize
	CGO_ENABLED=0 go test -c -o bin/whole/safetensors.test ./pkg/safetensors
	CGO_ENABLED=0 go test -c -o bin/whole/quantize.test ./pkg/quantize
	if [ -n "${2:-}" ]; then
		wt=$(mktemp -d)
		git worktree add -q --detach "$wt" "$2"
		(cd "$wt" && CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$OLDPWD/bin/whole/before/" ./cmd/detect ./cmd/quantize ./cmd/place)
		git worktree remove --force "$wt"
	fi
	tar -C bin/whole -cJf bin/whole.tar.xz . && rm -rf bin/whole
	ls -la bin/whole.tar.xz
	exit 0 ;;
run) ;;
*) echo "usage: $0 pack [BEFORE_COMMIT] | run OUTDIR" >&2; exit 2 ;;
esac
OUT=${2:?OUTDIR}
T=/tmp/nf4whole
mkdir -p $T "$OUT"
tar -C $T -xJf bin/whole.tar.xz
M=/tmp/tl
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }
{
	date -u; nproc; grep -m1 'model name' /proc/cpuinfo; uname -r; df -h /tmp /dev/shm | tail -2
	$T/synth model --quiet --preset tinyllama-1.1b $M > /dev/null 2>&1
	cat $M/* > /dev/null; du -sh $M
	s=$(date +%s%N); dd if=/dev/zero bs=1M count=2048 status=none | cat > /dev/null; echo "dd bs=1M 2 GiB | cat: $(ms $s) ms"
	sets="now"; [ -d $T/before ] && sets="before now"
	for i in 1 2 3 4 5; do
		for v in $sets; do
			B=$T/$v
			s=$(date +%s%N); $B/detect -q $M | cat > /dev/null; echo "$v detect | cat: $(ms $s) ms"
			s=$(date +%s%N); $B/detect -q $M | $B/quantize -q | cat > /dev/null; echo "$v detect | quantize | cat: $(ms $s) ms"
			for out in /tmp/o /dev/shm/o; do
				rm -rf $out; sync
				s=$(date +%s%N); $B/detect -q $M | $B/quantize -q | $B/place -q --no-emit --out $out; echo "$v pipeline, out $out: $(ms $s) ms"
			done
			rm -rf /tmp/o3; sync
			s=$(date +%s%N); $B/detect -q $M | $B/quantize -q | $B/place -q --no-emit --max-shard-size 300MB --out /tmp/o3; echo "$v pipeline, 300MB shards on /tmp: $(ms $s) ms"
		done
	done
	[ -d $T/before ] && { $T/before/detect -q $M | $T/before/quantize -q | $T/before/place -q --no-emit --force --out /tmp/ob; diff -r /tmp/ob /tmp/o > /dev/null && echo "before and now checkpoints identical" || echo "before and now checkpoints DIFFER"; }
	diff -r /tmp/o /dev/shm/o > /dev/null && echo "disk and tmpfs checkpoints identical" || echo "disk and tmpfs checkpoints DIFFER"
	for i in 1 2 3; do
		rm -rf /tmp/oc; sync
		s=$(date +%s%N); $T/now/detect -q $M | $T/cuda/quantize -q --device cuda | $T/now/place -q --no-emit --out /tmp/oc; echo "pipeline with quantize --device cuda, out /tmp: $(ms $s) ms"
	done
	diff -r /tmp/o /tmp/oc > /dev/null && echo "cpu and cuda checkpoints identical" || echo "cpu and cuda checkpoints DIFFER"
	$T/now/detect -q $M | $T/now/quantize -q > /dev/shm/q.stream
	for out in /dev/shm/op /tmp/op; do for i in 1 2 3; do
		rm -rf $out; sync
		s=$(date +%s%N); $T/now/place -q --no-emit --out $out < /dev/shm/q.stream; echo "place alone from a tmpfs stream, out $out: $(ms $s) ms"
	done; done
	$T/now/detect -q $M > /dev/shm/d.stream
	(cd pkg/quantize && NF4PIPE_STREAM=/dev/shm/d.stream $T/quantize.test -test.run '^$' -test.bench StageFile -test.benchtime 5x 2>&1 | grep Benchmark)
	(cd pkg/safetensors && NF4PIPE_BENCH_DIR=/dev/shm $T/safetensors.test -test.run '^$' -test.bench AssemblyCopy -test.benchtime 5x 2>&1 | grep Benchmark)
	(cd pkg/safetensors && $T/safetensors.test -test.run '^$' -test.bench AssemblyCopy -test.benchtime 5x 2>&1 | grep Benchmark)
	rm -rf /tmp/o /tmp/o3 /tmp/oc /tmp/ob /tmp/op /dev/shm/o /dev/shm/op /dev/shm/q.stream /dev/shm/d.stream
} > "$OUT/whole.txt" 2>&1
cat "$OUT/whole.txt"
