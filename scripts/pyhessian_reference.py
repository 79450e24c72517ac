#!/usr/bin/env python3
"""PyHessian-style sensitivity analysis in PyTorch, to compare the cost (and the values) of hessian-mp's analysis.

For each block (`--block layer`, the default: the six Linear weights of an encoder layer together, as Q-BERT and
hessian-mp's default; `--block matrix`: each encoder Linear weight) and each of RUNS batches of BATCH sentences: the top Hessian eigenvalue
of the self-distillation loss 0.5 * mean_batch ||f(x) - f_orig(x)||^2 (mean-pooled, normalised embedding) by power
iteration, as PyHessian's `hessian.eigenvalues()` does it: the gradient is taken once with create_graph=True and
each iteration is one double-backward product that reuses that graph; stop when the relative change is below TOL.
Omega = |mean| + std over runs. Prints per block Omega, the samples and iterations, and the total time.

    python scripts/pyhessian_reference.py MODEL_DIR DATA.jsonl [--field sentence1] [--runs 5] [--iters 20]
        [--batch 32] [--samples 512] [--layers 0,5] [--block layer|matrix] [--threads 2]

Needs torch and transformers (not installed by the repo; used for reference runs only). The data sampling is not
the same as compressor's (Python's random), so values agree in scale and ranking, not digit by digit.
"""
import argparse
import json
import random
import time

import torch
from transformers import AutoModel, AutoTokenizer

MODULES = {
    "attention.self.query": "q",
    "attention.self.key": "k",
    "attention.self.value": "v",
    "attention.output.dense": "o",
    "intermediate.dense": "up",
    "output.dense": "down",
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--field", default="sentence1")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--samples", type=int, default=512)
    ap.add_argument("--tol", type=float, default=1e-3)
    ap.add_argument("--layers", default=None, help="comma-separated layer indices (default: all)")
    ap.add_argument("--block", choices=["layer", "matrix"], default="layer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    rng = random.Random(a.seed)

    tok = AutoTokenizer.from_pretrained(a.model)
    tok._tokenizer.no_padding()
    tok._tokenizer.no_truncation()
    model = AutoModel.from_pretrained(a.model, attn_implementation="eager").eval()
    for p in model.parameters():
        p.requires_grad_(False)
    texts = [json.loads(line)[a.field] for line in open(a.data, encoding="utf-8")]
    texts = rng.sample(texts, min(a.samples, len(texts)))

    def embed(batch):
        out = model(**batch).last_hidden_state
        m = batch["attention_mask"].unsqueeze(-1).to(out.dtype)
        return torch.nn.functional.normalize((out * m).sum(1) / m.sum(1), dim=-1)

    batches = []
    for _ in range(a.runs):
        chosen = rng.sample(texts, a.batch)
        b = tok(chosen, padding=True, truncation=True, max_length=128, return_tensors="pt")
        with torch.no_grad():
            target = embed(b)
        batches.append((b, target))

    layers = range(model.config.num_hidden_layers)
    if a.layers:
        layers = [int(x) for x in a.layers.split(",")]
    blocks = []
    for l in layers:
        weights = [(m, s, model.encoder.layer[l].get_submodule(m).weight) for m, s in MODULES.items()]
        if a.block == "layer":
            blocks.append((f"encoder.layer.{l}", str(l), [w for _, _, w in weights]))
        else:
            blocks += [(f"encoder.layer.{l}.{m}.weight", f"{l}.{s}", [w]) for m, s, w in weights]

    started = time.time()
    products = 0
    results = {}
    def norm(vs):
        return sum(float((x * x).sum()) for x in vs) ** 0.5

    for name, short, ws in blocks:
        for w in ws:
            w.requires_grad_(True)
        samples, iterations = [], []
        for b, target in batches:
            loss = 0.5 * ((embed(b) - target) ** 2).sum() / a.batch
            gs = torch.autograd.grad(loss, ws, create_graph=True)
            v = [torch.randn_like(w) for w in ws]
            n = norm(v)
            v = [x / n for x in v]
            value = None
            for it in range(1, a.iters + 1):
                hv = torch.autograd.grad(gs, ws, grad_outputs=v, retain_graph=True)
                products += 1
                lam = sum(float((h * x).sum()) for h, x in zip(hv, v))
                n = norm(hv)
                v = [h / n for h in hv]
                done = value is not None and abs(lam - value) / (abs(value) + 1e-6) < a.tol
                value = lam
                if done:
                    break
            samples.append(value)
            iterations.append(it)
        for w in ws:
            w.requires_grad_(False)
        mean = sum(samples) / len(samples)
        std = (sum((s - mean) ** 2 for s in samples) / len(samples)) ** 0.5
        results[name] = {"omega": abs(mean) + std, "samples": samples, "iterations": iterations}
        print(f"{short:>7}: omega {abs(mean) + std:.4g}  samples {[round(s, 4) for s in samples]}  iterations {iterations}",
              flush=True)
    seconds = time.time() - started
    print(f"{len(blocks)} blocks, {products} Hessian-vector products, {seconds:.1f} s "
          f"({seconds / max(products, 1):.3f} s per product incl. graph building), {a.threads} threads")
    print(json.dumps({"seconds": seconds, "products": products, "blocks": results}))


if __name__ == "__main__":
    main()
