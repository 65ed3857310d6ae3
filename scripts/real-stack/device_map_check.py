"""Does a plan's device_map name the modules transformers builds?

usage: device_map_check.py [--load] MODEL_DIR MAP.json [MODEL_DIR MAP.json ...]

MODEL_DIR is a checkpoint directory with config.json (the tiny full-precision
fixtures in testdata/models/<family>); MAP.json is `plan --report --json`'s
output (its "device_map") or a bare {module: device} object, "-" for stdin:

    detect testdata/models/gemma3 | plan --gpus h200 --report --json >gemma3.json
    python3 scripts/real-stack/device_map_check.py testdata/models/gemma3 gemma3.json

For each model it builds the model class of config.json's `architectures` on
the meta device (accelerate's init_empty_weights: nothing is loaded, no GPU
needed) and checks that
  - every key names a module (or parameter) of the model as transformers holds
    it in memory: missing_modules;
  - together the keys give a device to every parameter (uncovered_parameters)
    and every state_dict entry, tied ones included (uncovered_state_dict),
    which is what accelerate's dispatch_model demands (its check_device_map is
    also run: accelerate_check_device_map);
  - tied parameters land on one device: tied_split.
With --load it then loads the checkpoint with from_pretrained and that map,
spread over two devices (the second GPU, else "cpu") so that transformers
dispatches it through accelerate, and runs one forward pass: load.

One JSON line per model; "ok" is true when every check passed.
"""
import inspect
import json
import sys
import traceback

import torch
import transformers


def read_map(path):
    data = json.load(sys.stdin if path == "-" else open(path))
    dm = data.get("device_map", data) if isinstance(data, dict) else None
    if not isinstance(dm, dict):
        raise ValueError(f"{path}: no device_map object")
    # plan's JSON writes devices as strings ("0"); from_pretrained wants ints
    return {k: int(v) if isinstance(v, str) and v.isdigit() else v for k, v in dm.items()}


def model_class(config):
    for name in getattr(config, "architectures", None) or []:
        cls = getattr(transformers, name, None)
        if cls is not None:
            return cls
    if getattr(config, "vision_config", None) is not None:
        return transformers.AutoModelForImageTextToText
    return transformers.AutoModelForCausalLM


def empty_model(path):
    config = transformers.AutoConfig.from_pretrained(path)
    cls = model_class(config)
    from accelerate import init_empty_weights

    with init_empty_weights():
        if hasattr(cls, "from_config"):
            model = cls.from_config(config)
        else:
            model = cls(config)
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    return model


def owner(name, dm):
    """The key of dm that places name: the longest module prefix, "" for all."""
    best = None
    for k in dm:
        if k == "" or name == k or name.startswith(k + "."):
            if best is None or len(k) > len(best):
                best = k
    return best


def names_something(model, key):
    if key == "":
        return True
    for get in (model.get_submodule, model.get_parameter, model.get_buffer):
        try:
            get(key)
            return True
        except (AttributeError, KeyError):
            pass
    return False


def check(path, dm):
    model = empty_model(path)
    res = {"model": path, "class": type(model).__name__, "keys": len(dm),
           "devices": sorted({str(v) for v in dm.values()})}
    res["missing_modules"] = sorted(k for k in dm if not names_something(model, k))
    params = [n for n, _ in model.named_parameters(remove_duplicate=False)]
    res["uncovered_parameters"] = [n for n in params if owner(n, dm) is None][:40]
    sd = list(model.state_dict().keys())
    res["uncovered_state_dict"] = [n for n in sd if owner(n, dm) is None][:40]
    # parameters that are one tensor under several names must share a device
    res["tied"] = tied(model)
    split = [names for names in res["tied"] if len({str(dm.get(owner(n, dm))) for n in names}) > 1]
    res["tied_split"] = split
    try:
        from accelerate.utils.modeling import check_device_map

        check_device_map(model, dm)
        res["accelerate_check_device_map"] = "ok"
    except ImportError as e:
        res["accelerate_check_device_map"] = f"not run: {e}"
    except Exception as e:  # noqa: BLE001 - the message is the result
        res["accelerate_check_device_map"] = f"{type(e).__name__}: {str(e)[:300]}"
    res["ok"] = not (res["missing_modules"] or res["uncovered_parameters"] or res["uncovered_state_dict"] or split
                     or res["accelerate_check_device_map"] != "ok")
    return model, res


def spread(dm, model):
    """dm over two devices: the second half of the decoder layers, the final
    norm and an untied lm_head on the second GPU (else the CPU), as a plan
    over two devices would put them; tied modules stay with their embedding."""
    other = 1 if torch.cuda.device_count() > 1 else "cpu"
    layers = sorted({int(k.rsplit(".", 1)[1]) for k in dm if k.rsplit(".", 1)[-1].isdigit() and ".layers." in k})
    half = layers[len(layers) // 2] if layers else 1 << 30
    shared = {n for names in tied(model) for n in names}
    out = {}
    for k, v in dm.items():
        last = k.rsplit(".", 1)[-1]
        if ".layers." in k and last.isdigit() and int(last) >= half:
            v = other
        elif k.endswith(".norm") or (k == "lm_head" and not any(n.startswith("lm_head.") for n in shared)):
            v = other
        out[k] = v
    return out


def tied(model):
    """Names that are one parameter, in groups of two or more."""
    groups = {}
    for n, p in model.named_parameters(remove_duplicate=False):
        groups.setdefault(id(p), []).append(n)
    return [g for g in groups.values() if len(g) > 1]


def load(path, dm, model):
    two = spread(dm, model)
    cls = type(model)
    m = cls.from_pretrained(path, device_map=two, dtype=torch.bfloat16)
    cfg = m.config.get_text_config()
    ids = torch.randint(0, cfg.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0)).to("cuda:0")
    kw = {}
    if "token_type_ids" in inspect.signature(cls.forward).parameters:
        kw["token_type_ids"] = torch.zeros_like(ids)
    with torch.no_grad():
        out = m(input_ids=ids, **kw)
    return {"load": "ok", "load_devices": sorted({str(v) for v in two.values()}),
            "logits_shape": list(out.logits.shape), "logits_finite": bool(torch.isfinite(out.logits.float()).all())}


def main(argv):
    do_load = "--load" in argv
    args = [a for a in argv if a != "--load"]
    if not args or len(args) % 2:
        print(__doc__, file=sys.stderr)
        return 2
    versions = f"torch {torch.__version__} transformers {transformers.__version__}"
    try:
        import accelerate

        versions += f" accelerate {accelerate.__version__}"
    except ImportError:
        pass
    status = 0
    for path, mp in zip(args[0::2], args[1::2]):
        try:
            dm = read_map(mp)
            model, res = check(path, dm)
            if do_load:
                try:
                    res.update(load(path, dm, model))
                except Exception as e:  # noqa: BLE001
                    res["load"] = f"{type(e).__name__}: {str(e)[:400]}"
                    res["ok"] = False
        except Exception as e:  # noqa: BLE001
            res = {"model": path, "error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-800:], "ok": False}
        res["versions"] = versions
        print(json.dumps(res), flush=True)
        status |= 0 if res.get("ok") else 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
