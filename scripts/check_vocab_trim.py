#!/usr/bin/env python3
"""Check a vocab-trim artifact with Python `transformers` / `tokenizers` (run by hand; results in docs/passes/vocab-trim.md).

    python scripts/check_vocab_trim.py ORIGINAL_DIR TRIMMED_DIR --data FILE.jsonl --field NAME [--field NAME2] [--limit N]

Checks, on every text of the data file(s):
1. the trimmed folder loads with `AutoTokenizer` (fast, from tokenizer.json), with the slow `BertTokenizer` from
   vocab.txt when the model is WordPiece, and with `tokenizers.Tokenizer`, and all give the same ids;
2. for every text whose original tokens were all kept: the trimmed ids are the original ids mapped through
   `old_ids` (vocab_map.safetensors), and `AutoModel` on the trimmed folder gives the same last hidden state as the
   original model on the original ids (max abs diff printed, must be <= 1e-5);
3. config.json's special-token ids agree with the tokenizer's, and vocab_size with the embedding and tokenizer.
Exit code 0 when every check holds.
"""

import argparse
import json
import sys

import numpy as np
import tokenizers
import torch
import transformers
from safetensors.numpy import load_file
from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer


def texts_of(paths, fields, limit):
    out = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f):
                if limit is not None and i >= limit:
                    break
                if line.strip():
                    rec = json.loads(line)
                    out.extend(rec[k] for k in fields if k in rec)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("original")
    ap.add_argument("trimmed")
    ap.add_argument("--data", action="append", required=True)
    ap.add_argument("--field", action="append", required=True)
    ap.add_argument("--limit", type=int)
    args = ap.parse_args()
    print(f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, torch {torch.__version__}")

    texts = texts_of(args.data, args.field, args.limit)
    old_ids = load_file(f"{args.trimmed}/vocab_map.safetensors")["old_ids"].astype(np.int64)
    assert np.all(np.diff(old_ids) > 0), "old_ids must be sorted and distinct"
    kept = set(old_ids.tolist())

    fast_old = AutoTokenizer.from_pretrained(args.original)
    fast_new = AutoTokenizer.from_pretrained(args.trimmed)
    raw_new = tokenizers.Tokenizer.from_file(f"{args.trimmed}/tokenizer.json")
    raw_new.no_padding()
    raw_new.no_truncation()
    config = json.load(open(f"{args.trimmed}/config.json"))
    slow_new = None
    if json.load(open(f"{args.trimmed}/tokenizer.json"))["model"]["type"] == "WordPiece":
        slow_new = transformers.BertTokenizer(f"{args.trimmed}/vocab.txt", do_lower_case=True)

    failures = 0
    assert config["vocab_size"] == len(old_ids) == raw_new.get_vocab_size(True), "vocab_size"
    for key, tok in [("pad_token_id", fast_new.pad_token_id), ("cls_token_id", fast_new.cls_token_id),
                     ("sep_token_id", fast_new.sep_token_id), ("bos_token_id", fast_new.bos_token_id),
                     ("eos_token_id", fast_new.eos_token_id), ("mask_token_id", fast_new.mask_token_id)]:
        if config.get(key) is not None and config[key] != tok:
            print(f"config {key} = {config[key]} but the tokenizer says {tok}")
            failures += 1

    same_loaders = covered = 0
    full = []
    for t in texts:
        a = fast_old(t, truncation=True, max_length=512)["input_ids"]
        b = fast_new(t, truncation=True, max_length=512)["input_ids"]
        c = raw_new.encode(t).ids[:512]
        d = slow_new(t, truncation=True, max_length=512)["input_ids"] if slow_new is not None else b
        if b == c == d:
            same_loaders += 1
        else:
            failures += 1
            if failures < 5:
                print("loaders disagree:", repr(t), b, c, d)
        if all(i in kept for i in a):
            covered += 1
            if [int(old_ids[i]) for i in b] != a:
                failures += 1
                print("ids do not map back:", repr(t))
            full.append((a, b))
    print(f"{len(texts)} texts: {same_loaders} with identical ids from AutoTokenizer, tokenizers and "
          f"{'BertTokenizer(vocab.txt)' if slow_new is not None else '(no vocab.txt check)'}; "
          f"{covered} fully kept, each mapping back through old_ids")

    classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures", []))
    cls = AutoModelForSequenceClassification if classifier else AutoModel
    m_old = cls.from_pretrained(args.original).eval()
    m_new = cls.from_pretrained(args.trimmed).eval()
    worst = worst_logit = 0.0
    with torch.inference_mode():
        for a, b in full[:200]:
            o_old = m_old(input_ids=torch.tensor([a]), output_hidden_states=True)
            o_new = m_new(input_ids=torch.tensor([b]), output_hidden_states=True)
            worst = max(worst, (o_old.hidden_states[-1] - o_new.hidden_states[-1]).abs().max().item())
            if classifier:
                worst_logit = max(worst_logit, (o_old.logits - o_new.logits).abs().max().item())
    print(f"last hidden state, {min(len(full), 200)} fully kept texts: max abs diff {worst:.3g}"
          + (f"; logits: max abs diff {worst_logit:.3g}" if classifier else ""))
    if worst > 1e-5 or worst_logit > 1e-5:
        failures += 1
    print("OK" if failures == 0 else f"{failures} FAILURES")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
