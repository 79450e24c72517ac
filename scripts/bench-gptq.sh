#!/usr/bin/env bash
# GPTQ against round-to-nearest through blockwise-quant (docs/passes/blockwise-quant.md#gptq-rounding):
# all-MiniLM-L6-v2 (STS-B test Spearman) and the SST-2 classifier (GLUE dev accuracy) at 4 and 3 bits, group 128,
# with nearest rounding, GPTQ without act-order and GPTQ with act-order (the default). One line per run in
# out/bench-gptq/results.tsv (model, bits, rounding, original, compressed, delta, GPTQ / nearest layer error summed
# over the Linears). Needs ../shared and scripts/fetch-minilm.sh.
#   MODELS="minilm sst2" BITS="4 3" ./scripts/bench-gptq.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
bench_setup gptq $'model\tbits\trounding\toriginal\tcompressed\tdelta\tlayer_error_ratio'
for model in ${MODELS:-minilm sst2}; do
  bench_model "$model"
  for bits in ${BITS:-4 3}; do
    for rounding in nearest gptq-plain gptq; do
      case $rounding in
        nearest) keys='rounding = "nearest"' ;;
        gptq-plain) keys='rounding = "gptq"
gptq = { act-order = false }' ;;
        gptq) keys='rounding = "gptq"' ;;
      esac
      name="$model-w$bits-$rounding"
      bench_pipeline "$name" "[[pass]]
kind = \"blockwise-quant\"
bits = $bits
group-size = 128
$keys"
      "$bin" run "$work/$name.toml" --force > "$work/$name.log" 2>&1
      ratio="$(python3 - "$work/$name" <<'PY'
import json, sys
pt = json.load(open(f"{sys.argv[1]}/manifest.json"))["passes"][0]["metrics"]["per_tensor"]
g = sum(e.get("gptq_layer_error", 0) for e in pt.values())
n = sum(e.get("nearest_layer_error", 0) for e in pt.values())
print(f"{g / n:.3f}" if n else "-")
PY
)"
      printf '%s\t%s\t%s\t%s\t%s\n' "$model" "$bits" "$rounding" "$(bench_delta "$work/$name")" "$ratio" >> "$results"
      rm -rf "${work:?}/$name"
    done
  done
done
column -t -s $'\t' "$results"
