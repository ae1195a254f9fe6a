"""The training-throughput anchor of `deploy/bench`: HF transformers + PEFT training the same config as
`moetune-bench train` (tests/bench/tiny_moe.json), same batch, sequence, threads and step (forward with
labels, backward, clip to 1.0, AdamW). Prints one JSON line. A benchmark oracle, never a runtime dep."""

import argparse
import json
import os
import re
import statistics
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

ROUTER = re.compile(r"\.mlp\.(gate|router)\.(weight|bias)$")


def config_for(configs, arch):
    if arch in configs:
        raw = dict(configs[arch])
    else:
        raw = {**configs["common"], **configs["archs"][arch]}
    model_type = raw.pop("model_type")
    raw.pop("architectures", None)
    return AutoConfig.for_model(model_type, **raw)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--configs", required=True)
    p.add_argument("--arch", required=True)
    p.add_argument("--method", choices=["lora", "full"], required=True)
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--warmup", type=int, default=2)
    args = p.parse_args()

    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    with open(args.configs) as f:
        config = config_for(json.load(f), args.arch)
    torch.manual_seed(1)
    model = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device)
    model.train()
    if args.method == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"], task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    else:
        for name, param in model.named_parameters():
            param.requires_grad_(not ROUTER.search(name))
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.0)
    torch.manual_seed(7)
    ids = torch.randint(config.vocab_size, (args.batch, args.seq), device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    times = []
    for step in range(args.warmup + args.steps):
        sync()
        started = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        sync()
        if step >= args.warmup:
            times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    print(json.dumps({
        "bench": "train", "impl": "hf+peft" if args.method == "lora" else "hf", "arch": args.arch, "method": args.method,
        "device": device.type, "dtype": str(dtype).removeprefix("torch."), "threads": torch.get_num_threads(),
        "batch": args.batch, "seq": args.seq, "steps": args.steps, "trained_params": sum(p.numel() for p in params),
        "step_s": step_s, "tokens_per_s": args.batch * args.seq / step_s,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        # deploy/bench runs the anchor twice on the CPU: as HF users run it (glibc malloc defaults), and
        # with the allocator settings the moetune runner applies to itself (gpu-runner/src/host_memory.rs).
        "allocator": "keep-freed" if os.environ.get("MALLOC_MMAP_MAX_") == "0" else "default",
    }))


if __name__ == "__main__":
    main()
