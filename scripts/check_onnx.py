#!/usr/bin/env python3
"""Check `compressor export --format onnx` in onnxruntime against compressor's own runtime.

  python scripts/check_onnx.py fixtures FIXTURES_DIR [--compressor PATH]
  python scripts/check_onnx.py speed EXPORT [EXPORT ...] --data /path/to/sts-b/test.jsonl [--speed 512] [--repeats 5]
  python scripts/check_onnx.py model DIR [DIR ...] --data /path/to/sts-b/test.jsonl [--types f32,int8,int4,auto]
                                [--n 256] [--threads 2] [--speed 512] [--st-quantized] [--compressor PATH]

fixtures: FIXTURES_DIR is what `cargo run --release -p compressor-models --example onnx_fixtures -- FIXTURES_DIR`
  writes (tiny BERTs, one with per-layer shapes, low-rank and quantized weights, each with our runtime's
  `last_hidden_state` and `sentence_embedding` of a padded batch in reference.json). Every fixture is exported with
  each --type and `--pooling` and run in onnxruntime on that batch; prints the max abs difference of both outputs.
  The f32 export must be within 1e-5, and so must the auto export of tiny-w4 (every 4-bit code copied into
  MatMulNBits, no activation quantization); exit status 1 otherwise.
model: each DIR (a checkpoint or a compressor artifact) is exported with each --type; on the first N `sentence1`
  texts of --data, onnxruntime's embeddings (the folder's pooling applied in numpy) are compared with `compressor
  embed DIR` (cosine per sentence, min and mean), and SentenceTransformer(export, backend="onnx") with them where
  optimum is installed; then the STS-B Spearman of every export and of `compressor embed` on the whole file, the
  bytes of onnx/model.onnx, and a speed figure (--speed sentences, batch 32, sorted by length, one onnxruntime
  session with intra_op_num_threads = --threads). --st-quantized adds sentence-transformers' own
  export_dynamic_quantized_onnx_model(model, "avx2", ...) of the first DIR for the same figures.

speed: times folders already exported (each holding onnx/model.onnx), interleaved round by round (the machine may
  be shared), and prints the best and the median of --repeats rounds per folder.

Functions meant for reuse (scripts/check_deploy.py): onnx_embeddings(out_dir, texts, threads), compressor_embed,
export, sts_spearman.
"""

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_COMPRESSOR = str(ROOT / "target/release/compressor")


def export(src, out, tensor_type, pooling=False, compressor=DEFAULT_COMPRESSOR, extra=()):
    """`compressor export SRC --format onnx --type T --output OUT --force`; returns its stderr."""
    cmd = [compressor, "export", str(src), "--format", "onnx", "--type", tensor_type, "--output", str(out), "--force"]
    if pooling:
        cmd.append("--pooling")
    cmd += list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr}")
    return r.stderr


def session(out_dir, threads=2):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(pathlib.Path(out_dir) / "onnx/model.onnx"), opts, providers=["CPUExecutionProvider"])


def folder_pooling(folder):
    """(mode, normalize) from modules.json and the Pooling config; mean without normalisation when absent."""
    folder = pathlib.Path(folder)
    modules_path = folder / "modules.json"
    if not modules_path.is_file():
        return "mean", False
    modules = json.loads(modules_path.read_text())
    normalize = any(m.get("type", "").endswith(".Normalize") for m in modules)
    mode = "mean"
    for m in modules:
        if m.get("type", "").endswith(".Pooling"):
            cfg = json.loads((folder / m.get("path", "1_Pooling") / "config.json").read_text())
            if cfg.get("pooling_mode_cls_token"):
                mode = "cls"
            elif cfg.get("pooling_mode_max_tokens"):
                mode = "max"
    return mode, normalize


def pool(hidden, mask, mode, normalize):
    m = mask[..., None].astype(np.float32)
    if mode == "cls":
        out = hidden[:, 0]
    elif mode == "max":
        out = np.where(m == 0, -1e9, hidden).max(1)
    else:
        out = (hidden * m).sum(1) / np.maximum(m.sum(1), 1e-9)
    if normalize:
        out = out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def tokenizer(out_dir):
    from transformers import AutoTokenizer

    out_dir = pathlib.Path(out_dir)
    tok = AutoTokenizer.from_pretrained(str(out_dir))
    max_len = 512
    sb = out_dir / "sentence_bert_config.json"
    if sb.is_file():
        max_len = json.loads(sb.read_text()).get("max_seq_length", max_len)
    return tok, max_len


