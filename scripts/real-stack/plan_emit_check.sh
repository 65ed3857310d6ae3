#!/usr/bin/env bash
# On the device machine (after `. scripts/real-stack/setup.sh`): runs the
# snippet that `plan --emit python` prints, as printed, for each MODEL_DIR and
# GPU preset, and compares the peak reserved it measures with the plan's.
# The presets should have compute capability >= 8.0, so that the H200 runs the
# attention kernel the plan chose for them.
#   usage: plan_emit_check.sh BIN_DIR MODEL_DIR[:PRESET[,PRESET...]] ...
# BIN_DIR holds detect and plan; a model dir is a 16-bit checkpoint (synth
# model --config ...) or an nf4pipe 4-bit one. One line per run:
#   model preset predicted_bytes measured_bytes error_percent
set -euo pipefail
bin=$1
shift
out=$(mktemp -d)
for arg in "$@"; do
	dir=${arg%%:*}
	presets=${arg#*:}
	[ "$presets" = "$arg" ] && presets=a10g,rtx4090
	for preset in ${presets//,/ }; do
		snip=$out/$(basename "$dir")-$preset.py
		"$bin/detect" "$dir" 2>/dev/null | "$bin/plan" --gpus "$preset" --emit python --model-path "$dir" >"$snip" || true
		pred=$(sed -n 's/^# predicted peak torch.cuda.max_memory_reserved (largest device): \([0-9]*\) bytes.*/\1/p' "$snip")
		meas=$(cd "$out" && python3 "$snip" 2>"$snip.err" | sed -n 's/^cuda:[0-9]* peak reserved \([0-9]*\) bytes$/\1/p' | sort -n | tail -1)
		if [ -z "$meas" ]; then
			echo "$(basename "$dir") $preset $pred FAILED (see $snip.err)"
			tail -5 "$snip.err"
			continue
		fi
		python3 -c "import sys; p, m = int(sys.argv[1]), int(sys.argv[2]); print(sys.argv[3], sys.argv[4], p, m, '%+.1f' % (100 * (p / m - 1)))" "$pred" "$meas" "$(basename "$dir")" "$preset"
	done
done
