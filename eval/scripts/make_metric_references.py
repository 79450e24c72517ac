#!/usr/bin/env python3
"""Reference numbers for the metrics of `compressor-eval`, from the implementations MTEB and GLUE report.

Writes `eval/tests/fixtures/metric_references.json`, read by `eval/tests/metrics.rs`. Every input is generated
here from fixed seeds (with ties where ties matter), and every expected value is computed by the reference
library itself: scipy (`pearsonr`, `spearmanr`), scikit-learn (`accuracy_score`, `f1_score`, `matthews_corrcoef`,
`average_precision_score`, `homogeneity_completeness_v_measure`, `LogisticRegression`, `KMeans`,
`MiniBatchKMeans`), pytrec_eval (`ndcg_cut`, `recall`, `P`, `map_cut`) and MTEB (pair-classification thresholds,
MRR). The library versions are recorded in the output.

How to run (from the repository root, in a Python environment that has the references):

    python -m venv ~/.venvs/compressor-ref
    ~/.venvs/compressor-ref/bin/pip install numpy scipy scikit-learn pytrec-eval-terrier mteb
    ~/.venvs/compressor-ref/bin/python eval/scripts/make_metric_references.py

then `cargo test --release -p compressor-eval --test metrics`. The output is deterministic for fixed library
versions; regenerate it (and review the diff) when upgrading them.

Feature matrices are written rounded to 2 decimals and handed to the references as the float32 values the Rust
side reads (`np.float32(x).astype(np.float64)`), so both sides see bit-identical inputs.
"""

import json
import pathlib
import sys

import numpy as np
import pytrec_eval
import scipy
import scipy.stats
import sklearn
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    homogeneity_completeness_v_measure,
    matthews_corrcoef,
)

import mteb
from mteb._evaluators.retrieval_metrics import mrr as mteb_mrr
from mteb.abstasks.pair_classification import AbsTaskPairClassification

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "metric_references.json"


def floats(a):
    return [float(v) for v in np.asarray(a).ravel()]


def ints(a):
    return [int(v) for v in np.asarray(a).ravel()]


def matrix(a, decimals):
    """Rounded rows for the JSON, and the float32 values (as float64) that the Rust side will see."""
    a = np.round(np.asarray(a, dtype=np.float64), decimals)
    seen = np.float32(a).astype(np.float64)
    return [[float(v) for v in row] for row in a], seen


def correlations():
    rng = np.random.default_rng(1)
    cases = []

    def add(name, x, y):
        cases.append(
            {
                "name": name,
                "x": floats(x),
                "y": floats(y),
                "pearson": float(scipy.stats.pearsonr(x, y).statistic),
                "spearman": float(scipy.stats.spearmanr(x, y).statistic),
            }
        )

    x = rng.integers(0, 6, 60).astype(np.float64)
    add("integer_ties", x, x + rng.integers(-2, 3, 60))
    x = rng.normal(size=80)
    add("continuous", x, 0.5 * x + rng.normal(size=80))
    x = np.round(rng.normal(size=100), 1)
    add("rounded_ties_negative", x, np.round(-x + rng.normal(scale=0.8, size=100), 1))
    # STS-like: gold scores on a 0..5 grid of 0.2, predictions as float32 cosines (exact in JSON as float64)
    gold = np.round(rng.uniform(0, 5, 120) / 0.2) * 0.2
    pred = np.float32(np.tanh(gold / 5 + rng.normal(scale=0.3, size=120)))
    cases.append(
        {
            "name": "sts_f32_pred",
            "x": floats(pred.astype(np.float64)),
            "y": floats(gold),
            "x_is_f32": True,
            "pearson": float(scipy.stats.pearsonr(pred.astype(np.float64), gold).statistic),
            "spearman": float(scipy.stats.spearmanr(pred, gold).statistic),
        }
    )
    return cases


def classification():
    rng = np.random.default_rng(2)
    cases = []

    def add(name, gold, pred, positive):
        cases.append(
            {
                "name": name,
                "gold": ints(gold),
                "pred": ints(pred),
                "accuracy": float(accuracy_score(gold, pred)),
                "macro_f1": float(f1_score(gold, pred, average="macro")),
                "matthews_corrcoef": float(matthews_corrcoef(gold, pred)),
                "positive": positive,
                "f1_binary": float(f1_score(gold == positive, pred == positive)),
            }
        )

    gold = rng.integers(0, 4, 200)
    noise = rng.random(200) < 0.3
    add("four_classes", gold, np.where(noise, rng.integers(0, 4, 200), gold), 2)
    gold = rng.integers(0, 3, 90)
    pred = np.where(rng.random(90) < 0.4, rng.integers(0, 6, 90), gold)  # classes 3..5 only in pred
    add("extra_predicted_classes", gold, pred, 1)
    gold = rng.integers(0, 2, 150)
    add("binary", gold, np.where(rng.random(150) < 0.25, 1 - gold, gold), 1)
    add("constant_prediction", gold, np.zeros(150, dtype=int), 0)
    return cases


