#!/usr/bin/env bash
# Forward throughput side by side: compressor's runtime (models/benches/forward.rs) against PyTorch + transformers
# (scripts/bench_torch_forward.py) on the same seeded random ids, for each model, text length (16 tokens: short
# sentences; 256: documents), batch (32, 1) and thread count (1, 2). Prints a markdown table with the ratio
# compressor / PyTorch of sentences per second (medians over the timed iterations; each pair runs back to back).
#
#   scripts/bench-forward.sh [MODEL_DIR ...]     # default: .cache/models/all-MiniLM-L6-v2
#   scripts/bench-forward.sh out/sst2-vib-prune:out/sst2-vib-prune-remote   # DIR:TORCH_DIR, a pruned artifact and
#                                                # its `export --format remote-code` (loaded with trust_remote_code)
#
# Environment: PYTHON (with torch and transformers; default python3), SEQS ("16 256"), BATCHES ("32 1"),
# THREADS ("1 2"), TENSOR_OPS=1 to time burn's tensor-op path instead of the host kernels.
# A BERT-base-shaped model of random weights: python scripts/make_random_bert.py .cache/models/bert-base-random
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(.cache/models/all-MiniLM-L6-v2)
extra=()
[ "${TENSOR_OPS:-0}" = 1 ] && extra=(--tensor-ops)
# Built once: the runs below use the binary itself, so that editing the sources meanwhile changes nothing.
cargo bench -p compressor-models --bench forward --no-run
bench=$(cargo bench -p compressor-models --bench forward --no-run --message-format=json 2>/dev/null |
  sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -1)
[ -x "$bench" ] || { echo "error: cannot find the forward bench binary" >&2; exit 1; }

# Timed iterations: enough for a stable median, about 10 s per run at most on 2 cores.
iters() { # tokens-per-batch -> iterations
  local n=$1
  if [ "$n" -le 64 ]; then echo 50; elif [ "$n" -le 1024 ]; then echo 20; elif [ "$n" -le 8192 ]; then echo 5; else echo 3; fi
}

echo "| model | tokens | batch | threads | compressor sent/s | PyTorch sent/s | ratio |"
echo "|---|---:|---:|---:|---:|---:|---:|"
for pair in "${models[@]}"; do
  model=$(cd "${pair%%:*}" && pwd)
  torch_dir=$model
  remote=()
  if [[ $pair == *:* ]]; then
    torch_dir=$(cd "${pair#*:}" && pwd)
    remote=(--trust-remote-code)
  fi
  for seq in ${SEQS:-16 256}; do
    for batch in ${BATCHES:-32 1}; do
      for threads in ${THREADS:-1 2}; do
        n=$(iters $((seq * batch)))
        [ "$(basename "$model")" = bert-base-random ] && n=$(( n > 5 ? n / 2 : 3 ))
        ours=$(RAYON_NUM_THREADS=$threads "$bench" "$model" "$n" --batch "$batch" --seq "$seq" --warmup 1 "${extra[@]}" 2>/dev/null |
          sed -n 's/.* \([0-9.]*\) sentences\/s.*/\1/p')
        theirs=$("$PY" scripts/bench_torch_forward.py --model-dir "$torch_dir" "${remote[@]}" --threads "$threads" \
          --batch "$batch" --seq-len "$seq" --warmup 1 --iters "$n" 2>/dev/null | sed -n 's/^throughput: \([0-9.]*\) sentences.*/\1/p')
        ratio=$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.2fx", a / b }')
        echo "| $(basename "$model") | $seq | $batch | $threads | $ours | $theirs | $ratio |"
      done
    done
  done
done
