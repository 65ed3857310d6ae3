"""What transformers + bitsandbytes write for a model: usage
transformers_quantize.py SRC OUT DTYPE (bfloat16 | float16 | float32)

from_pretrained(SRC, quantization_config=NF4 + double quant + bf16 compute,
device_map="cuda:0", dtype=DTYPE) then save_pretrained(OUT): the checkpoint a
user gets from the real stack, to compare with detect | quantize | place."""
import sys, time, torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, BitsAndBytesConfig

src, out, dt = sys.argv[1], sys.argv[2], getattr(torch, sys.argv[3])
q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                       bnb_4bit_compute_dtype=torch.bfloat16)
cfg = AutoConfig.from_pretrained(src)
auto = AutoModelForImageTextToText if hasattr(cfg, "vision_config") else AutoModelForCausalLM
t0 = time.time()
m = auto.from_pretrained(src, quantization_config=q, device_map="cuda:0", dtype=dt)
m.save_pretrained(out)
print(f"transformers: {src} -> {out} ({sys.argv[3]}) in {time.time() - t0:.1f} s", flush=True)
