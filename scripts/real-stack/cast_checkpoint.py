"""Rewrite a safetensors checkpoint's floating tensors in another dtype:
usage cast_checkpoint.py SRC DST DTYPE (float16 | float32). Copies the JSON files."""
import glob, os, shutil, sys, torch
from safetensors.torch import load_file, save_file
src, dst, dt = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
os.makedirs(dst, exist_ok=True)
for f in glob.glob(os.path.join(src, "*.json")):
    shutil.copy(f, dst)
for f in sorted(glob.glob(os.path.join(src, "*.safetensors"))):
    t = load_file(f)
    save_file({k: v.to(dt) if v.is_floating_point() else v for k, v in t.items()}, os.path.join(dst, os.path.basename(f)), metadata={"format": "pt"})
if os.path.exists(os.path.join(src, "model.safetensors.index.json")):
    import json
    idx = json.load(open(os.path.join(src, "model.safetensors.index.json")))
    size = sum(os.path.getsize(f) for f in glob.glob(os.path.join(dst, "*.safetensors")))
    idx.setdefault("metadata", {})["total_size"] = size
    json.dump(idx, open(os.path.join(dst, "model.safetensors.index.json"), "w"), indent=2)