def average_precision():
    rng = np.random.default_rng(3)
    cases = []

    def add(name, scores, labels):
        cases.append(
            {
                "name": name,
                "scores": floats(scores),
                "labels": [bool(v) for v in labels],
                "average_precision": float(average_precision_score(labels, scores)),
            }
        )

    labels = rng.random(120) < 0.4
    add("tied_scores", np.round(labels * 0.3 + rng.random(120), 1), labels)
    labels = rng.random(50) < 0.5
    add("distinct_scores", labels * 0.5 + rng.normal(size=50), labels)
    labels = rng.random(80) < 0.2
    add("few_positives_coarse", np.round(rng.random(80) * 4) / 4 + labels * 0.25, labels)
    return cases


def thresholds():
    rng = np.random.default_rng(4)
    cases = []

    def add(name, scores, labels, higher_is_similar):
        labels = np.asarray(labels, dtype=np.int64)
        acc, acc_t = AbsTaskPairClassification._find_best_acc_and_threshold(
            None, list(scores), labels, higher_is_similar
        )
        f1, p, r, f1_t = AbsTaskPairClassification._find_best_f1_and_threshold(
            None, list(scores), labels, higher_is_similar
        )
        sign = 1 if higher_is_similar else -1
        cases.append(
            {
                "name": name,
                "scores": floats(scores),
                "labels": [bool(v) for v in labels],
                "higher_is_similar": higher_is_similar,
                "accuracy": float(acc),
                "accuracy_threshold": float(acc_t),
                "f1": float(f1),
                "precision": float(p),
                "recall": float(r),
                "f1_threshold": float(f1_t),
                "average_precision": float(average_precision_score(labels, np.asarray(scores) * sign)),
            }
        )

    labels = rng.random(100) < 0.5
    add("cosine_distinct", np.clip(0.3 * labels + rng.normal(0.5, 0.2, 100), -1, 1), labels, True)
    labels = rng.random(100) < 0.35
    add("cosine_ties", np.round(0.2 * labels + rng.normal(0.5, 0.2, 100), 1), labels, True)
    labels = rng.random(90) < 0.5
    add("euclidean_ties", np.round(2.0 - 0.6 * labels + rng.normal(0, 0.4, 90), 1), labels, False)
    return cases


def retrieval():
    rng = np.random.default_rng(5)
    ks = [1, 3, 5, 10]
    docs = [f"d{i:02d}" for i in range(40)]
    qrels, run = {}, {}
    for q in range(8):
        qid = f"q{q}"
        n_rel = int(rng.integers(1, 6))
        relevant = rng.choice(40, n_rel, replace=False)
        qrels[qid] = {docs[i]: 1 for i in relevant}
        scores = rng.random(40)
        scores[relevant] += 0.3
        scores = np.round(scores, 1)  # many ties: the tie-break by doc id decides the order
        run[qid] = {d: float(s) for d, s in zip(docs, scores)}
    measures = {f"ndcg_cut.{','.join(map(str, ks))}", f"recall.{','.join(map(str, ks))}",
                f"P.{','.join(map(str, ks))}", f"map_cut.{','.join(map(str, ks))}"}
    trec = pytrec_eval.RelevanceEvaluator(qrels, measures).evaluate(run)
    mrr = mteb_mrr(qrels, run, ks)
    queries = []
    for n, qid in enumerate(run):
        ranking = [d for d, _ in sorted(run[qid].items(), key=lambda item: (item[1], item[0]), reverse=True)]
        entry = {
            "id": qid,
            "doc_ids": docs,
            "scores": [run[qid][d] for d in docs],
            "relevant": sorted(qrels[qid]),
            "ranking": ranking,
        }
        for k in ks:
            entry[f"ndcg_at_{k}"] = trec[qid][f"ndcg_cut_{k}"]
            entry[f"recall_at_{k}"] = trec[qid][f"recall_{k}"]
            entry[f"precision_at_{k}"] = trec[qid][f"P_{k}"]
            entry[f"map_at_{k}"] = trec[qid][f"map_cut_{k}"]
            entry[f"mrr_at_{k}"] = float(mrr[f"MRR@{k}"][n])
        queries.append(entry)
    return {"ks": ks, "queries": queries}


