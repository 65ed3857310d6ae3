"""Load two 4-bit checkpoints and compare their logits on the same input ids:
usage logits.py OURS THEIRS. Prints one JSON line (max |difference|)."""
import json, sys, torch
from transformers import AutoModelForCausalLM
ids = (torch.arange(1, 257, dtype=torch.long).reshape(2, 128) * 7919) % 30000 + 1
out = []
for d in sys.argv[1:3]:
    m = AutoModelForCausalLM.from_pretrained(d, device_map="cuda:0")
    with torch.no_grad():
        out.append(m(input_ids=ids.cuda()).logits.float().cpu())
    del m; torch.cuda.empty_cache()
print(json.dumps({"logits": sys.argv[1:3], "max_abs_diff": (out[0] - out[1]).abs().max().item()}))
