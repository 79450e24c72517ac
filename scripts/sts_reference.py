#!/usr/bin/env python3
"""STS Spearman of a sentence-transformers model, as the reference for the toolkit's own `sts` figures.

    python scripts/sts_reference.py MODEL_DIR DATA.jsonl [--threads 2] [--batch-size 32]

DATA.jsonl: one JSON object per line with `sentence1`, `sentence2` and a gold `score` (the layout of
shared/data/<task>/<split>.jsonl, see shared/data/DATA.md; e.g. shared/data/sts-b/test.jsonl).
Each distinct sentence is embedded once with SentenceTransformer(MODEL_DIR) on the CPU (the model's own
modules: Transformer with its max_seq_length, Pooling, Normalize when listed), float32; the score of a pair is
the cosine similarity of its two embeddings; the figure is scipy.stats.spearmanr(cosines, gold) x 100
(average ranks for ties), printed with 2 decimals together with the wall time of loading + encoding.

Requirements: torch, sentence-transformers, scipy, numpy.
"""

import argparse
import json
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model_dir", help="sentence-transformers model folder (modules.json, config.json, ...)")
    ap.add_argument("data", help="JSONL with sentence1, sentence2, score")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--batch-size", type=int, default=32, help="encode batch size (default 32)")
    args = ap.parse_args()

    t0 = time.perf_counter()
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(args.threads)
    rows = []
    with open(args.data, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            r = json.loads(line)
            try:
                rows.append((r["sentence1"], r["sentence2"], float(r["score"])))
            except KeyError as e:
                raise SystemExit(f"{args.data}:{line_no}: missing field {e}")
    if len(rows) < 2:
        raise SystemExit(f"{args.data}: need at least 2 scored pairs, found {len(rows)}")

    model = SentenceTransformer(args.model_dir, device="cpu")
    model.eval()
    sentences = sorted({s for a, b, _ in rows for s in (a, b)})
    t1 = time.perf_counter()
    with torch.inference_mode():
        emb = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True, show_progress_bar=False)
    t2 = time.perf_counter()
    emb = emb.astype(np.float64)
    emb /= np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
    index = {s: i for i, s in enumerate(sentences)}
    a = emb[[index[r[0]] for r in rows]]
    b = emb[[index[r[1]] for r in rows]]
    cos = (a * b).sum(axis=1)
    gold = np.array([r[2] for r in rows])
    rho = spearmanr(cos, gold).correlation
    print(f"model        {args.model_dir} (max_seq_length {model.max_seq_length}, "
          f"modules {[type(m).__name__ for m in model]})")
    print(f"data         {args.data}: {len(rows)} pairs, {len(sentences)} distinct sentences")
    print(f"spearman     {100 * rho:.2f}")
    print(f"wall time    {t2 - t0:.1f} s ({t2 - t1:.1f} s encoding, threads {args.threads}, "
          f"batch size {args.batch_size})")


if __name__ == "__main__":
    main()
