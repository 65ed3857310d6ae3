#!/usr/bin/env bash
# Runs the nf4pipe pipeline on a small model: detect | plan | quantize | place | verify.
# Stages that are not built yet are left out, so the demo grows with the project.
# GPUS picks the plan's GPUs (default a10g: compute capability 8.6, so bfloat16 compute
# as in the reference checkpoint; a T4 would plan float16).
set -euo pipefail
MODEL=${MODEL:-testdata/models/llama}
OUT=${OUT:-out/$(basename "$MODEL")-nf4}
BIN=${BIN:-bin}

have() { [ -x "$BIN/$1" ]; }
mkdir -p "$(dirname "$OUT")"
rm -rf "$OUT"

pipeline=()
have detect   && pipeline+=("$BIN/detect $MODEL")
have plan     && pipeline+=("$BIN/plan --gpus ${GPUS:-a10g}")
have quantize && pipeline+=("$BIN/quantize")
have place    && pipeline+=("$BIN/place --out $OUT")
have verify   && pipeline+=("$BIN/verify$(have place && echo " --checkpoint $OUT") --reference $MODEL")

if [ ${#pipeline[@]} -eq 0 ]; then
  echo "demo: no stage is built yet" >&2
  exit 1
fi
cmd=$(IFS='|'; echo "${pipeline[*]}")
echo "+ ${cmd//|/ | }" >&2
if have verify; then eval "$cmd"; else eval "$cmd" >/dev/null; fi
if have place; then
  echo "checkpoint written to $OUT" >&2
  # The tiny llama ships with the checkpoint transformers + bitsandbytes wrote
  # for it: ours must be the same, byte for byte.
  ref=${MODEL%/}-bnb-nf4
  if [ -d "$ref" ]; then
    for f in model.safetensors config.json; do
      if cmp -s "$OUT/$f" "$ref/$f"; then
        echo "$OUT/$f is byte-identical to transformers' $ref/$f" >&2
      else
        echo "$OUT/$f differs from transformers' $ref/$f" >&2
      fi
    done
  fi
fi
