#!/usr/bin/env python3
"""Load a compressor artifact with transformers (and sentence-transformers for embedding models) and compare its
outputs and weights with compressor's own.

  python scripts/check_interop.py ARTIFACT [--data FILE] [--field text] [--n 100] [--compressor PATH]

Checks, on the first N texts of FILE:
  1. outputs: transformers' sentence embeddings (mean pooling as the artifact's modules.json says, or logits for a
     classifier) against `compressor embed` on the same texts: cosine of every row >= 0.9999;
  2. sentence-transformers (embedding models): SentenceTransformer(ARTIFACT).encode against `compressor embed`,
     cosine >= 0.9999, with no user code (the artifact's `"dequantize": true` makes this work on transformers 5.x);
  3. weights: every parameter transformers decoded equals `compressor export --format dense` (max abs difference).
Artifacts with static activation scales are compared with `compressor embed --float-activations`, because no
other runtime applies them. Exit status 0 when every check passes, 1 otherwise. Needs torch and transformers
(and sentence-transformers, compressed-tensors); prints the versions used.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch


def cosines(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--data", default=str(root.parent / "shared/data/sts-b/test.jsonl"))
    p.add_argument("--field", default="sentence1")
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--compressor", default=str(root / "target/release/compressor"))
    p.add_argument("--min-cosine", type=float, default=0.9999)
    p.add_argument(
        "--no-sentence-transformers",
        action="store_true",
        help="skip check 2 (e.g. with transformers 4.x, which sentence-transformers 6 does not support)",
    )
    args = p.parse_args()

    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import compressed_tensors

        versions["compressed_tensors"] = compressed_tensors.__version__
    except ImportError:
        pass
    art = pathlib.Path(args.artifact)
    config = json.loads((art / "config.json").read_text())
    classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures", []))
    float_acts = (art / "activation_quantization.json").is_file()
    texts = []
    with open(args.data) as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)[args.field])
            if len(texts) == args.n:
                break

    cmd = [args.compressor, "embed", str(art), "--data", args.data, "--text-fields", args.field, "--limit", str(args.n)]
    if float_acts:
        cmd.append("--float-activations")
    rows = [json.loads(l) for l in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()]
    key = "logits" if classifier else "embedding"
    ours = np.array([r[key] for r in rows])

    # f32, as our runtime computes: transformers 4.x loads compressed-tensors checkpoints as f16 unless told.
    major = int(transformers.__version__.split(".")[0])
    dtype = {"dtype": torch.float32} if major >= 5 else {"torch_dtype": torch.float32}
    tok = transformers.AutoTokenizer.from_pretrained(art)
    enc = tok(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
    results = {"artifact": str(art), "versions": versions, "texts": len(texts), "float_activations": float_acts}
    ok = True
    with torch.no_grad():
        if classifier:
            model = transformers.AutoModelForSequenceClassification.from_pretrained(art, **dtype).eval()
            theirs = model(**enc).logits.numpy()
            results["argmax_agreement"] = float((theirs.argmax(1) == ours.argmax(1)).mean())
            results["max_abs_logit_diff"] = float(np.abs(theirs - ours).max())
        else:
            model = transformers.AutoModel.from_pretrained(art, **dtype).eval()
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).float()
            theirs = ((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)).numpy()
            theirs = theirs / np.linalg.norm(theirs, axis=1, keepdims=True)
    c = cosines(theirs, ours)
    results["transformers_min_cosine"] = float(c.min())
    ok &= bool(c.min() >= args.min_cosine)

    if not classifier and not args.no_sentence_transformers:
        import sentence_transformers

        versions["sentence_transformers"] = sentence_transformers.__version__
        st = sentence_transformers.SentenceTransformer(str(art), device="cpu")
        theirs_st = st.encode(texts, batch_size=32, convert_to_numpy=True)
        c = cosines(theirs_st, ours)
        results["sentence_transformers_min_cosine"] = float(c.min())
        ok &= bool(c.min() >= args.min_cosine)

    with tempfile.TemporaryDirectory() as tmp:
        dense = pathlib.Path(tmp) / "dense"
        subprocess.run([args.compressor, "export", str(art), "--output", str(dense)], check=True, capture_output=True)
        from safetensors.torch import load_file

        ref = load_file(str(dense / "model.safetensors"))
        state = model.state_dict()
        # transformers 4.x keeps CompressedLinear modules packed and decompresses them per forward; read them back.
        for name, module in model.named_modules():
            if hasattr(module, "compressor") and hasattr(module.compressor, "decompress_module"):
                state[name + ".weight"] = module.compressor.decompress_module(module)
        prefix = "bert." if classifier else ""
        worst, compared = 0.0, 0
        for name, value in ref.items():
            for candidate in (name, prefix + name, name.removeprefix("bert.")):
                if candidate in state and state[candidate].shape == value.shape:
                    worst = max(worst, float((state[candidate].float() - value.float()).abs().max()))
                    compared += 1
                    break
        results["weights_compared"] = compared
        results["weights_max_abs_diff"] = worst
        ok &= compared > 0 and worst <= 1e-6

    results["passed"] = ok
    print(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