def onnx_embeddings(out_dir, texts, threads=2, batch_size=32, sess=None):
    """Sentence embeddings of `texts` from the export in `out_dir` (onnx/model.onnx): tokenized as
    sentence-transformers does (truncation to max_seq_length, padding per batch), batches sorted by length, the
    folder's pooling applied to last_hidden_state. Returns an array in the order of `texts`."""
    sess = sess or session(out_dir, threads)
    tok, max_len = tokenizer(out_dir)
    mode, normalize = folder_pooling(out_dir)
    order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
    out = [None] * len(texts)
    names = {i.name for i in sess.get_inputs()}
    for s in range(0, len(order), batch_size):
        idx = order[s : s + batch_size]
        enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_len, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids") if k in names}
        if "token_type_ids" in names and "token_type_ids" not in feed:
            feed["token_type_ids"] = np.zeros_like(feed["input_ids"])
        hidden = sess.run(["last_hidden_state"], feed)[0]
        for row, i in zip(pool(hidden, enc["attention_mask"], mode, normalize), idx):
            out[i] = row
    return np.stack(out)


def compressor_embed(folder, data, field, limit=None, compressor=DEFAULT_COMPRESSOR):
    cmd = [compressor, "embed", str(folder), "--data", str(data), "--text-fields", field]
    if limit:
        cmd += ["--limit", str(limit)]
    r = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return np.array([json.loads(line)["embedding"] for line in r.stdout.splitlines()])


def cosines(a, b):
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-30)


