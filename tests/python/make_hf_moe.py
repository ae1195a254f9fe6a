"""Test fixture: a tiny random Qwen2-MoE checkpoint in Hugging Face layout, as an operator would register it.

Usage: python make_hf_moe.py OUT_DIR
Writes config.json + model.safetensors (save_pretrained), the tiny tokenizer (tokenizer.json) and a
tokenizer_config.json naming its special tokens. Only a test fixture: nothing here runs in production.
"""
import json
import os
import shutil
import sys

import torch
from transformers import AutoConfig, AutoModelForCausalLM

OUT = sys.argv[1]
TOKENIZER = os.path.join(os.path.dirname(__file__), "../../gpu-runner/assets/tiny-mixtral/tokenizer.json")

torch.manual_seed(0)
config = AutoConfig.for_model(
    "qwen2_moe", vocab_size=1024, hidden_size=64, intermediate_size=96, moe_intermediate_size=48,
    shared_expert_intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    num_experts=4, num_experts_per_tok=2, max_position_embeddings=512, bos_token_id=1, eos_token_id=2, pad_token_id=0)
model = AutoModelForCausalLM.from_config(config)
model.save_pretrained(OUT)
shutil.copy(TOKENIZER, os.path.join(OUT, "tokenizer.json"))
with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>"}, f)
print("ok")
