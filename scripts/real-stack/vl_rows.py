"""Real QLoRA training memory of a vision-language model, with images: trainer_rows.py's harness (transformers
Trainer, bf16 mixed precision, peft LoRA, bitsandbytes, a pre-quantized 4-bit checkpoint written by nf4pipe's
`place`) for the ...ForConditionalGeneration classes, loaded through AutoModelForImageTextToText.
usage: vl_rows.py DIR NAME 'JSON grid' -> one JSON line per row (run one process per row, as trainer_rows.py).
Row keys: seq, batch, gc (bool), opt (paged_adamw_8bit | adamw | adamw_8bit), rank (16), recipe (hf-peft | lean),
images (images per sample, default 1; 0 trains on text alone).
Output: trainer_rows.py's fields plus "images"; a row that cannot run prints its fields with "error".

Supported families (model_type of config.json), each sample built without a processor, as the plan counts it
(pkg/plan/model.go visionOf; `plan --images N` with the family's default tokens per image):
  gemma3      image_token_id x mm_tokens_per_image per image, between boi and eoi tokens; token_type_ids 1 on the
              image tokens (Gemma3Model requires them when training, images or not); pixel_values (n, 3, S, S), S =
              vision_config.image_size (896: 4096 patches in the tower, pooled to 256 tokens).
  qwen2_vl,   vision_start, image_token_id x (t*h*w / spatial_merge_size^2), vision_end per image, with
  qwen2_5_vl  image_grid_thw (1, 448/patch, 448/patch) (the plan's 448x448 image: 1024 patches, 256 tokens) and
              pixel_values (1024 per image, C*temporal_patch_size*patch_size^2), concatenated over the batch;
              get_rope_index finds each image by the vision_start token before it (or, where forward takes
              mm_token_type_ids, by those: 1 on the image tokens).
  llava       image_token_id x (image_size/patch_size)^2 per image (+1 with vision_feature_select_strategy
              "full"); pixel_values (n, 3, image_size, image_size).
  mllama      one image_token_id per image in the text (nothing enters the sequence, as the plan counts it);
              pixel_values (images, max_num_tiles, C, S, S), every tile used (the plan's worst case: 4 x 1601
              cross-attention tokens at 560px), aspect_ratio_ids of the all-tiles ratio, aspect_ratio_mask all
              ones, cross_attention_mask (seq, images, tiles) 1 from each image token on; stacked per batch.
Any other family prints "error" (with images 0 it trains on text alone).

`seq` is the text of a sample, as `plan --seq-len`: the language model's sequence is seq + images x tokens per
image (the plan's "language model sequence"), the special tokens around each image counted in seq. labels are
the input ids with the image tokens masked (-100); text ids are drawn below every special id of the config.
The collator stacks input_ids, labels and the type ids and concatenates pixel_values and image_grid_thw
(mllama: stacks everything).
LoRA goes to the language model only: its Linear4bit names as target_modules, and the snippet's
exclude_modules for the tower and projector (peft matches names as suffixes; the towers have q_proj too).
"""
import gc
import inspect
import json
import re
import sys
import time
import traceback

import torch
import transformers
import bitsandbytes as bnb
from transformers import AutoConfig, AutoModelForImageTextToText, Trainer, TrainingArguments
from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

OPT = {"paged_adamw_8bit": "paged_adamw_8bit", "adamw": "adamw_torch", "adamw_8bit": "adamw_8bit"}
# the snippet's (pkg/plan/report.go visionModules)
VISION = r".*(vision_tower|visual|vision_model|multi_modal_projector).*"
QWEN_SIDE = 448  # pkg/plan QwenDefaultImageSide


def cfg_id(config, *names):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return int(v)
    return None


class Unsupported(Exception):
    pass


