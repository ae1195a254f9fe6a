"""Test oracle for the job outputs of the SFT → QAT workflow. Only a test oracle: nothing here runs in production.

  python export_reference.py base OUT ARCH [bf16-grid]
      A tiny random HF model (mixtral | gpt_oss) with the tiny tokenizer, to fine-tune with moetune-runner;
      with bf16-grid its weights are bf16 values (stored as f32), as real checkpoints' are.
  python export_reference.py check OUT_DIR BASE_DIR IDS.json FORMAT
      Loads what moetune-runner wrote under OUT_DIR and writes OUT_DIR/oracle.safetensors:
        merged      logits of transformers on merged/
        peft        logits of PEFT: BASE_DIR + adapter/ (only when adapter/ exists)
        fp4         logits of transformers on the FP4 export: mxfp4/ loaded by transformers (gpt-oss),
                    nvfp4/ dequantized by modelopt's NVFP4QTensor into the base model class
      and checks the NVFP4 codes and scales are bit-identical to modelopt's quantization of merged/.
  python export_reference.py routing BASE_DIR IDS.json
      Prints, per MoE layer, how often transformers' router picks each expert first and among its top-k
      for every token of IDS.json (JSON: {"layer": {"top1": [...], "topk": [...]}}).
  python export_reference.py mxfp4-modelopt MXFP4_DIR SOURCE_DIR
      Checks an MXFP4 export made with `mxfp4_scale_rule: ceil` against modelopt's MXFP4QTensor applied
      to SOURCE_DIR's expert weights: every scale byte equal, every element equal except at exact
      midpoints between E2M1 values (modelopt rounds those toward zero, the exporter to even).
"""
import json
import os
import shutil
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import AutoConfig, AutoModelForCausalLM

TOKENIZER = os.path.join(os.path.dirname(__file__), "../../gpu-runner/assets/tiny-mixtral/tokenizer.json")
SHAPES = dict(vocab_size=1024, hidden_size=64, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
              num_hidden_layers=2, num_experts_per_tok=2, bos_token_id=1, eos_token_id=2, pad_token_id=0)
ARCHS = {
    "mixtral": dict(model_type="mixtral", intermediate_size=64, num_local_experts=4),
    "gpt_oss": dict(model_type="gpt_oss", intermediate_size=64, num_local_experts=4, sliding_window=8),
}


def base(out, arch, grid=None):
    kwargs = dict(ARCHS[arch])
    config = AutoConfig.for_model(kwargs.pop("model_type"), **SHAPES, **kwargs)
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" not in name:
                p.normal_(0, 0.08)
                if grid == "bf16-grid":
                    p.copy_(p.bfloat16().float())
    model.save_pretrained(out)
    shutil.copy(TOKENIZER, os.path.join(out, "tokenizer.json"))
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, open(os.path.join(out, "tokenizer_config.json"), "w"))


def logits(model, ids):
    with torch.no_grad():
        return model.eval()(ids).logits.float().contiguous()


def nvfp4_model(out_dir, fmt_dir):
    """The merged model class with every NVFP4 expert Linear dequantized by modelopt, after checking the
    codes/scales equal modelopt's own quantization of the QAT weights (merged/)."""
    from modelopt.torch.quantization.qtensor.nvfp4_tensor import NVFP4QTensor

    exported = load_file(os.path.join(fmt_dir, "model.safetensors"))
    merged = load_file(os.path.join(out_dir, "merged", "model.safetensors"))
    state = dict(merged)
    checked = 0
    groups = {}
    for name in exported:
        if name.endswith(".weight_scale_2"):
            prefix = name[: -len(".weight_scale_2")]
            groups[prefix] = exported[name]
    for prefix, scale_2 in groups.items():
        packed, scale = exported[prefix + ".weight"], exported[prefix + ".weight_scale"]
        full = merged[prefix + ".weight"].float()
        q, s, s2 = NVFP4QTensor.quantize(full, 16, weights_scaling_factor_2=scale_2)
        assert torch.equal(q._quantized_data, packed), f"{prefix}: packed codes differ from modelopt"
        assert torch.equal(s.view(torch.uint8), scale.view(torch.uint8)), f"{prefix}: block scales differ from modelopt"
        deq = NVFP4QTensor(full.shape, torch.float32, packed).dequantize(dtype=torch.float32, scale=scale, double_scale=scale_2, block_sizes={-1: 16})
        state[prefix + ".weight"] = deq
        checked += 1
    assert checked > 0, "no NVFP4 tensors in the export"
    # gate/up of one expert share the per-tensor scale derived from both (modelopt's fused-input rule)
    for prefix, scale_2 in groups.items():
        if prefix.endswith(".w1"):
            both = torch.cat([merged[prefix + ".weight"], merged[prefix[:-1] + "3.weight"]]).abs().amax().float()
            assert torch.equal(scale_2, both / (6.0 * 448.0)), f"{prefix}: weight_scale_2 is not amax/(6*448)"
    # from_pretrained fuses the per-expert tensors as it does for any Mixtral checkpoint
    tmp = os.path.join(out_dir, "nvfp4-dequantized")
    os.makedirs(tmp, exist_ok=True)
    shutil.copy(os.path.join(out_dir, "merged", "config.json"), tmp)
    save_file({k: v.contiguous() for k, v in state.items()}, os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    return AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32), checked


