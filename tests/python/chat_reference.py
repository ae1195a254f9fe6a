"""Test oracle for chat templates: a tokenizer directory with a chat template (saved by transformers), a
chat dataset, and what transformers' apply_chat_template renders for each conversation.

Usage: python chat_reference.py TOKENIZER_JSON OUT_DIR
"""
import json
import os
import sys

from transformers import PreTrainedTokenizerFast

# Exercises what real templates use: slicing, `not in`, Python string methods, raise_exception,
# whitespace control with trim_blocks/lstrip_blocks, add_generation_prompt.
TEMPLATE = """{%- if messages[0]['role'] == 'system' -%}
{%- set system = messages[0]['content'] -%}{%- set rest = messages[1:] -%}
{%- else -%}{%- set system = 'You are a helpful assistant.' -%}{%- set rest = messages -%}{%- endif -%}
{{ bos_token }}<|system|>
{{ system | trim }}{{ eos_token }}
{% for m in rest %}
{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('roles must be user or assistant') }}{% endif %}
<|{{ m['role'] }}|>
{{ m['content'].strip() }}{{ eos_token }}
{% endfor %}
{% if add_generation_prompt %}<|assistant|>
{% endif %}"""

CONVERSATIONS = [
    [{"role": "user", "content": "What is a bond yield?"}, {"role": "assistant", "content": "The return an investor earns on a bond."}],
    [{"role": "system", "content": "  You answer in one sentence. "}, {"role": "user", "content": "Define equity."},
     {"role": "assistant", "content": "Ownership in a company."}, {"role": "user", "content": "And debt?"},
     {"role": "assistant", "content": "  Money that is owed.  "}],
]

tokenizer_json, out = sys.argv[1], sys.argv[2]
tok = PreTrainedTokenizerFast(tokenizer_file=tokenizer_json, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
tok.chat_template = TEMPLATE
tok.save_pretrained(out)
expected = []
with open(os.path.join(out, "chat.jsonl"), "w") as data:
    for messages in CONVERSATIONS:
        data.write(json.dumps({"messages": messages}) + "\n")
        prompt = tok.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(messages, tokenize=False)
        expected.append({"prompt": prompt, "full": full, "prompt_ids": tok(prompt, add_special_tokens=False).input_ids})
json.dump(expected, open(os.path.join(out, "expected.json"), "w"), indent=1)
print("ok")
