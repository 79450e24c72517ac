#!/usr/bin/env bash
# The qa-svd figures of docs/passes/qa-svd.md: all-MiniLM-L6-v2 (STS-B test Spearman) and the SST-2 classifier
# fine-tuned from it (GLUE dev accuracy) at pruning rates 0 / 0.15 / 0.25 / 0.35, in float and with 4-bit weights
# (blockwise-quant after qa-svd, group 32: it divides every cut width), and next to them the `prune` baseline
# (heads + neurons, per-layer, magnitude and activation) at the fraction of encoder parameters qa-svd removed.
# Calibration: 256 Wikipedia paragraphs (MiniLM) or 256 SST-2 training sentences (classifier), 128 tokens.
# One TSV line per run goes to out/bench-qa-svd/results.tsv; settings already there are skipped (resumable).
#   MODELS="minilm sst2" RATES="0 0.15 0.25 0.35" QUANT="float w4" BASELINES=1 ./scripts/bench-qa-svd.sh
# QA_SVD="head-multiple = 4" adds keys to the qa-svd pass (and TAG=... names the variant in results.tsv);
# KEEP=1 keeps the artifacts.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
bench_setup qa-svd $'model\tmethod\trate\tquant\tremoved\tbaseline\tscore\tdelta\tbytes\tseconds'

# run NAME PASSES: writes the pipeline, runs it, appends the result line.
run() {
  local name="$1" passes="$2" method="$3" rate="$4" quant="$5"
  local key
  key="$(printf '%s\t%s\t%s\t%s\t' "$model" "$method" "$rate" "$quant")"
  if grep -qF "$key" "$results"; then return; fi
  bench_pipeline "$name" "$passes"
  local start=$SECONDS
  if ! "$bin" run "$work/$name.toml" --force > "$work/$name.log" 2>&1; then
    printf '%sERROR\n' "$key" >> "$results"; return
  fi
  local removed bytes
  read -r removed bytes < <(python3 - "$work/$name" <<'PY'
import json, sys
m = json.load(open(f"{sys.argv[1]}/manifest.json"))
removed = next((p["metrics"]["encoder_fraction_removed"] for p in m["passes"] if "encoder_fraction_removed" in p["metrics"]), 0.0)
print(f"{removed:.4f} {m['output']['tensor_bytes']}")
PY
)
  printf '%s%s\t%s\t%s\t%s\n' "$key" "$removed" "$(bench_delta "$work/$name")" "$bytes" \
    "$((SECONDS - start))" >> "$results"
  [ -n "${KEEP:-}" ] || rm -rf "${work:?}/$name"
}

for model in ${MODELS:-minilm sst2}; do
  bench_model "$model"
  for rate in ${RATES:-0 0.15 0.25 0.35}; do
    for quant in ${QUANT:-float w4}; do
      q=""
      if [ "$quant" = w4 ]; then
        q='[[pass]]
kind = "blockwise-quant"
bits = 4
group-size = 32'
      fi
      run "$model-qa-svd${TAG:+-$TAG}-$rate-$quant" "[[pass]]
kind = \"qa-svd\"
rate = $rate
${QA_SVD:-}

$q" "qa-svd${TAG:+-$TAG}" "$rate" "$quant"
    done
    # The prune baseline at the fraction qa-svd removed (float).
    if [ "${BASELINES:-1}" = 1 ] && [ "$rate" != 0 ]; then
      removed="$(grep -F "$(printf '%s\tqa-svd%s\t%s\tfloat\t' "$model" "${TAG:+-$TAG}" "$rate")" "$results" | cut -f5 | head -1)"
      [ -n "$removed" ] && [ "$removed" != ERROR ] || continue
      for importance in magnitude activation; do
        run "$model-prune-$rate-$importance" "[[pass]]
kind = \"prune\"
target = $removed
structures = [\"heads\", \"neurons\"]
allocation = \"per-layer\"
importance = \"$importance\"" "prune-$importance" "$rate" float
      done
    fi
  done
done
column -t -s $'\t' "$results"
