#!/usr/bin/env bash
# The all-mpnet-base-v2 figures of the pass docs (issue 17): STS-B test Spearman, bytes, wall time and peak RSS of
# blockwise-quant (W4 group 128, data-free; BCT: 4-bit weights and embeddings, 8-bit activations in blocks of 16),
# vocab-trim (the MiniLM recipe's corpus) and prune (25% of the encoder's parameters, heads + neurons, per-layer,
# activation and magnitude importance), 256 Wikipedia paragraphs of 128 tokens where a pass calibrates. Hessian
# mixed precision on this model: `./scripts/bench-hessian-mp.sh mpnet`. Pipelines and artifacts go to
# out/bench-mpnet/; one TSV line per run in out/bench-mpnet/results.tsv. Needs ../shared and scripts/fetch-mpnet.sh.
#   PIPELINES="w4 bct vocab-trim prune-activation prune-magnitude" ./scripts/bench-mpnet.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
"$root/scripts/fetch-mpnet.sh"
bench_setup mpnet $'pipeline\tbaseline\tscore\tdelta\tbytes\twall_s\tpeak_rss_kib'
bench_model mpnet

pipeline() { # name
  case $1 in
    w4) bench_pipeline w4 "[[pass]]
kind = \"blockwise-quant\"
bits = 4
group-size = 128" ;;
    bct) bench_pipeline bct "[[pass]]
kind = \"blockwise-quant\"
bits = 4
group-size = 128
embeddings = { word = 4, position = 4 }
activations = { bits = 8, block-size = 16 }" ;;
    vocab-trim) bench_pipeline vocab-trim "[[pass]]
kind = \"vocab-trim\"
corpus = [
  \"$shared/data/calibration-wiki/en.jsonl\",
  { path = \"$shared/data/sts-b/train.jsonl\", field = [\"sentence1\", \"sentence2\"] },
  { path = \"$shared/data/sst2/train.jsonl\", field = \"sentence\" },
]
min-frequency = 2
keep-alphabet = true" ;;
    prune-activation | prune-magnitude) bench_pipeline "$1" "[[pass]]
kind = \"prune\"
target = 0.25
structures = [\"heads\", \"neurons\"]
importance = \"${1#prune-}\"
allocation = \"per-layer\"" ;;
    *) echo "unknown pipeline $1" >&2; return 1 ;;
  esac
}

for name in ${PIPELINES:-w4 bct vocab-trim prune-activation prune-magnitude}; do
  pipeline "$name"
  echo "== $name" >&2
  start=$(date +%s.%N)
  if ! /usr/bin/time -f "%M" -o "$work/$name.rss" "$bin" run "$work/$name.toml" --force > "$work/$name.log" 2>&1; then
    printf '%s\tERROR\n' "$name" >> "$results"
    tail -3 "$work/$name.log" >&2
    continue
  fi
  wall=$(awk -v s="$start" -v e="$(date +%s.%N)" 'BEGIN { printf "%.1f", e - s }')
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$(bench_delta "$work/$name")" \
    "$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["models"][1]["size_bytes"])' "$work/$name/report.json")" \
    "$wall" "$(tail -1 "$work/$name.rss")" >> "$results"
  tail -1 "$results" >&2
done
column -t -s $'\t' "$results"
