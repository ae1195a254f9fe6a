"""Test oracle: tiny random MoE checkpoints made with transformers, and what transformers computes on them.

Usage: python moe_reference.py OUT_DIR
For each architecture writes OUT_DIR/<name>/ with a checkpoint (save_pretrained; some sharded), ids.json,
reference.safetensors (`logits` [B,T,V] f32, `router_topk.{layer}` [B*T,k] i64 per MoE layer) and
generate.json (greedy continuation of the first row). `gpt_oss_mxfp4/` has its experts packed as MXFP4
blocks/scales and `dequantized.safetensors` = transformers' convert_moe_packed_tensors of them.
Only a test oracle: nothing here runs in production.
"""
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM
from transformers.integrations.mxfp4 import FP4_VALUES, convert_moe_packed_tensors

OUT = sys.argv[1]
VOCAB, BATCH, SEQ = 160, 2, 12
COMMON = dict(vocab_size=VOCAB, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=2)

MODELS = {
    # Sliding window shorter than the sequence, so the windowed mask matters.
    "mixtral": ("mixtral", dict(intermediate_size=96, num_hidden_layers=2, num_local_experts=4, sliding_window=5), "1KB"),
    # A dense layer in the middle (mlp_only_layers) and the shared expert; top-k not renormalised.
    "qwen2_moe": ("qwen2_moe", dict(intermediate_size=80, moe_intermediate_size=48, shared_expert_intermediate_size=56,
                                    num_hidden_layers=3, num_experts=6, mlp_only_layers=[1], norm_topk_prob=False), None),
    # q/k norm, explicit head_dim different from hidden/heads, renormalised top-k, tied embeddings.
    "qwen3_moe": ("qwen3_moe", dict(intermediate_size=80, moe_intermediate_size=48, num_hidden_layers=2, num_experts=5,
                                    head_dim=24, norm_topk_prob=True, tie_word_embeddings=True), "20KB"),
    # Sinks, biases, alternating sliding/full attention, YaRN (transformers' default rope for gpt-oss).
    "gpt_oss": ("gpt_oss", dict(intermediate_size=64, num_hidden_layers=2, num_local_experts=4, head_dim=16,
                                sliding_window=4), None),
}


def randomize(model, seed):
    """Weights well away from the init scale (and non-zero biases/sinks), so every path is exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.15
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise)


def reference(model, ids, out_dir, moe_layers, top_k):
    with torch.no_grad():
        out = model(ids, output_router_logits=True)
    tensors = {"logits": out.logits.float().contiguous()}
    assert len(out.router_logits) == len(moe_layers), (len(out.router_logits), moe_layers)
    for layer, logits in zip(moe_layers, out.router_logits):
        tensors[f"router_topk.{layer}"] = torch.topk(logits, top_k, dim=-1).indices.to(torch.int64).contiguous()
    save_file(tensors, os.path.join(out_dir, "reference.safetensors"))
    with torch.no_grad():
        # An explicit all-ones mask: generate would otherwise mask every id equal to pad_token_id.
        prompt = ids[:1]
        generated = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=0)
    json.dump({"prompt": ids[0].tolist(), "new_ids": generated[0, ids.shape[1]:].tolist()}, open(os.path.join(out_dir, "generate.json"), "w"))


def moe_layer_indices(config):
    n = config.num_hidden_layers
    only = getattr(config, "mlp_only_layers", []) or []
    step = getattr(config, "decoder_sparse_step", 1) or 1
    return [i for i in range(n) if i not in only and (i + 1) % step == 0]


def make(name, model_type, kwargs, shard, seed):
    config = AutoConfig.for_model(model_type, **COMMON, **kwargs)
    config._attn_implementation = "eager" if model_type == "gpt_oss" else "sdpa"
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()
    randomize(model, seed)
    out_dir = os.path.join(OUT, name)
    model.save_pretrained(out_dir, max_shard_size=shard) if shard else model.save_pretrained(out_dir)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=torch.Generator().manual_seed(seed))
    json.dump(ids.tolist(), open(os.path.join(out_dir, "ids.json"), "w"))
    reference(model, ids, out_dir, moe_layer_indices(config), config.num_experts_per_tok)
    return model, ids, out_dir


def mxfp4_pack(w):
    """[E, rows, cols] -> blocks [E, rows, cols/32, 16] u8, scales [E, rows, cols/32] u8 (E8M0, bias 127):
    scale 2^(floor(log2(amax)) - 2), elements rounded to the nearest E2M1 value."""
    e, rows, cols = w.shape
    blocks = w.reshape(e, rows, cols // 32, 32)
    amax = blocks.abs().amax(-1, keepdim=True).clamp_min(2.0 ** -126)
    exponent = (torch.floor(torch.log2(amax)) - 2).clamp(-127, 127)
    scaled = blocks / torch.exp2(exponent)
    grid = torch.tensor(FP4_VALUES[:8])
    magnitude_code = (scaled.abs().unsqueeze(-1) - grid).abs().argmin(-1)
    codes = (magnitude_code | ((scaled < 0).long() << 3)).to(torch.uint8)
    packed = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return packed.contiguous(), (exponent.squeeze(-1) + 127).to(torch.uint8).contiguous()


def make_mxfp4(model, ids, src_dir):
    """gpt-oss with MXFP4 experts: the checkpoint stores blocks/scales; the reference model runs on
    transformers' own dequantization of them."""
    out_dir = os.path.join(OUT, "gpt_oss_mxfp4")
    os.makedirs(out_dir, exist_ok=True)
    weights = load_file(os.path.join(src_dir, "model.safetensors"))
    dequantized = {}
    for key in list(weights):
        if key.endswith("experts.gate_up_proj") or key.endswith("experts.down_proj"):
            # Parameter [E, in, out] is stored transposed: rows = out features, blocks along the input.
            blocks, scales = mxfp4_pack(weights.pop(key).transpose(1, 2).contiguous())
            weights[key + "_blocks"], weights[key + "_scales"] = blocks, scales
            dequantized[key] = convert_moe_packed_tensors(blocks, scales, dtype=torch.float32).contiguous()
    save_file(weights, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    save_file(dequantized, os.path.join(out_dir, "dequantized.safetensors"))
    config = json.load(open(os.path.join(src_dir, "config.json")))
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    json.dump(config, open(os.path.join(out_dir, "config.json"), "w"), indent=2)
    json.dump(ids.tolist(), open(os.path.join(out_dir, "ids.json"), "w"))
    with torch.no_grad():
        for key, value in dequantized.items():
            model.get_parameter(key).copy_(value)
    reference(model, ids, out_dir, list(range(model.config.num_hidden_layers)), model.config.num_experts_per_tok)


if __name__ == "__main__":
    for seed, (name, (model_type, kwargs, shard)) in enumerate(MODELS.items(), start=1):
        model, ids, out_dir = make(name, model_type, kwargs, shard, seed)
        if name == "gpt_oss":
            make_mxfp4(model, ids, out_dir)
    print("ok")
