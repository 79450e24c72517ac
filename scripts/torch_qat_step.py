#!/usr/bin/env python3
"""The PyTorch peer of `cargo bench -p compressor-passes --bench qat`: one QAT step of the same model on the same
data, timed the same way.

  python scripts/torch_qat_step.py MODEL_DIR DATA.jsonl [--field sentence1] [--batch 32] [--steps 5] [--threads 2]

Every encoder nn.Linear computes with its weight fake-quantized by the straight-through estimator,
`W + (Q(W) - W).detach()`, Q symmetric 3-bit (codes -4..3, scale = absmax / 4 per group of 128 inputs of a row),
recomputed from W every step. The loss is the self-distillation of the mean-pooled, L2-normalised embedding: the
mean squared difference to the float model's own embedding of the batch (computed once per batch, no gradient).
Adam (lr 2e-5, betas 0.9 / 0.999, eps 1e-8) updates the Linears' weights and biases; embeddings and LayerNorms are
frozen. Batches: the first BATCH * (STEPS + 1) texts of the file in order, tokenized by the model's tokenizer
(truncation at 128, dynamic padding). Prints the seconds of one step (the median of STEPS steps after one warm-up).
Needs torch and transformers.
"""

import argparse
import json
import time

import torch
from transformers import AutoModel, AutoTokenizer


def fake_quant(w, bits=3, group=128):
    qmax = 2 ** (bits - 1)
    out_f, in_f = w.shape
    g = w.reshape(out_f, in_f // group, group)
    scale = g.abs().amax(dim=-1, keepdim=True).clamp(min=1e-12) / qmax
    q = torch.clamp(torch.round(g / scale), -qmax, qmax - 1) * scale
    return q.reshape(out_f, in_f)


class SteLinear(torch.nn.Module):
    def __init__(self, lin):
        super().__init__()
        self.weight = lin.weight
        self.bias = lin.bias

    def forward(self, x):
        w = self.weight + (fake_quant(self.weight) - self.weight).detach()
        return torch.nn.functional.linear(x, w, self.bias)


def pooled(model, enc):
    h = model(**enc).last_hidden_state
    m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
    return torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("data")
    ap.add_argument("--field", default="sentence1")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, attn_implementation="eager").float().train(False)
    texts = []
    with open(args.data, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)[args.field])
            if len(texts) == args.batch * (args.steps + 1):
                break
    batches = [tok(texts[i:i + args.batch], truncation=True, max_length=128, padding=True, return_tensors="pt")
               for i in range(0, len(texts), args.batch)]
    with torch.no_grad():
        targets = [pooled(model, b) for b in batches]
    for p in model.parameters():
        p.requires_grad_(False)
    params = []
    for layer in model.encoder.layer:
        for parent, name in [(layer.attention.self, "query"), (layer.attention.self, "key"),
                             (layer.attention.self, "value"), (layer.attention.output, "dense"),
                             (layer.intermediate, "dense"), (layer.output, "dense")]:
            lin = getattr(parent, name)
            lin.weight.requires_grad_(True)
            lin.bias.requires_grad_(True)
            params += [lin.weight, lin.bias]
            setattr(parent, name, SteLinear(lin))
    opt = torch.optim.Adam(params, lr=2e-5, betas=(0.9, 0.999), eps=1e-8)
    times = []
    for step, (b, t) in enumerate(zip(batches, targets)):
        start = time.perf_counter()
        opt.zero_grad()
        loss = ((pooled(model, b) - t) ** 2).mean()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - start)
    steps = sorted(times[1:])
    median = steps[len(steps) // 2]
    print(f"torch {torch.__version__}, {args.threads} threads, batches of {args.batch}: "
          f"{median:.3f} s a step (median of {len(steps)}; first {times[0]:.3f} s)")
    print(json.dumps({"seconds_per_step": median, "steps": times}))


if __name__ == "__main__":
    main()
