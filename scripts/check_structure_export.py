#!/usr/bin/env python3
"""Check the two exports of a model with per-layer shapes (a `prune` artifact) against compressor's own runtime.

  python scripts/check_structure_export.py ARTIFACT [--data FILE] [--field sentence1] [--n 64] [--compressor PATH]

Writes both exports of ARTIFACT into a temporary folder with `compressor export`, then, on the first N texts:
  1. remote-code: AutoModel.from_pretrained(export, trust_remote_code=True) with the artifact's pooling (mean, then
     L2 normalisation as modules.json says; logits for a classifier), and SentenceTransformer(export,
     trust_remote_code=True).encode for embedding models, against `compressor embed ARTIFACT`;
  2. dense (zero-padded): stock AutoModel / SentenceTransformer, no user code, against the same. A model whose
     hidden dimensions were pruned has no exact dense form: the script checks that the export refuses it.
Every row's cosine must be >= --min-cosine (0.9999). Exit status 0 when every check passes, 1 otherwise.
Needs torch, transformers and sentence-transformers; prints the versions used.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from check_interop import cosines  # noqa: E402


def transformers_outputs(folder, texts, classifier, remote):
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    cls = AutoModelForSequenceClassification if classifier else AutoModel
    model = cls.from_pretrained(folder, trust_remote_code=remote, dtype=torch.float32).eval()
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        out = model(**enc)
    if classifier:
        return out.logits.numpy()
    mask = enc["attention_mask"].unsqueeze(-1).float()
    pooled = (out.last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, dim=1).numpy()


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("artifact")
    p.add_argument("--data", default=str(root.parent / "shared/data/sts-b/test.jsonl"))
    p.add_argument("--field", default="sentence1")
    p.add_argument("--n", type=int, default=64)
    p.add_argument("--compressor", default=str(root / "target/release/compressor"))
    p.add_argument("--min-cosine", type=float, default=0.9999)
    args = p.parse_args()

    import sentence_transformers
    import transformers

    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"sentence-transformers {sentence_transformers.__version__}"
    )
    art = pathlib.Path(args.artifact)
    config = json.loads((art / "config.json").read_text())
    classifier = any(a.endswith("ForSequenceClassification") for a in config.get("architectures", []))
    texts = []
    with open(args.data) as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)[args.field])
            if len(texts) == args.n:
                break
    cmd = [args.compressor, "embed", str(art), "--data", args.data, "--text-fields", args.field, "--limit", str(args.n)]
    rows = [json.loads(l) for l in subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()]
    ours = np.array([r["logits" if classifier else "embedding"] for r in rows])

    failures = 0

    def report(name, theirs):
        nonlocal failures
        c = cosines(ours, theirs)
        ok = c.min() >= args.min_cosine
        failures += 0 if ok else 1
        print(f"{'ok  ' if ok else 'FAIL'} {name}: min cosine {c.min():.7f} over {len(c)} texts")

    hidden_pruned = "hidden" in (config.get("compressor") or {})
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ["remote-code", "dense"]:
            out = pathlib.Path(tmp) / fmt
            if fmt == "dense" and hidden_pruned:
                r = subprocess.run(
                    [args.compressor, "export", str(art), "--format", fmt, "--output", str(out)],
                    capture_output=True,
                    text=True,
                )
                refused = r.returncode == 2 and "compressor.hidden" in r.stderr and not out.exists()
                failures += 0 if refused else 1
                print(f"{'ok  ' if refused else 'FAIL'} dense: refused for pruned hidden dimensions")
                continue
            subprocess.run(
                [args.compressor, "export", str(art), "--format", fmt, "--output", str(out)],
                check=True,
                capture_output=True,
            )
            remote = fmt == "remote-code"
            report(f"{fmt}: transformers", transformers_outputs(str(out), texts, classifier, remote))
            if not classifier:
                from sentence_transformers import SentenceTransformer

                st = SentenceTransformer(str(out), device="cpu", trust_remote_code=remote)
                report(f"{fmt}: sentence-transformers", st.encode(texts, convert_to_numpy=True))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