def read_rows(data, n=None):
    """The first `n` (all when None) records of a JSONL file; shared by check_deploy.py and bench_deploy.py."""
    rows = []
    with open(data, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                rows.append(json.loads(line))
            if n and len(rows) == n:
                break
    return rows


def sts_spearman(emb1, emb2, scores):
    from scipy.stats import spearmanr

    return 100 * spearmanr(cosines(emb1, emb2), scores).statistic


def speed(out_dir, texts, threads):
    sess = session(out_dir, threads)
    onnx_embeddings(out_dir, texts[:32], threads, sess=sess)  # warm up
    t = time.perf_counter()
    onnx_embeddings(out_dir, texts, threads, sess=sess)
    return time.perf_counter() - t


def fixtures(args):
    import onnxruntime as ort

    failures = 0
    for fx in sorted(p for p in pathlib.Path(args.dir).iterdir() if (p / "reference.json").is_file()):
        ref = json.loads((fx / "reference.json").read_text())
        feed = {k: np.array(ref[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        want = np.array(ref["last_hidden_state"], dtype=np.float32).reshape(ref["shape"])
        want_pooled = np.array(ref["sentence_embedding"], dtype=np.float32)
        with tempfile.TemporaryDirectory() as tmp:
            for t in args.types.split(","):
                out = pathlib.Path(tmp) / f"{fx.name}-{t}"
                log = export(fx, out, t, pooling=True, compressor=args.compressor)
                sess = ort.InferenceSession(str(out / "onnx/model.onnx"), providers=["CPUExecutionProvider"])
                hidden, pooled = sess.run(["last_hidden_state", "sentence_embedding"], feed)
                d_h = float(np.abs(hidden - want).max())
                d_p = float(np.abs(pooled - want_pooled).max())
                # f32 must match; so must a 4-bit model's auto export (every code copied, no activation quantization).
                exact = t == "f32" or (t == "auto" and fx.name == "tiny-w4")
                ok = not exact or (d_h <= 1e-5 and d_p <= 1e-5)
                failures += not ok
                kinds = [l for l in log.splitlines() if l.startswith("onnx --type")]
                print(f"{fx.name:12s} {t:5s} max|last_hidden_state diff| {d_h:.2e}  max|sentence_embedding diff| {d_p:.2e}"
                      f"  {'ok' if ok else 'FAIL'}  [{kinds[0] if kinds else ''}]")
    return failures


def speeds(args):
    texts = [r["sentence1"] for r in read_rows(args.data)][: args.speed]
    sessions = {d: session(d, args.threads) for d in args.dirs}
    times = {d: [] for d in args.dirs}
    for d, sess in sessions.items():
        onnx_embeddings(d, texts[:32], args.threads, sess=sess)  # warm up
    for _ in range(args.repeats):
        for d, sess in sessions.items():
            t = time.perf_counter()
            onnx_embeddings(d, texts, args.threads, sess=sess)
            times[d].append(time.perf_counter() - t)
    for d, ts in times.items():
        size = (pathlib.Path(d) / "onnx/model.onnx").stat().st_size
        print(json.dumps({"export": str(d), "bytes": size, "best_s": min(ts), "median_s": float(np.median(ts)),
                          "sentences_per_s": len(texts) / min(ts)}))
    return 0


def st_encode(out_dir, texts):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(out_dir), backend="onnx", device="cpu",
                                model_kwargs={"file_name": "onnx/model.onnx", "provider": "CPUExecutionProvider"})
    return model.encode(texts, batch_size=32, convert_to_numpy=True)


def models(args):
    rows = read_rows(args.data)
    s1 = [r["sentence1"] for r in rows]
    s2 = [r["sentence2"] for r in rows]
    scores = [r["score"] for r in rows]
    speed_texts = s1[: args.speed]
    failures = 0
    results = []
    have_optimum = True
    try:
        import optimum.onnxruntime  # noqa: F401
    except Exception:  # noqa: BLE001
        have_optimum = False
    tmp = tempfile.mkdtemp(prefix="check-onnx-")
    for d in args.dirs:
        d = pathlib.Path(d)
        ours = compressor_embed(d, args.data, "sentence1", args.n, args.compressor)
        ours_full = (compressor_embed(d, args.data, "sentence1", compressor=args.compressor),
                     compressor_embed(d, args.data, "sentence2", compressor=args.compressor))
        sp = sts_spearman(*ours_full, scores)
        print(f"{d.name}: compressor embed STS-B spearman {sp:.2f}")
        results.append({"model": d.name, "export": "compressor runtime", "spearman": sp})
        for t in args.types.split(","):
            out = pathlib.Path(tmp) / f"{d.name}-{t}"
            log = export(d, out, t, compressor=args.compressor)
            kinds = [l for l in log.splitlines() if l.startswith("onnx --type")]
            got = onnx_embeddings(out, s1[: args.n], args.threads)
            c = cosines(got, ours)
            sp = sts_spearman(onnx_embeddings(out, s1, args.threads), onnx_embeddings(out, s2, args.threads), scores)
            size = (out / "onnx/model.onnx").stat().st_size
            secs = speed(out, speed_texts, args.threads)
            line = {"model": d.name, "export": t, "cos_min": float(c.min()), "cos_mean": float(c.mean()),
                    "spearman": sp, "bytes": size, "seconds": secs, "plan": kinds[0] if kinds else ""}
            if have_optimum:
                st = st_encode(out, s1[: args.n])
                line["st_vs_ort_cos_min"] = float(cosines(st, got).min())
            failures += c.min() < args.min_cosine
            results.append(line)
            print(json.dumps(line))
    if args.st_quantized:
        results.append(st_quantized(pathlib.Path(args.dirs[0]), tmp, s1, s2, scores, speed_texts, args))
        print(json.dumps(results[-1]))
    print(json.dumps(results, indent=1))
    return failures


def st_quantized(src, tmp, s1, s2, scores, speed_texts, args):
    """sentence-transformers' own ONNX export of `src`, quantized with its avx2 dynamic int8 config."""
    import shutil

    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

    folder = pathlib.Path(tmp) / f"{src.name}-st"
    shutil.copytree(src, folder, dirs_exist_ok=True)
    model = SentenceTransformer(str(folder), backend="onnx", device="cpu")
    model.save_pretrained(str(folder))
    export_dynamic_quantized_onnx_model(model, "avx2", str(folder))
    quantized = sorted((folder / "onnx").glob("*avx2*.onnx"))[0]
    # Reuse onnx_embeddings: the quantized graph under the path it reads.
    view = pathlib.Path(tmp) / f"{src.name}-st-avx2"
    shutil.copytree(folder, view, dirs_exist_ok=True)
    shutil.copy(quantized, view / "onnx/model.onnx")
    ours = compressor_embed(src, args.data, "sentence1", args.n, args.compressor)
    got = onnx_embeddings(view, s1[: args.n], args.threads)
    c = cosines(got, ours)
    sp = sts_spearman(onnx_embeddings(view, s1, args.threads), onnx_embeddings(view, s2, args.threads), scores)
    return {"model": src.name, "export": "sentence-transformers avx2 dynamic int8", "cos_min": float(c.min()),
            "cos_mean": float(c.mean()), "spearman": sp, "bytes": quantized.stat().st_size,
            "seconds": speed(view, speed_texts, args.threads)}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fixtures")
    f.add_argument("dir")
    f.add_argument("--types", default="f32,auto,int8,int4")
    m = sub.add_parser("model")
    m.add_argument("dirs", nargs="+")
    m.add_argument("--data", required=True)
    m.add_argument("--types", default="f32,int8,int4,auto")
    m.add_argument("--n", type=int, default=256)
    m.add_argument("--threads", type=int, default=2)
    m.add_argument("--speed", type=int, default=512)
    m.add_argument("--min-cosine", type=float, default=0.999)
    m.add_argument("--st-quantized", action="store_true")
    sp = sub.add_parser("speed")
    sp.add_argument("dirs", nargs="+")
    sp.add_argument("--data", required=True)
    sp.add_argument("--speed", type=int, default=512)
    sp.add_argument("--threads", type=int, default=2)
    sp.add_argument("--repeats", type=int, default=5)
    for s in (f, m, sp):
        s.add_argument("--compressor", default=DEFAULT_COMPRESSOR)
    args = p.parse_args()
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}")
    failures = {"fixtures": fixtures, "model": models, "speed": speeds}[args.cmd](args)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
