# examples/prep.mk — prepare Hugging Face checkpoints for QLoRA with nf4pipe, as
# a Makefile: each model directory gets one target that reruns the pipeline
#
#     detect SRC | plan | quantize | place --out SRC-nf4 | verify --reference SRC
#
# only when the source changed (its config.json, *.safetensors or index are
# newer than the output), and keeps the reports beside the output:
#
#     SRC-nf4/                the bitsandbytes 4-bit checkpoint (transformers loads it)
#     SRC-nf4.detect.json     detect --json: architecture, parameter and byte counts
#     SRC-nf4.plan.json       plan --report --json: device map, settings, predicted memory
#     SRC-nf4.verify.json     verify --json: per-tensor error and integrity report
#     SRC-nf4.log             what the stages said on stderr
#
# Usage (from the repository root, after `make build`; or set NF4PIPE to the
# directory holding the tools, e.g. NF4PIPE= for tools on the PATH):
#
#     make -f examples/prep.mk MODELS="models/TinyLlama-1.1B models/Llama-3.1-8B"
#     make -f examples/prep.mk MODELS=models/Llama-3.1-8B PLAN_FLAGS="--gpus t4 --seq-len 1024"
#     make -f examples/prep.mk MODELS=models/Llama-3.1-8B models/Llama-3.1-8B-nf4   # one model
#     make -f examples/prep.mk MODELS=... clean                                      # outputs and reports
#     make -j2 -f examples/prep.mk MODELS=...     # models in parallel (each stage streams: memory stays bounded)
#
# Or include it from your own Makefile:  MODELS := a b c  then  include path/to/prep.mk
#
# A failing stage (bad input, a model that does not fit the GPUs, a verify
# integrity failure or quality flag) fails the target and removes the half-made
# checkpoint, so the next run tries again; the reports stay for reading.
# Model paths must not contain spaces (make cannot quote them).

NF4PIPE     ?= bin
MODELS      ?=
SUFFIX      ?= -nf4
PLAN_FLAGS  ?= --gpus 24GiB
QUANT_FLAGS ?=
PLACE_FLAGS ?=
VERIFY      ?= 1

SHELL       := bash
.SHELLFLAGS := -eu -o pipefail -c

tool    = $(if $(NF4PIPE),$(NF4PIPE)/$(1),$(1))
sources := $(patsubst %/,%,$(MODELS))
outputs := $(addsuffix $(SUFFIX),$(sources))

.PHONY: prep clean $(outputs)
prep: $(outputs)

# One rule set per model: SRC-nf4 (phony, the name to ask for) depends on
# SRC-nf4/config.json, which place writes last into a directory it renames
# into place, so its time is the time the whole checkpoint was completed.
define model_rules
$(1)$(SUFFIX): $(1)$(SUFFIX)/config.json

$(1)$(SUFFIX)/config.json: $(1)/config.json $(wildcard $(1)/*.safetensors $(1)/model.safetensors.index.json)
	@echo "prep: $(1) -> $(1)$(SUFFIX)"
	@rm -f $(1)$(SUFFIX).log
	$(call tool,detect) --info --json $(1) > $(1)$(SUFFIX).detect.json
	$(if $(PLAN_FLAGS),$(call tool,detect) -q $(1)/config.json | $(call tool,plan) $(PLAN_FLAGS) --report --json > $(1)$(SUFFIX).plan.json)
	( $(call tool,detect) -q $(1) \
	  $(if $(PLAN_FLAGS),| $(call tool,plan) -q $(PLAN_FLAGS)) \
	  | $(call tool,quantize) $(QUANT_FLAGS) \
	  | $(call tool,place) --force --out $(1)$(SUFFIX) $(PLACE_FLAGS) $(if $(filter 1,$(VERIFY)),,--no-emit) \
	  $(if $(filter 1,$(VERIFY)),| $(call tool,verify) --reference $(1) --json > $(1)$(SUFFIX).verify.json) \
	) 2> >(tee -a $(1)$(SUFFIX).log >&2) || { rm -rf $(1)$(SUFFIX); exit 1; }
	@touch $(1)$(SUFFIX)/config.json
endef
$(foreach m,$(sources),$(eval $(call model_rules,$(m))))

clean:
	rm -rf $(outputs) $(foreach o,$(outputs),$(o).detect.json $(o).plan.json $(o).verify.json $(o).log)
