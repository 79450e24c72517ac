#!/usr/bin/env python3
"""Serving speed of exports, side by side in one run: sentences/s, peak RSS, STS-B Spearman and file bytes.

  python scripts/bench_deploy.py --model MINILM_DIR [--gguf FILE ...] [--onnx DIR ...] [--threads 2]
                                 [--repeats 3] [--out results.json]

Runtimes (each measured in its own process, so that peak RSS is its own):
  torch     sentence-transformers on PyTorch, f32 (the model folder);
  st-int8   sentence-transformers' own int8 ONNX export of the same model (`export_dynamic_quantized_onnx_model`,
            config "avx2": per-channel int8 weights, dynamic activations), run with backend="onnx";
  onnx:DIR  a `compressor export --format onnx` folder, run the same way (backend="onnx", file onnx/model.onnx);
  gguf:FILE a `compressor export --format gguf` file in llama.cpp (llama-cpp-python), pooling as the file declares,
            n_ctx = n_batch = n_ubatch = 512 (llama.cpp decodes as many sequences as fit, then the next ones).
Workloads, encode only (model load excluded), best of --repeats: 512 STS-B test sentences (sentence1), and 128 BBC
News articles cut to 256 tokens (the same texts for every runtime: cut with the model's tokenizer, then decoded),
each at batch 32 and batch 1. STS-B Spearman x100 over every test pair at batch 32. Peak RSS is the process's
high-water mark (VmHWM) at the end, after loading and every workload.
Needs torch, sentence-transformers, optimum + onnxruntime, llama-cpp-python, scipy. Run by hand.
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from check_onnx import cosines, read_rows as read_jsonl  # noqa: E402  (beside this script)


def peak_rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def load_runtime(kind, arg, model_dir, threads):
    """(encode(texts, batch) -> array, file bytes)."""
    if kind == "gguf":
        from llama_cpp import Llama

        # llama.cpp attends across every token of a micro-batch (other sequences masked), so its cost grows with
        # the micro-batch squared: 512 tokens (llama-server's default n_ubatch) holds two 256-token documents or a
        # batch of short sentences.
        n = 512
        llm = Llama(
            model_path=arg,
            embedding=True,
            n_ctx=n,
            n_batch=n,
            n_ubatch=n,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )

        def encode(texts, batch):
            out = []
            for i in range(0, len(texts), batch):
                out.extend(llm.embed(texts[i : i + batch], normalize=False))
            return np.asarray(out)

        return encode, os.path.getsize(arg)
    import torch

    torch.set_num_threads(threads)
    from sentence_transformers import SentenceTransformer

    if kind == "torch":
        model = SentenceTransformer(model_dir, device="cpu")
        size = sum(p.stat().st_size for p in pathlib.Path(model_dir).glob("*.safetensors"))
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        folder, file_name = arg
        model = SentenceTransformer(
            str(folder),
            device="cpu",
            backend="onnx",
            model_kwargs={"file_name": file_name, "provider": "CPUExecutionProvider", "session_options": opts},
        )
        size = os.path.getsize(pathlib.Path(folder) / file_name)

    def encode(texts, batch):
        return model.encode(texts, batch_size=batch, convert_to_numpy=True)

    return encode, size


def child(args):
    kind, _, arg = args.runtime.partition(":")
    if kind == "st-int8":
        arg = (args.st_int8_dir, "onnx/model_quint8_avx2.onnx")
    elif kind == "onnx":
        arg = (arg, "onnx/model.onnx")
    encode, size = load_runtime(kind, arg, args.model, args.threads)
    short = [r["sentence1"] for r in read_jsonl(args.sts, 512)]
    long = json.loads(pathlib.Path(args.long_texts).read_text())
    result = {"runtime": args.runtime, "file_bytes": size}
    encode(short[:32], 32)
    for name, texts in [("short", short), ("long", long)]:
        for batch in (32, 1):
            best = float("inf")
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                encode(texts, batch)
                best = min(best, time.perf_counter() - t0)
            result[f"{name}_b{batch}_s"] = best
            result[f"{name}_b{batch}_per_s"] = len(texts) / best
    from scipy.stats import spearmanr

    rows = read_jsonl(args.sts)
    a = encode([r["sentence1"] for r in rows], 32)
    b = encode([r["sentence2"] for r in rows], 32)
    result["sts_b"] = 100.0 * spearmanr(cosines(a, b), [r["score"] for r in rows]).statistic
    result["peak_rss_mb"] = peak_rss_mb()
    print(json.dumps(result), flush=True)


def make_long_texts(model_dir, path, out):
    """128 BBC articles cut to 256 tokens with the model's tokenizer (special tokens included), decoded to text."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(pathlib.Path(model_dir) / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    texts = []
    for r in read_jsonl(path, 128):
        ids = tok.encode(r["text"], add_special_tokens=False).ids[:254]
        texts.append(tok.decode(ids))
    pathlib.Path(out).write_text(json.dumps(texts))


