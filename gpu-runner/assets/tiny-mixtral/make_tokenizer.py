"""Builds tokenizer.json for moetune/tiny-mixtral: byte-level BPE, 1024 tokens, trained on the demo
dataset rendered with the plain prompt template. Needs the `tokenizers` package (in the test venv).
Usage: python3 make_tokenizer.py ../../../deploy/demo/finance-alpaca-mini.jsonl
"""
import json
import sys

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

texts = []
for line in open(sys.argv[1], encoding="utf-8"):
    r = json.loads(line)
    inp = f"### Input:\n{r['input']}\n\n" if r["input"] else ""
    texts.append(f"### System:\nYou are a careful finance assistant.\n\n### Instruction:\n{r['instruction']}\n\n{inp}### Response:\n{r['output']}")

tok = Tokenizer(models.BPE())
tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
tok.decoder = decoders.ByteLevel()
trainer = trainers.BpeTrainer(vocab_size=1024, special_tokens=["<pad>", "<s>", "</s>"],
                              initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
tok.train_from_iterator(texts, trainer)
tok.save("tokenizer.json")
print("vocab", tok.get_vocab_size())