def check(out_dir, base_dir, ids_path, fmt):
    ids = torch.tensor(json.load(open(ids_path)))
    result = {"merged": logits(AutoModelForCausalLM.from_pretrained(os.path.join(out_dir, "merged"), dtype=torch.float32), ids)}
    adapter = os.path.join(out_dir, "adapter")
    if os.path.isdir(adapter):
        from peft import PeftModel
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32), adapter)
        result["peft"] = logits(peft_model, ids)
    fmt_dir = os.path.join(out_dir, fmt)
    if fmt == "mxfp4":
        model = AutoModelForCausalLM.from_pretrained(fmt_dir, dtype=torch.float32)
        result["fp4"] = logits(model, ids)
    else:
        model, checked = nvfp4_model(out_dir, fmt_dir)
        result["fp4"] = logits(model, ids)
        print(f"nvfp4: {checked} linears bit-identical to modelopt")
    save_file(result, os.path.join(out_dir, "oracle.safetensors"))
    print("ok")


def routing(base_dir, ids_path):
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    ids = torch.tensor(json.load(open(ids_path)))
    with torch.no_grad():
        out = model(ids, output_router_logits=True)
    k, experts = model.config.num_experts_per_tok, model.config.num_local_experts
    counts = {}
    for layer, logits in enumerate(out.router_logits):
        chosen = logits.float().softmax(-1).topk(k, -1).indices
        counts[str(layer)] = {"top1": torch.bincount(chosen[:, 0], minlength=experts).tolist(), "topk": torch.bincount(chosen.flatten(), minlength=experts).tolist()}
    print(json.dumps(counts))


def load_dir(path):
    tensors = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".safetensors"):
            tensors.update(load_file(os.path.join(path, name)))
    return tensors


E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
MIDPOINTS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


def mxfp4_against_modelopt(fmt_dir, source_dir):
    from modelopt.torch.quantization.qtensor.mxfp4_tensor import MXFP4QTensor
    ours, source = load_dir(fmt_dir), load_dir(source_dir)
    checked = elements = ties = 0
    for key in sorted(k for k in ours if k.endswith("_blocks")):
        name = key[: -len("_blocks")]
        blocks, scales = ours[key], ours[name + "_scales"]
        w = source[name].float().transpose(1, 2).contiguous()  # gpt-oss stores [E, in, out]; blocks run along in
        quantized, their_scales = MXFP4QTensor.quantize(w, 32)
        assert torch.equal(their_scales.view(-1), scales.view(-1)), f"{name}: scales differ from modelopt's"
        theirs = quantized.dequantize(torch.float32, scale=their_scales, block_sizes={-1: 32}).view(-1, 32)
        codes = torch.stack([blocks & 0x0F, blocks >> 4], dim=-1).view(-1, 32).long()
        factor = torch.exp2(scales.view(-1, 1).float() - 127)
        mine = E2M1[codes] * factor
        differ = mine != theirs
        scaled = (w.view(-1, 32) / factor).abs()
        at_midpoint = (scaled.unsqueeze(-1) == MIDPOINTS).any(-1)
        assert bool((at_midpoint | ~differ).all()), f"{name}: elements differ from modelopt's away from a midpoint"
        step = (mine - theirs).abs() / factor.expand_as(mine)
        assert bool((step[differ] <= 2).all()), f"{name}: a tie differs by more than one E2M1 step"
        checked, elements, ties = checked + 1, elements + w.numel(), ties + int(differ.sum())
    assert checked > 0, f"no MXFP4 tensors in {fmt_dir}"
    print(f"mxfp4: {checked} tensors, scales equal modelopt's; {elements} elements equal but {ties} ties rounded to even")


if __name__ == "__main__":
    if sys.argv[1] == "base":
        base(*sys.argv[2:5])
    elif sys.argv[1] == "routing":
        routing(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "mxfp4-modelopt":
        mxfp4_against_modelopt(sys.argv[2], sys.argv[3])
    else:
        check(*sys.argv[2:6])