def make_st_int8(model_dir, out):
    """sentence-transformers' own dynamic int8 ONNX export (the incumbent), once."""
    if (pathlib.Path(out) / "onnx/model_quint8_avx2.onnx").is_file():
        return
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    model = SentenceTransformer(model_dir, device="cpu", backend="onnx")
    model.save_pretrained(out)
    export_dynamic_quantized_onnx_model(model, "avx2", out)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the f32 model folder (torch and st-int8 runtimes)")
    p.add_argument("--gguf", nargs="*", default=[])
    p.add_argument("--onnx", nargs="*", default=[])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--sts", default=str(ROOT.parent / "shared/data/sts-b/test.jsonl"))
    p.add_argument("--bbc", default=str(ROOT.parent / "shared/data/bbc-news/all.jsonl"))
    p.add_argument("--work", default=str(ROOT / ".cache/bench-deploy"), help="where the incumbent export is kept")
    p.add_argument("--out", help="write the results as JSON here")
    p.add_argument("--no-peers", action="store_true", help="measure only the exports named (not torch and st-int8)")
    p.add_argument("--runtime", help=argparse.SUPPRESS)
    p.add_argument("--long-texts", help=argparse.SUPPRESS)
    p.add_argument("--st-int8-dir", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.runtime:
        return child(args)
    work = pathlib.Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    long_texts = work / "bbc-256.json"
    make_long_texts(args.model, args.bbc, long_texts)
    st_dir = work / "st-int8"
    make_st_int8(args.model, str(st_dir))
    runtimes = [] if args.no_peers else ["torch", "st-int8"]
    runtimes += [f"onnx:{d}" for d in args.onnx] + [f"gguf:{f}" for f in args.gguf]
    results = []
    for r in runtimes:
        cmd = [sys.executable, __file__, "--model", args.model, "--runtime", r, "--threads", str(args.threads),
               "--repeats", str(args.repeats), "--sts", args.sts, "--long-texts", str(long_texts),
               "--st-int8-dir", str(st_dir)]
        out = subprocess.run(cmd, capture_output=True, text=True)
        lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
        if out.returncode != 0 or not lines:
            print(f"{r}: failed\n{out.stderr[-2000:]}", file=sys.stderr)
            continue
        res = json.loads(lines[-1])
        results.append(res)
        print(
            f"{r}: {res['file_bytes']:,} B, STS-B {res['sts_b']:.2f}, short b32 {res['short_b32_per_s']:.0f}/s "
            f"b1 {res['short_b1_per_s']:.0f}/s, long b32 {res['long_b32_per_s']:.1f}/s b1 {res['long_b1_per_s']:.1f}/s, "
            f"peak RSS {res['peak_rss_mb']:.0f} MB",
            flush=True,
        )
    base = next((x for x in results if x["runtime"] == "st-int8"), None)
    if base:
        print("\nratios to st-int8 (higher is faster):")
        for x in results:
            ratios = [f"{k[:-6]} {x[k] / base[k]:.2f}x" for k in x if k.endswith("_per_s")]
            print(f"  {x['runtime']}: " + ", ".join(ratios))
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
