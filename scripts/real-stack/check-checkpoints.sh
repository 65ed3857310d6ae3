#!/usr/bin/env bash
# Whole checkpoints against transformers + bitsandbytes, entry by entry, on a
# GPU machine with torch, transformers and bitsandbytes (scripts/real-stack/setup.sh
# builds bitsandbytes from source). Usage, from the repository root:
#   BIN=bin scripts/real-stack/check-checkpoints.sh WORKDIR SPEC...
# SPEC is NAME:SOURCE:DTYPE, SOURCE a synth preset (preset=tinyllama-1.1b) or a
# config.json (config=PATH), DTYPE bfloat16 | float16 | float32. For each it
# makes the source with bin/synth (cast to DTYPE), runs detect | quantize |
# place, lets transformers quantize and save the same source, and prints
# compare_checkpoints.py's JSON line. With CUDA=1 (bin/cuda/quantize) it also
# checks that quantize --device cuda writes the same bytes as the CPU; with
# LOGITS=1 it compares both checkpoints' logits; DEADLINE (epoch seconds) skips
# the specs left when it has passed.
set -uo pipefail
W=${1:?WORKDIR}; shift
BIN=${BIN:-bin}
S=$(dirname "$0")
for spec in "$@"; do
	IFS=: read -r name src dt <<<"$spec"
	if [ -n "${DEADLINE:-}" ] && [ "$(date +%s)" -gt "$DEADLINE" ]; then echo "{\"check\": \"$name\", \"skipped\": \"out of time\"}"; continue; fi
	rm -rf "$W/src" "$W/src-$dt" "$W/ours" "$W/theirs" "$W/ours-cuda"; mkdir -p "$W"
	case $src in
	preset=*) "$BIN/synth" model -q --preset "${src#preset=}" "$W/src" >/dev/null ;;
	config=*) "$BIN/synth" model -q --config "${src#config=}" "$W/src" >/dev/null ;;
	esac || { echo "{\"check\": \"$name\", \"error\": \"synth failed\"}"; continue; }
	in=$W/src
	if [ "$dt" != bfloat16 ]; then python3 "$S/cast_checkpoint.py" "$W/src" "$W/src-$dt" "$dt" && in=$W/src-$dt; fi
	"$BIN/detect" -q "$in" | "$BIN/quantize" -q | "$BIN/place" -q --out "$W/ours" >/dev/null || echo "{\"check\": \"$name\", \"error\": \"our pipeline failed\"}"
	if [ "${CUDA:-0}" = 1 ]; then
		"$BIN/detect" -q "$in" | "$BIN/cuda/quantize" -q --device cuda | "$BIN/place" -q --out "$W/ours-cuda" >/dev/null
		if cmp -s "$W/ours/model.safetensors.index.json" "$W/ours-cuda/model.safetensors.index.json" 2>/dev/null || [ -f "$W/ours/model.safetensors" ]; then
			same=yes; for f in "$W"/ours/*.safetensors; do cmp -s "$f" "$W/ours-cuda/$(basename "$f")" || same=no; done
			echo "{\"check\": \"$name\", \"cuda_equals_cpu\": \"$same\"}"
		fi
	fi
	python3 "$S/transformers_quantize.py" "$in" "$W/theirs" "$dt" 2>/dev/null | tail -1
	python3 "$S/compare_checkpoints.py" "$W/ours" "$W/theirs" "$name"
	[ "${LOGITS:-0}" = 1 ] && python3 "$S/logits.py" "$W/ours" "$W/theirs" 2>/dev/null | tail -1
done
