#!/usr/bin/env python3
"""PyTorch CPU baseline for the benchmark doc: all-MiniLM-L6-v2 BertModel forward throughput.

Loads the model (float32, eval, transformers' default attention implementation), sets
torch.set_num_threads(N), builds seeded random input ids of shape batch x seq_len (default 32 x 128,
attention mask all ones, token_type_ids 0), runs `--warmup` untimed iterations then `--iters` timed ones
under torch.inference_mode(), and prints model load time, sentences/second, median per-batch latency and
peak RSS (resource.getrusage, ru_maxrss).

Requirements: torch, transformers, safetensors, numpy.

Command, from the repository root (fetch the model first with scripts/fetch-minilm.sh):

    python scripts/bench_torch_forward.py                       # 2 threads, .cache/models/all-MiniLM-L6-v2
    python scripts/bench_torch_forward.py --threads 8 --model-dir path/to/all-MiniLM-L6-v2
    python scripts/bench_torch_forward.py --model-dir out/minilm-p40-remote --trust-remote-code   # a pruned export
"""

import argparse
import os
import platform
import resource
import statistics
import sys
import time

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def peak_rss_mib():
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024  # bytes on macOS, KiB on Linux


def main():
    ap = argparse.ArgumentParser(description="PyTorch CPU forward baseline for all-MiniLM-L6-v2")
    ap.add_argument("--model-dir", default=os.path.join(REPO_ROOT, ".cache", "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="load with AutoModel and trust_remote_code (a `compressor export --format remote-code` folder)",
    )
    args = ap.parse_args()
    if args.iters < 3:
        ap.error("--iters must be >= 3")

    import torch

    torch.set_num_threads(args.threads)
    import transformers
    from transformers import AutoModel, BertModel

    t0 = time.perf_counter()
    if args.trust_remote_code:
        model = AutoModel.from_pretrained(args.model_dir, trust_remote_code=True).float().eval()
    else:
        model = BertModel.from_pretrained(args.model_dir).float().eval()
    load_s = time.perf_counter() - t0

    g = torch.Generator().manual_seed(args.seed)
    vocab = model.config.vocab_size
    # ids in [1000, vocab): ordinary word pieces, no special tokens
    input_ids = torch.randint(1000, vocab, (args.batch, args.seq_len), generator=g, dtype=torch.long)
    attention_mask = torch.ones_like(input_ids)
    token_type_ids = torch.zeros_like(input_ids)

    times = []
    with torch.inference_mode():
        for i in range(args.warmup + args.iters):
            t = time.perf_counter()
            out = model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids)
            _ = out.last_hidden_state.sum().item()
            dt = time.perf_counter() - t
            if i >= args.warmup:
                times.append(dt)

    med = statistics.median(times)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, python {platform.python_version()}, "
          f"{platform.machine()}, attn_implementation={getattr(model.config, '_attn_implementation', '?')}")
    print(f"threads={torch.get_num_threads()} batch={args.batch} seq_len={args.seq_len} "
          f"warmup={args.warmup} iters={args.iters}")
    print(f"model load time: {load_s:.3f} s")
    print(f"per-batch latency: median {med * 1000:.1f} ms (min {min(times) * 1000:.1f}, max {max(times) * 1000:.1f})")
    print(f"throughput: {args.batch / med:.1f} sentences/s (median), {args.batch * len(times) / sum(times):.1f} (mean)")
    print(f"peak RSS: {peak_rss_mib():.1f} MiB")


if __name__ == "__main__":
    main()
