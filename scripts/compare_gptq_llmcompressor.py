#!/usr/bin/env python3
"""Per-layer GPTQ error of compressor against llm-compressor's GPTQ W4A16 on the same model and calibration texts.

  python scripts/compare_gptq_llmcompressor.py MODEL_DIR CALIBRATION.jsonl OURS_DENSE_EXPORT [--field text]
      [--max-length 128] [--threads 2] [--actorder static|none]

CALIBRATION.jsonl: the texts both sides calibrate on (give compressor a `[calibration]` with `samples` at least its
line count, so it uses them all). OURS_DENSE_EXPORT: `compressor export ARTIFACT --format dense --output DIR` of a
`blockwise-quant` artifact with `bits = 4`, `group-size = 128`, `rounding = "gptq"` (damping 0.01, block 128, and
act-order matching --actorder). The script
  1. measures H = E[x x^T] of every encoder Linear's input over the real (not padding) tokens of the original model,
  2. runs llm-compressor's oneshot GPTQModifier (W4A16: 4-bit symmetric, groups of 128, dampening 0.01, block 128),
  3. prints, per Linear, the layer error tr((W - Q) H (W - Q)^T) of round-to-nearest, of llm-compressor's GPTQ and
     of compressor's GPTQ, and the totals.
Needs llm-compressor (0.14 pins transformers <= 5.17: use its own environment). The project does not need it.
"""

import argparse
import json

import torch


def texts_of(path, field):
    with open(path) as f:
        return [json.loads(line)[field] for line in f if line.strip()]


def second_moments(model, tok, texts, max_length):
    """E[x x^T] of the input of every Linear under `encoder.`, over real tokens (f64)."""
    sums, counts, hooks = {}, {}, []
    mask_holder = {}

    def hook(name):
        def f(_module, inputs, _out):
            x = inputs[0].detach().double()
            m = mask_holder["mask"].reshape(-1).bool()
            x = x.reshape(-1, x.shape[-1])[m]
            sums[name] = sums.get(name, 0) + x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]
        return f

    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and ".encoder." in f".{name}":
            hooks.append(mod.register_forward_hook(hook(name)))
    with torch.no_grad():
        for t in texts:
            enc = tok(t, truncation=True, max_length=max_length, return_tensors="pt")
            mask_holder["mask"] = enc["attention_mask"]
            model(**enc)
    for h in hooks:
        h.remove()
    return {n: sums[n] / counts[n] for n in sums}


def rtn(w, group=128, bits=4):
    """Symmetric round-to-nearest with one scale per `group` inputs of a row (compressed-tensors' formula)."""
    out, rows, cols = w.clone(), w.shape[0], w.shape[1]
    q = 2 ** (bits - 1)
    for g in range(0, cols, group):
        blk = w[:, g:g + group]
        scale = blk.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / ((2 ** bits - 1) / 2)
        out[:, g:g + group] = (blk / scale).round().clamp(-q, q - 1) * scale
    return out


def layer_error(w, q, h):
    d = (w.double() - q.double())
    return float(torch.einsum("ri,ij,rj->", d, h, d))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("calibration")
    p.add_argument("ours")
    p.add_argument("--field", default="text")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--actorder", default="static", choices=["static", "none"])
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    from datasets import Dataset
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModel.from_pretrained(args.model, dtype=torch.float32).eval()
    texts = texts_of(args.calibration, args.field)
    h = second_moments(model, tok, texts, args.max_length)
    original = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in h}

    ds = Dataset.from_dict({"text": texts}).map(
        lambda r: tok(r["text"], truncation=True, max_length=args.max_length), remove_columns=["text"])
    recipe = GPTQModifier(targets="Linear", scheme="W4A16", ignore=["pooler.dense"], dampening_frac=0.01,
                          block_size=128, actorder=None if args.actorder == "none" else args.actorder)
    oneshot(model=model, dataset=ds, recipe=recipe, num_calibration_samples=len(texts),
            max_seq_length=args.max_length)
    theirs = {n: m.weight.detach().clone() for n, m in model.named_modules() if n in h}

    ours_tensors = {}
    import glob
    for f in glob.glob(f"{args.ours}/*.safetensors"):
        ours_tensors.update(load_file(f))

    def ours_of(name):
        for k in (name, name.removeprefix("bert."), f"bert.{name}"):
            if f"{k}.weight" in ours_tensors:
                return ours_tensors[f"{k}.weight"]
        raise KeyError(name)

    totals = [0.0, 0.0, 0.0]
    print(f"{'linear':52s} {'nearest':>12s} {'llm-compressor':>15s} {'compressor':>12s} {'ours/theirs':>11s}")
    for name in sorted(h):
        w, hh = original[name], h[name]
        e = [layer_error(w, rtn(w), hh), layer_error(w, theirs[name], hh), layer_error(w, ours_of(name), hh)]
        totals = [a + b for a, b in zip(totals, e)]
        print(f"{name:52s} {e[0]:12.4f} {e[1]:15.4f} {e[2]:12.4f} {e[2] / e[1]:11.3f}")
    print(f"{'total':52s} {totals[0]:12.4f} {totals[1]:15.4f} {totals[2]:12.4f} {totals[2] / totals[1]:11.3f}")


if __name__ == "__main__":
    main()
