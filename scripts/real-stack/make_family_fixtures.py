"""Tiny random-weight models of the families nf4pipe claims, and the 4-bit
checkpoints transformers + bitsandbytes write for them.

usage: make_family_fixtures.py OUTDIR [FAMILY ...]

For each family: OUTDIR/<family>/ is save_pretrained of a tiny random model
(bf16), OUTDIR/<family>-bnb-nf4/ is that model loaded with
BitsAndBytesConfig(NF4, double quant, bf16 compute) and saved again, and
OUTDIR/<family>-logits.safetensors holds its logits for fixed input ids
(the check that our checkpoint loads to the same model). Prints one JSON line a
family: which modules transformers made Linear4bit, or the error.
"""
import json, os, sys, traceback
import torch, transformers
from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, BitsAndBytesConfig
import bitsandbytes as bnb
from safetensors.torch import save_file

T = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
         tie_word_embeddings=False)

def text(cls, **kw):
    d = dict(T); d.update(kw)
    return getattr(transformers, cls)(**d)

def families():
    c = transformers
    yield "gemma", lambda: text("GemmaConfig"), AutoModelForCausalLM
    yield "granite", lambda: text("GraniteConfig"), AutoModelForCausalLM
    yield "cohere2", lambda: text("Cohere2Config", sliding_window=32), AutoModelForCausalLM
    yield "qwen2_moe", lambda: text("Qwen2MoeConfig", moe_intermediate_size=32, shared_expert_intermediate_size=64,
                                    num_experts=4, num_experts_per_tok=2), AutoModelForCausalLM
    yield "deepseek_v2", lambda: text("DeepseekV2Config", moe_intermediate_size=32, n_routed_experts=4,
                                      num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                                      num_key_value_heads=4, kv_lora_rank=32, q_lora_rank=None,
                                      qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                                      n_group=1, topk_group=1), AutoModelForCausalLM
    yield "gemma3", lambda: c.Gemma3Config(
        text_config=dict(T, model_type="gemma3_text"),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8),
        mm_tokens_per_image=4), AutoModelForImageTextToText
    yield "qwen2_vl", lambda: c.Qwen2VLConfig(
        text_config=dict(T, model_type="qwen2_vl_text", rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2)), AutoModelForImageTextToText
    yield "qwen2_5_vl", lambda: c.Qwen2_5_VLConfig(
        text_config=dict(T, model_type="qwen2_5_vl_text", rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                           fullatt_block_indexes=[1], window_size=112, patch_size=14, spatial_merge_size=2,
                           temporal_patch_size=2)), AutoModelForImageTextToText
    yield "mllama", lambda: c.MllamaConfig(
        # pad_token_id: MllamaTextConfig's default, 128004, is past the tiny
        # vocabulary (512 + 8 embedding rows), which nn.Embedding refuses
        # ("Padding_idx must be within num_embeddings", the H200 run of 2026-12-03).
        text_config=dict(T, model_type="mllama_text_model", num_hidden_layers=4, cross_attention_layers=[1],
                         pad_token_id=0),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=32, patch_size=8,
                           # transformers 5.17 accepts only 4 tiles with the default
                           # supported_aspect_ratios (8 of them, so 9 rows of tile
                           # embeddings); spelled out so the fixture does not move.
                           max_num_tiles=4,
                           supported_aspect_ratios=[[1, 1], [1, 2], [1, 3], [1, 4], [2, 1], [2, 2], [3, 1], [4, 1]],
                           intermediate_layers_indices=[0], vision_output_dim=64)), AutoModelForImageTextToText
    # cohere (v1, with its per-head q/k norms) and deepseek_v3 (q_lora_rank:
    # q_a/q_b projections; the noaux_tc router's e_score_correction_bias),
    # adopted from the H200 run of 2026-12-03.
    yield "cohere", lambda: text("CohereConfig", use_qk_norm=True), AutoModelForCausalLM
    yield "deepseek_v3", lambda: text("DeepseekV3Config", moe_intermediate_size=32, n_routed_experts=4,
                                      num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                                      num_key_value_heads=4, kv_lora_rank=32, q_lora_rank=32,
                                      qk_nope_head_dim=16, qk_rope_head_dim=16, v_head_dim=16,
                                      n_group=1, topk_group=1), AutoModelForCausalLM

def main():
    out = sys.argv[1]
    want = set(sys.argv[2:])
    q = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                           bnb_4bit_compute_dtype=torch.bfloat16)
    ids = torch.arange(1, 33, dtype=torch.long).reshape(2, 16) * 7 % 500 + 1
    for name, mkcfg, auto in families():
        if want and name not in want:
            continue
        try:
            torch.manual_seed(0)
            cfg = mkcfg()
            m = auto.from_config(cfg, dtype=torch.bfloat16)
            src = os.path.join(out, name)
            m.save_pretrained(src)
            del m
            qm = auto.from_pretrained(src, quantization_config=q, device_map="cuda:0", dtype=torch.bfloat16)
            dst = os.path.join(out, name + "-bnb-nf4")
            qm.save_pretrained(dst)
            four = sorted(n for n, mod in qm.named_modules() if isinstance(mod, bnb.nn.Linear4bit))
            with torch.no_grad():
                logits = qm(input_ids=ids.to("cuda:0")).logits.float().cpu().contiguous()
            save_file({"input_ids": ids.contiguous(), "logits": logits}, os.path.join(out, name + "-logits.safetensors"))
            print(json.dumps({"family": name, "ok": True, "class": type(qm).__name__, "linear4bit": four}), flush=True)
            del qm
            torch.cuda.empty_cache()
        except Exception as e:
            print(json.dumps({"family": name, "ok": False, "error": repr(e)[:800],
                              "trace": traceback.format_exc()[-1500:]}), flush=True)

if __name__ == "__main__":
    main()
