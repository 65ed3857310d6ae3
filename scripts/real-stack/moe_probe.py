"""What transformers + peft do with a MoE model's experts under QLoRA: the
experts module's class and parameters, which modules the harness's LoRA
targets reach (trainer_rows.py's rule: every leaf name of a Linear4bit), and
the trainable parameters per kind of module.

usage: moe_probe.py DIR -> one JSON line (DIR: a 4-bit checkpoint from place)."""
import json, re, sys, collections
import torch, bitsandbytes as bnb
from transformers import AutoModelForCausalLM
from peft import LoraConfig, get_peft_model

path = sys.argv[1]
model = AutoModelForCausalLM.from_pretrained(path, device_map="cuda:0", dtype=torch.bfloat16)
targets = sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)})
experts = {}
for n, m in model.named_modules():
    if n.endswith("mlp.experts") and not experts:
        experts = {"module": n, "class": type(m).__name__,
                   "params": {k: [list(p.shape), str(p.dtype)] for k, p in m.named_parameters(recurse=False)},
                   "children": sorted({type(c).__name__ for c in m.children()})}
model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=targets, task_type="CAUSAL_LM"))
by = collections.Counter()
for n, p in model.named_parameters():
    if p.requires_grad:
        by[re.sub(r"\.\d+\.", ".N.", n)] += p.numel()
print(json.dumps({"dir": path, "targets": targets, "experts": experts,
                  "trainable": sum(by.values()), "by_name": dict(by.most_common(24))}), flush=True)