def v_measure():
    rng = np.random.default_rng(6)
    cases = []

    def add(name, true, pred):
        h, c, v = homogeneity_completeness_v_measure(true, pred)
        cases.append(
            {
                "name": name,
                "labels_true": ints(true),
                "labels_pred": ints(pred),
                "homogeneity": float(h),
                "completeness": float(c),
                "v_measure": float(v),
            }
        )

    true = rng.integers(0, 5, 300)
    add("correlated", true, np.where(rng.random(300) < 0.4, rng.integers(0, 6, 300), true))
    add("independent", rng.integers(0, 4, 200), rng.integers(0, 7, 200))
    add("one_cluster", true, np.zeros(300, dtype=int))
    add("relabelled_identical", true, (true * 7 + 3) % 11)
    return cases


def logreg():
    rng = np.random.default_rng(7)
    cases = []

    def add(name, n_train, n_test, dim, n_classes, c, spread):
        means = rng.normal(scale=spread, size=(n_classes, dim))
        y = np.concatenate([np.arange(n_classes), rng.integers(0, n_classes, n_train + n_test - n_classes)])
        x_rows, x = matrix(means[y] + rng.normal(size=(len(y), dim)), decimals=2)
        entry = {
            "name": name,
            "n_classes": n_classes,
            "c": c,
            "x_train": x_rows[:n_train],
            "y_train": ints(y[:n_train]),
            "x_test": x_rows[n_train:],
        }
        for tag, kwargs in [("default", {}), ("converged", {"tol": 1e-10, "max_iter": 100000})]:
            model = LogisticRegression(C=c, **kwargs).fit(x[:n_train], y[:n_train])
            entry[tag] = {
                "n_iter": int(model.n_iter_[0]),
                "coef": [floats(row) for row in model.coef_],
                "intercept": floats(model.intercept_),
                "proba_test": [floats(row) for row in model.predict_proba(x[n_train:])],
                "predict_test": ints(model.predict(x[n_train:])),
            }
        cases.append(entry)

    add("three_classes", 120, 20, 8, 3, 1.0, 1.2)
    add("binary", 100, 20, 6, 2, 1.0, 0.8)
    add("five_classes_strong_penalty", 100, 20, 8, 5, 0.1, 1.5)
    return cases


def clustering():
    rng = np.random.default_rng(8)
    cases = []

    def add(name, n, dim, k, spread, seeds=100):
        centers = rng.normal(scale=spread, size=(k, dim))
        y = np.concatenate([np.arange(k), rng.integers(0, k, n - k)])
        rows, x = matrix(centers[y] + rng.normal(size=(n, dim)), decimals=2)
        km = KMeans(n_clusters=k, n_init=10, random_state=0).fit(x)
        mb_v = []
        mb_inertia = []
        for seed in range(seeds):
            mb = MiniBatchKMeans(n_clusters=k, batch_size=500, n_init="auto", random_state=seed).fit(x)
            mb_v.append(homogeneity_completeness_v_measure(y, mb.labels_)[2])
            mb_inertia.append(mb.inertia_)
        cases.append(
            {
                "name": name,
                "n_clusters": k,
                "x": rows,
                "labels_true": ints(y),
                "kmeans_n_init_10_inertia": float(km.inertia_),
                "kmeans_n_init_10_v_measure": float(homogeneity_completeness_v_measure(y, km.labels_)[2]),
                "mini_batch_v_measure_mean": float(np.mean(mb_v)),
                "mini_batch_inertia_mean": float(np.mean(mb_inertia)),
                "mini_batch_seeds": seeds,
            }
        )

    add("separated", 150, 5, 3, 20.0)
    add("overlapping", 400, 8, 6, 2.0)
    return cases


def main():
    refs = {
        "generator": "eval/scripts/make_metric_references.py",
        "versions": {
            "python": sys.version.split()[0],
            "numpy": np.__version__,
            "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__,
            "mteb": mteb.__version__,
            "pytrec_eval": getattr(pytrec_eval, "__version__", "unknown"),
        },
        "correlations": correlations(),
        "classification": classification(),
        "average_precision": average_precision(),
        "thresholds": thresholds(),
        "retrieval": retrieval(),
        "v_measure": v_measure(),
        "logreg": logreg(),
        "clustering": clustering(),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(refs, separators=(",", ":"))
    OUT.write_text(text + "\n")
    print(f"wrote {OUT} ({len(text) // 1024} KiB)")


if __name__ == "__main__":
    main()
