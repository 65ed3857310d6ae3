"""Does our 4-bit checkpoint load to the same model as transformers' own?

usage: compare_logits.py OURS_DIR THEIRS_DIR LOGITS_FILE

OURS_DIR is what `detect MODEL | quantize | place --out OURS_DIR` wrote,
THEIRS_DIR the checkpoint transformers + bitsandbytes saved for the same model
(testdata/models/<family>-bnb-nf4) and LOGITS_FILE the logits transformers
computed with it when it made the fixture (testdata/models/<family>-logits.
safetensors, from make_family_fixtures.py: tensors input_ids and logits).

Both checkpoints are loaded with from_pretrained on cuda:0 (the Auto class the
config's architecture needs), run on the stored input_ids, and compared. Prints
one JSON line: the largest |difference| between our logits and the stored ones
and between ours and theirs (computed now, same process), whether the two
state dicts hold the same names with equal tensors, and the versions. Exit
status 0 when all three say identical, 1 otherwise.

Every family on the GPU machine, from the repository root (bin/ built here):

    for f in gemma granite cohere2 qwen2_moe deepseek_v2 gemma3 qwen2_vl qwen2_5_vl; do
      bin/detect -q testdata/models/$f | bin/quantize -q | bin/place -q --no-emit --out /tmp/$f-nf4
      python3 scripts/real-stack/compare_logits.py /tmp/$f-nf4 testdata/models/$f-bnb-nf4 \\
        testdata/models/$f-logits.safetensors
    done
"""
import json, sys
import torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
from safetensors.torch import load_file


def auto_class(path):
    cfg = AutoConfig.from_pretrained(path)
    archs = getattr(cfg, "architectures", None) or []
    if any(a.endswith("ForConditionalGeneration") for a in archs):
        return AutoModelForImageTextToText
    return AutoModelForCausalLM


def load(path, auto):
    m = auto.from_pretrained(path, device_map="cuda:0", dtype=torch.bfloat16)
    m.eval()
    return m


def state(m):
    out = {}
    for k, v in m.state_dict().items():
        out[k] = v.detach().to("cpu") if torch.is_tensor(v) else v
    return out


def max_abs(a, b):
    if a.shape != b.shape:
        return None
    return float((a.float() - b.float()).abs().max())


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    ours_dir, theirs_dir, logits_file = sys.argv[1:]
    stored = load_file(logits_file)
    ids, want = stored["input_ids"], stored["logits"]
    auto = auto_class(theirs_dir)

    def run(path):
        m = load(path, auto)
        with torch.no_grad():
            logits = m(input_ids=ids.to("cuda:0")).logits.float().cpu()
        sd = state(m)
        cls = type(m).__name__
        del m
        torch.cuda.empty_cache()
        return logits, sd, cls

    ours, ours_sd, cls = run(ours_dir)
    theirs, theirs_sd, _ = run(theirs_dir)

    differing = sorted(k for k in ours_sd.keys() & theirs_sd.keys()
                       if not (torch.is_tensor(ours_sd[k]) and torch.is_tensor(theirs_sd[k])
                               and ours_sd[k].dtype == theirs_sd[k].dtype
                               and ours_sd[k].shape == theirs_sd[k].shape
                               and torch.equal(ours_sd[k], theirs_sd[k])))
    only_ours = sorted(ours_sd.keys() - theirs_sd.keys())
    only_theirs = sorted(theirs_sd.keys() - ours_sd.keys())
    sd_equal = not (differing or only_ours or only_theirs)
    vs_stored, vs_theirs = max_abs(ours, want), max_abs(ours, theirs)
    rep = {
        "ours": ours_dir, "theirs": theirs_dir, "class": cls,
        "max_abs_diff_vs_stored": vs_stored, "max_abs_diff_vs_theirs": vs_theirs,
        "state_dict_equal": sd_equal, "state_dict_tensors": len(ours_sd),
        "differing": differing[:10], "only_ours": only_ours[:10], "only_theirs": only_theirs[:10],
        "torch": torch.__version__, "transformers": transformers.__version__,
        "bitsandbytes": __import__("bitsandbytes").__version__,
        "device": torch.cuda.get_device_name(0),
    }
    print(json.dumps(rep), flush=True)
    sys.exit(0 if sd_equal and vs_stored == 0.0 and vs_theirs == 0.0 else 1)


if __name__ == "__main__":
    main()
