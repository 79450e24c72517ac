#!/usr/bin/env python3
"""The peer of `compressor run examples/minilm-w4-sts.toml` (without its evaluation) in llm-compressor: load
all-MiniLM-L6-v2, quantize every encoder Linear to W4A16 (4-bit symmetric, groups of 128, round-to-nearest: no
calibration data), save compressed-tensors, and report the time of each step. With --compare DIR it also checks the
packed words and scales against a compressor artifact of the same setting.

  python scripts/bench_llmcompressor.py MODEL_DIR OUT_DIR [--threads 2] [--compare ARTIFACT]

Needs llm-compressor (e.g. 0.14, which pins transformers <= 5.17; install it in its own venv).
"""

import argparse
import json
import time

t_start = time.perf_counter()
import torch  # noqa: E402
from transformers import AutoModel  # noqa: E402
from llmcompressor import oneshot  # noqa: E402
from llmcompressor.modifiers.quantization import QuantizationModifier  # noqa: E402

t_imported = time.perf_counter()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("out")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compare")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    model = AutoModel.from_pretrained(args.model, torch_dtype=torch.float32)
    t1 = time.perf_counter()
    recipe = QuantizationModifier(targets="Linear", scheme="W4A16", ignore=["pooler.dense"])
    oneshot(model=model, recipe=recipe)
    t2 = time.perf_counter()
    model.save_pretrained(args.out, save_compressed=True)
    t3 = time.perf_counter()
    result = {
        "import_s": round(t_imported - t_start, 2),
        "load_s": round(t1 - t0, 2),
        "quantize_s": round(t2 - t1, 2),
        "save_s": round(t3 - t2, 2),
        "load_quantize_save_s": round(t3 - t0, 2),
        "threads": args.threads,
    }
    if args.compare:
        from safetensors.torch import load_file

        theirs = load_file(f"{args.out}/model.safetensors")
        ours = load_file(f"{args.compare}/model.safetensors")
        packed = [k for k in theirs if k.endswith("weight_packed")]
        words = mismatched = 0
        scale_diff = 0.0
        for k in packed:
            a, b = theirs[k], ours[k.removeprefix("bert.")] if k.removeprefix("bert.") in ours else ours[k]
            words += a.numel()
            mismatched += int((a != b).sum())
            s = k.replace("weight_packed", "weight_scale")
            sa, sb = theirs[s].float(), ours[s.removeprefix("bert.")].float()
            scale_diff = max(scale_diff, float(((sa - sb).abs() / sa.abs().clamp(min=1e-30)).max()))
        result["compared_tensors"] = len(packed)
        result["packed_words"] = words
        result["mismatched_words"] = mismatched
        result["max_relative_scale_diff"] = scale_diff
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
