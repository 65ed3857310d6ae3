"""bitsandbytes' double-quantization offsets for small float32/float16/bfloat16
tensors, with torch's mean of the same absmax: usage bnb_offsets.py OUT.json"""
import json, sys, torch
import bitsandbytes.functional as F
rows = []
torch.manual_seed(0)
for dt in (torch.float32, torch.float16, torch.bfloat16):
    for shape, bs in (([3, 100], 64), ([128, 256], 64), ([257, 129], 128), ([16, 4096], 64), ([5, 7], 64), ([1000, 1000], 64)):
        x = (torch.randn(shape) * torch.exp(torch.randn(shape))).to(dt).cuda()
        _, raw = F.quantize_4bit(x, blocksize=bs, quant_type="nf4", compress_statistics=False)
        q, st = F.quantize_4bit(x, blocksize=bs, quant_type="nf4", compress_statistics=True)
        a = raw.absmax.float()
        rows.append({"dtype": str(dt), "shape": shape, "blocksize": bs, "n": a.numel(),
                     "offset": st.offset.item(), "torch_mean": a.mean().item(), "torch_sum": a.sum().item(),
                     "absmax": a.cpu().tolist() if a.numel() <= 20000 else None})
json.dump(rows, open(sys.argv[1], "w"))
print("bnb offsets:", [(r["dtype"], r["n"], r["offset"] == r["torch_mean"]) for r in rows])
