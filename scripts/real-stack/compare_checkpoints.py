"""Compare two 4-bit checkpoints entry by entry: usage
compare_checkpoints.py OURS THEIRS [LABEL]

Reads every safetensors entry of both (sharded or not) and reports, as one JSON
line: entries only in one, entries whose dtype, shape or bytes differ, and for
quant_state entries which JSON fields differ; config.json keys that differ.
Exit status 0 when every model entry is identical."""
import glob, json, os, sys
from safetensors import safe_open

def entries(d):
    out = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                out[k] = (f, s)
    return out

def raw(d):
    res = {}
    for f in sorted(glob.glob(os.path.join(d, "*.safetensors"))):
        with safe_open(f, "pt") as s:
            for k in s.keys():
                t = s.get_tensor(k)
                res[k] = (str(t.dtype), tuple(t.shape), t.contiguous().view(-1).view(__import__("torch").uint8).numpy().tobytes())
    return res

ours, theirs = sys.argv[1], sys.argv[2]
label = sys.argv[3] if len(sys.argv) > 3 else os.path.basename(ours.rstrip("/"))
a, b = raw(ours), raw(theirs)
only_ours = sorted(set(a) - set(b)); only_theirs = sorted(set(b) - set(a))
diff = []
for k in sorted(set(a) & set(b)):
    if a[k] != b[k]:
        d = {"entry": k}
        if a[k][0] != b[k][0] or a[k][1] != b[k][1]:
            d["ours"] = [a[k][0], a[k][1]]; d["theirs"] = [b[k][0], b[k][1]]
        elif "quant_state" in k:
            ja, jb = json.loads(a[k][2]), json.loads(b[k][2])
            d["fields"] = {f: [ja.get(f), jb.get(f)] for f in set(ja) | set(jb) if ja.get(f) != jb.get(f)}
        else:
            nd = sum(x != y for x, y in zip(a[k][2], b[k][2]))
            d["bytes_differing"] = nd
        diff.append(d)
ca = json.load(open(os.path.join(ours, "config.json"))); cb = json.load(open(os.path.join(theirs, "config.json")))
cfg = sorted(k for k in set(ca) | set(cb) if ca.get(k) != cb.get(k))
ok = not only_ours and not only_theirs and not diff
print(json.dumps({"check": label, "entries": len(b), "identical": ok, "differing": len(diff),
                  "only_ours": only_ours[:5], "only_theirs": only_theirs[:5], "first_differences": diff[:4],
                  "config_keys_differing": cfg}), flush=True)
sys.exit(0 if ok else 1)
