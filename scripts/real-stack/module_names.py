"""The module names transformers gives a model in memory (what device_map keys
must name), next to the key names its checkpoint stores.

usage: module_names.py MODEL_DIR ...  -> one JSON line per model: the modules
of depth <= 2, the first decoder layer's path, and the first few stored keys.
Built on the meta device from config.json: no weights are read."""
import json, sys
import torch
from accelerate import init_empty_weights
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText

for d in sys.argv[1:]:
    try:
        cfg = AutoConfig.from_pretrained(d)
        auto = AutoModelForImageTextToText if hasattr(cfg, "vision_config") else AutoModelForCausalLM
        with init_empty_weights():
            m = auto.from_config(cfg)
        names = [n for n, _ in m.named_modules() if n and n.count(".") <= 2 and not n.split(".")[-1].isdigit()]
        layer0 = [n for n, _ in m.named_modules() if n.endswith("layers.0")]
        print(json.dumps({"dir": d, "class": type(m).__name__, "modules": names, "layers0": layer0}), flush=True)
    except Exception as e:
        print(json.dumps({"dir": d, "error": repr(e)[:400]}), flush=True)
