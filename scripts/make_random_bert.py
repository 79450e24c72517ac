#!/usr/bin/env python3
"""Write a BERT-base-shaped checkpoint of seeded random weights, for forward benchmarks of a larger model.

The folder holds config.json (BertModel: hidden 768, 12 layers, 12 heads, FFN 3072, vocabulary 30522, 512
positions), model.safetensors (transformers' own initialisation under torch.manual_seed(SEED)) and the tokenizer
files of all-MiniLM-L6-v2 (the same uncased 30522-token vocabulary), so that both runtimes load it.

Requirements: torch, transformers, safetensors.

    python scripts/make_random_bert.py .cache/models/bert-base-random            # after scripts/fetch-minilm.sh
"""

import argparse
import os
import shutil

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokenizer-from", default=os.path.join(REPO_ROOT, ".cache", "models", "all-MiniLM-L6-v2"))
    args = ap.parse_args()

    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(args.seed)
    config = BertConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                        vocab_size=30522, max_position_embeddings=512)
    model = BertModel(config).eval()
    tmp = args.out.rstrip("/") + ".partial"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        src = os.path.join(args.tokenizer_from, name)
        if os.path.exists(src):
            shutil.copy(src, os.path.join(tmp, name))
    shutil.rmtree(args.out, ignore_errors=True)
    os.replace(tmp, args.out)
    print(f"wrote {args.out}: {sum(p.numel() for p in model.parameters()):,} parameters")


if __name__ == "__main__":
    main()
