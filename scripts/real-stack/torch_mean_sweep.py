"""torch's float32 mean on the GPU, for the double-quantization offset.

usage: torch_mean_sweep.py OUTDIR [MAXN] [NRANDOM]

Writes OUTDIR/torchmean.bin: for each distribution d (0..3) and each count n in
the sweep, the float32 torch.mean and torch.sum of the first n values of the
sequence meansweep(d) (see pkg/quant/meansweep.go, which regenerates it bit for
bit), as records <u8 d, u32 n, f32 mean, f32 sum>, little-endian.
The sweep: every n from 1 to MAXN (default 70000) for d = 0 and 1, plus NRANDOM
(default 300) log-uniform n up to 2e7 and the tensor sizes of real models for
every d. Also writes OUTDIR/torchmean.json with the GPU's geometry and versions.
"""
import json, struct, sys, math
import numpy as np
import torch

def meansweep(d, n):
    i = np.arange(n, dtype=np.uint64)
    h = ((i + np.uint64(d) * np.uint64(0x01000193)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    def mix(h):
        h = h * np.uint32(0x9E3779B1)
        h ^= h >> np.uint32(15)
        h = h * np.uint32(0x85EBCA77)
        h ^= h >> np.uint32(13)
        h = h * np.uint32(0xC2B2AE3D)
        h ^= h >> np.uint32(16)
        return h
    with np.errstate(over="ignore"):
        h = mix(h)
        h2 = mix(h ^ np.uint32(0x5BD1E995))
    u = (h >> np.uint32(8)).astype(np.float32) * np.float32(2.0 ** -24)
    if d in (0, 1, 3):
        v = np.float32(0.01) + np.float32(0.09) * u
    else:  # 2: heavy-tailed, 16 binades
        k = (h2 % np.uint32(16)).astype(np.int32) - 10
        v = (np.float32(1) + u) * np.ldexp(np.float32(1), k).astype(np.float32)
    b = v.view(np.uint32)
    if d == 1:  # round to bfloat16
        b = (b + np.uint32(0x7FFF) + ((b >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    if d == 3:  # round to 11 significant bits (float16's precision)
        b = (b + np.uint32(0xFFF) + ((b >> np.uint32(13)) & np.uint32(1))) & np.uint32(0xFFFFE000)
    return b.view(np.float32)

REAL = [8192, 65536, 180224, 262144, 786432, 802816, 917504, 1048576, 131072, 229376,
        3670016, 8208384, 4194304, 2 * 10**7, 16 * 10**6]

def main():
    out = sys.argv[1]
    maxn = int(sys.argv[2]) if len(sys.argv) > 2 else 70000
    nrand = int(sys.argv[3]) if len(sys.argv) > 3 else 300
    rng = np.random.default_rng(1)
    rand = sorted(set(int(x) for x in np.exp(rng.uniform(math.log(maxn), math.log(2e7), nrand))) | set(REAL))
    recs = []
    for d in range(4):
        ns = (list(range(1, maxn + 1)) if d in (0, 1) else list(range(1, 2049))) + rand
        top = max(ns)
        x = torch.from_numpy(meansweep(d, top)).cuda()
        for lo in range(0, len(ns), 4096):
            chunk = ns[lo:lo + 4096]
            m = torch.stack([x[:n].mean() for n in chunk]).cpu().numpy()
            s = torch.stack([x[:n].sum() for n in chunk]).cpu().numpy()
            for n, a, b in zip(chunk, m, s):
                recs.append(struct.pack("<BIff", d, n, float(a), float(b)))
        print(f"dist {d}: {len(ns)} counts", flush=True)
    with open(f"{out}/torchmean.bin", "wb") as f:
        f.write(b"".join(recs))
    p = torch.cuda.get_device_properties(0)
    json.dump({"gpu": p.name, "sms": p.multi_processor_count,
               "threads_per_sm": p.max_threads_per_multi_processor,
               "torch": torch.__version__, "cuda": torch.version.cuda, "records": len(recs)},
              open(f"{out}/torchmean.json", "w"))

if __name__ == "__main__":
    main()