def image_spec(config):
    """What one image is for this family: the ids around and in it, and its pixel tensors."""
    mt = config.model_type
    v = config.vision_config
    if mt == "gemma3":
        n = int(config.mm_tokens_per_image)
        side = int(v.image_size)
        return {"token": cfg_id(config, "image_token_id", "image_token_index"), "tokens": n,
                "before": [cfg_id(config, "boi_token_id", "boi_token_index")],
                "after": [cfg_id(config, "eoi_token_id", "eoi_token_index")], "pixels": lambda g: {"pixel_values": torch.randn(1, 3, side, side, generator=g)}}
    if mt in ("qwen2_vl", "qwen2_5_vl"):
        patch, merge, tp = int(v.patch_size), int(v.spatial_merge_size), int(v.temporal_patch_size)
        ch = int(getattr(v, "in_channels", None) or getattr(v, "in_chans", 3))
        grid = QWEN_SIDE // patch
        if grid % merge:
            raise Unsupported(f"{QWEN_SIDE}px makes {grid} patches a side, not a multiple of merge {merge}")
        patches = grid * grid  # grid_t = 1: one frame, its temporal patch the image twice over
        return {"token": cfg_id(config, "image_token_id"), "tokens": patches // (merge * merge),
                "before": [cfg_id(config, "vision_start_token_id")], "after": [cfg_id(config, "vision_end_token_id")],
                "pixels": lambda g: {"pixel_values": torch.randn(patches, ch * tp * patch * patch, generator=g),
                                     "image_grid_thw": torch.tensor([[1, grid, grid]])}}
    if mt == "llava":
        side, patch = int(v.image_size), int(v.patch_size)
        n = (side // patch) ** 2 + (1 if getattr(config, "vision_feature_select_strategy", "default") == "full" else 0)
        return {"token": cfg_id(config, "image_token_id", "image_token_index"), "tokens": n, "before": [], "after": [],
                "pixels": lambda g: {"pixel_values": torch.randn(1, 3, side, side, generator=g)}}
    if mt == "mllama":
        side, tiles = int(v.image_size), int(v.max_num_tiles)
        ch = int(getattr(v, "num_channels", 3))
        ar = mllama_aspect_ratio_id(tiles)
        # One <|image|> token in the text (plan: nothing enters the sequence); the cross-attention layers attend
        # to every tile of every image. Batched as (batch, images, ...): stacked, not concatenated.
        return {"token": cfg_id(config, "image_token_id", "image_token_index"), "tokens": 1, "seq_tokens": 0,
                "before": [], "after": [], "stack": True,
                "pixels": lambda g: {"pixel_values": torch.randn(1, tiles, ch, side, side, generator=g),
                                     "aspect_ratio_ids": torch.tensor([ar]),
                                     "aspect_ratio_mask": torch.ones(1, tiles, dtype=torch.long)},
                "cross": tiles}
    raise Unsupported(f"model_type {mt!r}: vl_rows.py builds samples for gemma3, qwen2_vl, qwen2_5_vl, llava and "
                      "mllama")


def mllama_aspect_ratio_id(tiles):
    """The aspect ratio id of an image cut into all `tiles` tiles: 1 + its index in MllamaImageProcessor's
    supported aspect ratios (every w x h <= tiles, w then h ascending; id 0 is padding)."""
    ratios = [(w, h) for w in range(1, tiles + 1) for h in range(1, tiles + 1) if w * h <= tiles]
    full = [i for i, (w, h) in enumerate(ratios) if w * h == tiles]
    return 1 + (full[len(full) // 2] if full else len(ratios) - 1)


def text_high(config, spec, vocab):
    """Text ids are drawn from [0, high): below every special id the config names."""
    ids = [spec["token"]] + [i for i in spec["before"] + spec["after"] if i is not None]
    for n in ("video_token_id", "vision_token_id", "boi_token_id", "eoi_token_id", "image_token_index",
              "bos_token_id", "eos_token_id", "pad_token_id"):
        i = getattr(config, n, None)
        if isinstance(i, int) and i > 1000:  # the low ids (bos 2, pad 0) are ordinary in random text
            ids.append(i)
    return max(2, min([vocab] + [i for i in ids if i is not None and i > 0]))


def samples(config, spec, vocab, count, S, images, seed=0):
    g = torch.Generator().manual_seed(seed)
    high = text_high(config, spec, vocab)
    # The special tokens around an image, those the embedding has (a tiny test model's vocabulary may not)
    before = [t for t in spec["before"] if t is not None and t < vocab]
    after = [t for t in spec["after"] if t is not None and t < vocab]
    around = len(before) + len(after)
    added = spec.get("seq_tokens", spec["tokens"])  # what an image adds to the sequence beyond seq
    if 1 + images * (around + spec["tokens"] - added) > S:
        raise Unsupported(f"seq {S} leaves no room for the tokens around {images} image(s)")
    out = []
    for _ in range(count):
        L = S + images * added
        ids = torch.randint(0, high, (L,), generator=g)
        is_image = torch.zeros_like(ids, dtype=torch.bool)
        pos = 1  # one text token first, as a chat template's BOS
        extra = {}
        starts = []
        for _ in range(images):
            for t in before:
                ids[pos] = t
                pos += 1
            starts.append(pos)
            ids[pos:pos + spec["tokens"]] = spec["token"]
            is_image[pos:pos + spec["tokens"]] = True
            pos += spec["tokens"]
            for t in after:
                ids[pos] = t
                pos += 1
            for k, v in spec["pixels"](g).items():
                extra.setdefault(k, []).append(v)
        x = {"input_ids": ids, "labels": ids.masked_fill(is_image, -100)}
        x["_type_ids"] = is_image.long()  # 1 on image tokens; named after the model's forward in run()
        for k, v in extra.items():
            x[k] = torch.cat(v, 0)
        if spec.get("cross") and images > 0:
            # mllama: each token attends to every tile of the images at or before it (the processor's
            # cross_attention_mask, (seq, images, tiles)); the tokens before the first image to none.
            cam = torch.zeros(L, images, spec["cross"], dtype=torch.long)
            for i, p0 in enumerate(starts):
                cam[p0:, i, :] = 1
            x["cross_attention_mask"] = cam
        out.append(x)
    return out


def collator(stack_images):
    """Stacks every key; pixel_values and image_grid_thw are concatenated instead (gemma3, qwen vl, llava take
    the images of a batch as one list), unless stack_images (mllama: batch x images x tiles)."""
    def collate(batch):
        out = {}
        for k in batch[0]:
            if k in ("pixel_values", "image_grid_thw") and not stack_images:
                out[k] = torch.cat([b[k] for b in batch], 0)
            else:
                out[k] = torch.stack([b[k] for b in batch])
        return out
    return collate


def run(path, name, g, versions):
    S, B, GC, opt, R, recipe = g["seq"], g["batch"], g["gc"], g["opt"], g.get("rank", 16), g.get("recipe", "hf-peft")
    images = g.get("images", 1)
    row = {"model": name, "seq": S, "batch": B, "gc": GC, "opt": opt, "rank": R, "recipe": recipe, "images": images,
           "harness": "trainer-bf16", "targets": None, "trainable_params": None, "after_load_bytes": None,
           "peak_alloc_bytes": None, "peak_reserved_bytes": None, "step_s": None, "error": None, "versions": versions}
    config = AutoConfig.from_pretrained(path)
    vocab = config.get_text_config().vocab_size
    count = max(4, B) * 3
    try:
        spec = image_spec(config)
    except Unsupported as e:
        if images > 0:
            row["error"] = f"unsupported: {e}"
            return row
        spec = None
    try:
        if spec is None:  # text alone, in a family vl_rows.py has no sample builder for
            ids = torch.randint(0, vocab, (count, S), generator=torch.Generator().manual_seed(0))
            ds = [{"input_ids": r, "labels": r} for r in ids]
        else:  # images 0 too: gemma3 wants token_type_ids all the same
            ds = samples(config, spec, vocab, count, S, images)
    except Unsupported as e:
        row["error"] = f"unsupported: {e}"
        return row
    gc.collect(); torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats()
    model = AutoModelForImageTextToText.from_pretrained(path, device_map="cuda:0", dtype=torch.bfloat16,
                                                        attn_implementation="sdpa")
    # The image tokens' type ids, under the name(s) this transformers' forward takes: gemma3's token_type_ids
    # (required when training), mm_token_type_ids where the VL models take those (qwen vl's rope index in
    # later 5.x releases); none for llava. Only names forward lists: others would reach the decoder as kwargs.
    fwd = inspect.signature(type(model).forward).parameters
    type_names = [k for k in ("token_type_ids", "mm_token_type_ids") if k in fwd]
    for x in ds:
        t = x.pop("_type_ids", None)
        for k in type_names if t is not None else ():
            x[k] = t
    lm = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit) and not re.fullmatch(VISION, n)]
    targets = sorted({n.split(".")[-1] for n in lm})
    if recipe == "hf-peft":
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=GC,
                                                gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        if GC:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=R, lora_alpha=R, lora_dropout=0.0, bias="none", task_type="CAUSAL_LM",
                                             target_modules=targets, exclude_modules=VISION))
    # remove_unused_columns=False: the image keys go to forward as built (the forward of each family takes them)
    args = TrainingArguments(output_dir="/tmp/vl-rows", per_device_train_batch_size=B, gradient_checkpointing=GC,
        gradient_checkpointing_kwargs={"use_reentrant": False}, optim=OPT[opt], bf16=True, learning_rate=2e-4,
        max_steps=3, logging_steps=1, report_to="none", save_strategy="no", disable_tqdm=True,
        remove_unused_columns=False)
    tr = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator(bool(spec and spec.get("stack"))))
    after_load = torch.cuda.memory_allocated()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    torch.cuda.reset_peak_memory_stats()
    err = None; t0 = time.time()
    try:
        tr.train(); torch.cuda.synchronize()
    except torch.OutOfMemoryError:
        err = "oom"
    row.update({"targets": targets, "trainable_params": trainable, "after_load_bytes": after_load,
                "peak_alloc_bytes": torch.cuda.max_memory_allocated(),
                "peak_reserved_bytes": torch.cuda.max_memory_reserved(), "step_s": (time.time() - t0) / 3,
                "error": err})
    del tr, model, ds
    gc.collect(); torch.cuda.empty_cache()
    return row


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    path, name, grid = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    versions = f"torch {torch.__version__} transformers {transformers.__version__} bnb {bnb.__version__}"
    for g in grid:
        try:
            row = run(path, name, g, versions)
        except Exception as e:  # noqa: BLE001 - a failed row is a result: say why, go on
            row = {"model": name, "seq": g.get("seq"), "batch": g.get("batch"), "gc": g.get("gc"), "opt": g.get("opt"),
                   "rank": g.get("rank", 16), "recipe": g.get("recipe", "hf-peft"), "images": g.get("images", 1),
                   "harness": "trainer-bf16", "error": f"{type(e).__name__}: {str(e)[:500]}",
                   "trace": traceback.format_exc()[-1500:], "versions": versions}
            gc.collect(); torch.cuda.empty_cache()
        print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
