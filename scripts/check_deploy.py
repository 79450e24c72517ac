#!/usr/bin/env python3
"""Check exports in the runtimes that serve them: GGUF files in llama.cpp (llama-cpp-python) and ONNX exports in
onnxruntime, against `compressor embed` of the model they were exported from.

  python scripts/check_deploy.py MODEL [--gguf FILE ...] [--onnx DIR ...] [--data STS.jsonl] [--n 200]
                                 [--threads 2] [--min-cosine 0.999] [--sts]

For each export, on the first N sentences of DATA (field sentence1, else sentence or text):
  1. sentence embeddings (or a classifier's logits) against `compressor embed MODEL --float-activations` (no other runtime applies static
     activation scales): cosine of every row >= --min-cosine (min and mean printed); for a classifier, argmax
     agreement >= 0.995 (and the largest logit difference printed);
  2. with --sts: STS-B Spearman (x100) of the export over every pair of DATA, and of `compressor eval`'s runtime.
Exit status 0 when every check passes, 1 otherwise. Needs numpy, scipy, llama-cpp-python (for --gguf) and
onnxruntime (for --onnx); prints the versions used. Run by hand, like check_interop.py.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import check_onnx  # noqa: E402  (beside this script)
from check_onnx import cosines, read_rows  # noqa: E402


def compressor_embed(compressor, model, texts):
    """`compressor embed` of `texts` (float activations): one row per text."""
    with tempfile.TemporaryDirectory() as tmp:
        data = pathlib.Path(tmp) / "texts.jsonl"
        data.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
        out = subprocess.run(
            [compressor, "embed", str(model), "--data", str(data), "--float-activations"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    rows = [json.loads(line) for line in out.splitlines() if line.strip()]
    return np.array([r.get("embedding", r.get("logits")) for r in rows], dtype=np.float64)


class GgufModel:
    """A GGUF embedder in llama.cpp through llama-cpp-python (pooling as the file declares)."""

    def __init__(self, path, threads=2, n_ctx=512):
        from llama_cpp import Llama

        self.llm = Llama(
            model_path=str(path),
            embedding=True,
            n_ctx=n_ctx,
            n_batch=n_ctx,
            n_ubatch=n_ctx,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

    def embed(self, texts):
        return np.array(self.llm.embed(list(texts), normalize=False), dtype=np.float64)


def onnx_model(out_dir, threads=2):
    """An ONNX export in onnxruntime (scripts/check_onnx.py)."""

    class OnnxModel:
        sess = check_onnx.session(out_dir, threads)

        def embed(self, texts):
            return np.asarray(
                check_onnx.onnx_embeddings(out_dir, list(texts), threads, sess=self.sess), dtype=np.float64
            )

    return OnnxModel()


def sts_spearman(embed, rows, batch=64):
    from scipy.stats import spearmanr

    left = [r["sentence1"] for r in rows]
    right = [r["sentence2"] for r in rows]
    a = np.concatenate([embed(left[i : i + batch]) for i in range(0, len(left), batch)])
    b = np.concatenate([embed(right[i : i + batch]) for i in range(0, len(right), batch)])
    return 100.0 * spearmanr(cosines(a, b), [r["score"] for r in rows]).statistic


def main():
    root = pathlib.Path(__file__).resolve().parent.parent
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="the checkpoint or artifact the exports were made from")
    p.add_argument("--gguf", nargs="*", default=[])
    p.add_argument("--onnx", nargs="*", default=[])
    p.add_argument("--data", default=str(root.parent / "shared/data/sts-b/test.jsonl"))
    p.add_argument("--n", type=int, default=200)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--min-cosine", type=float, default=0.999)
    p.add_argument("--sts", action="store_true", help="also compute STS-B Spearman on every pair of --data")
    p.add_argument("--compressor", default=str(root / "target/release/compressor"))
    args = p.parse_args()

    versions = {"numpy": np.__version__}
    if args.gguf:
        import llama_cpp

        versions["llama_cpp_python"] = llama_cpp.__version__
    if args.onnx:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    print("versions:", json.dumps(versions))

    p_rows = read_rows(args.data, args.n)
    texts = [r.get("sentence1", r.get("sentence", r.get("text"))) for r in p_rows]
    ours = compressor_embed(args.compressor, args.model, texts)
    failed = False
    exports = [("gguf", g, lambda g=g: GgufModel(g, args.threads)) for g in args.gguf]
    exports += [("onnx", o, lambda o=o: onnx_model(o, args.threads)) for o in args.onnx]
    for kind, path, load in exports:
        model = load()
        got = model.embed(texts)
        classifier = got.ndim == 2 and got.shape[1] > ours.shape[1]
        if classifier:
            # llama.cpp's rank pooling (a classifier) returns the logits in the first n_cls_out values of each row.
            got = got[:, : ours.shape[1]]
        if got.shape != ours.shape:
            print(f"FAIL {kind} {path}: shape {got.shape}, compressor embed {ours.shape}")
            failed = True
            continue
        c = cosines(got, ours)
        # Logits: the cosine of two numbers near zero says little; the predicted label must agree instead.
        ok = c.min() >= args.min_cosine if not classifier else (got.argmax(1) == ours.argmax(1)).mean() >= 0.995
        failed |= not ok
        line = f"{'ok  ' if ok else 'FAIL'} {kind} {path}: cosine vs compressor embed min {c.min():.6f} mean {c.mean():.6f} ({len(texts)} texts)"
        if classifier or ours.shape[1] < 8:
            agree = (got.argmax(1) == ours.argmax(1)).mean()
            line += f"; logits max abs diff {np.abs(got - ours).max():.4f}, argmax agreement {agree:.3f}"
        if args.sts:
            rows = read_rows(args.data)
            line += f"; STS-B Spearman {sts_spearman(model.embed, rows):.2f} ({len(rows)} pairs)"
        print(line, flush=True)
    if args.sts:
        rows = read_rows(args.data)
        print(
            f"compressor {args.model}: STS-B Spearman {sts_spearman(lambda t: compressor_embed(args.compressor, args.model, t), rows, batch=100000):.2f}"
        )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
