#!/usr/bin/env bash
# On the device machine (after `. scripts/real-stack/setup.sh`): measures
# Trainer rows for the planner across families, one process per row, with
# scripts/real-stack/trainer_rows.py, into OUT.jsonl. Each family gets the
# same small grid: checkpointing on and off, both recipes, three optimizers,
# 1024 to 8192 tokens; the planner is then judged on rows it was not fitted on
# (go test ./pkg/plan -run 'TestMeasured|TestSlack' -v, after copying OUT.jsonl
# into testdata/plan).
#   usage: plan_rows.sh BIN_DIR WORK_DIR OUT.jsonl [NAME=CONFIG ...]
# BIN_DIR holds synth, detect, quantize and place; WORK_DIR needs room for one
# 16-bit model and its 4-bit copy at a time.
set -euo pipefail
bin=$1 work=$2 out=$3
shift 3
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
	c=testdata/configs
	models=(qwen2.5-7b=$c/Qwen__Qwen2.5-7B-Instruct.json qwen3-8b=$c/Qwen__Qwen3-8B.json
		gemma2-9b=$c/google__gemma-2-9b-it.json gemma3-1b=$c/google__gemma-3-1b-it.json
		phi3-mini=$c/microsoft__Phi-3-mini-4k-instruct.json mistral-7b=$c/mistralai__Mistral-7B-v0.1.json
		deepseek-v2-lite=$c/deepseek-ai__DeepSeek-V2-Lite.json llama3.2-1b=$c/meta-llama__Llama-3.2-1B-Instruct.json)
fi
grid=(
	'{"seq":2048,"batch":1,"gc":true,"opt":"paged_adamw_8bit","recipe":"hf-peft"}'
	'{"seq":8192,"batch":1,"gc":true,"opt":"paged_adamw_8bit","recipe":"hf-peft"}'
	'{"seq":4096,"batch":1,"gc":true,"opt":"adamw_8bit","recipe":"lean"}'
	'{"seq":1024,"batch":2,"gc":false,"opt":"adamw","recipe":"hf-peft"}'
	'{"seq":2048,"batch":2,"gc":false,"opt":"paged_adamw_8bit","recipe":"lean","rank":64}'
)
for m in "${models[@]}"; do
	name=${m%%=*} cfg=${m#*=}
	rm -rf "$work/src" "$work/nf4"
	"$bin/synth" model --quiet --config "$cfg" "$work/src" >/dev/null
	"$bin/detect" -q "$work/src" | "$bin/quantize" -q | "$bin/place" -q --out "$work/nf4"
	rm -rf "$work/src"
	for row in "${grid[@]}"; do
		python3 scripts/real-stack/trainer_rows.py "$work/nf4" "$name" "[$row]" >>"$out" || echo "$name $row: failed" >&2
	done
done
