#!/usr/bin/env bash
# Sparse weights with quantized values (docs/passes/fisher-prune.md#with-quantization): all-MiniLM-L6-v2 with 50% of
# its FFN weights pruned by magnitude (fisher-prune, unstructured or 2:4), then blockwise-quant at 4 bits, group 128
# (round-to-nearest or GPTQ, which keeps the mask), against each pass alone. One line per run in
# out/bench-sparse-quant/results.tsv: run, STS-B test Spearman x100 (original, compressed, delta), bytes of the 12
# FFN weight tensors and of the whole model as written. Needs ../shared and scripts/fetch-minilm.sh.
#   RUNS="prune quant prune+quant prune+gptq 2:4+quant 2:4+gptq" ./scripts/bench-sparse-quant.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
bench_setup sparse-quant $'run\toriginal\tcompressed\tdelta\tffn_bytes\tmodel_bytes'
bench_model minilm
prune() { # PATTERN
  local target="target = 0.5"
  [ "$1" = "2:4" ] && target=""
  printf '[[pass]]\nkind = "fisher-prune"\npattern = "%s"\n%s\nscore = "magnitude"\n\n' "$1" "$target"
}
quant() { # ROUNDING
  printf '[[pass]]\nkind = "blockwise-quant"\nbits = 4\ngroup-size = 128\nrounding = "%s"\n\n' "$1"
}
nl=$'\n\n'
for run in ${RUNS:-prune quant prune+quant prune+gptq 2:4+quant 2:4+gptq}; do
  case $run in
    prune) passes="$(prune unstructured)" ;;
    quant) passes="$(quant nearest)" ;;
    prune+quant) passes="$(prune unstructured)$nl$(quant nearest)" ;;
    prune+gptq) passes="$(prune unstructured)$nl$(quant gptq)" ;;
    2:4+quant) passes="$(prune 2:4)$nl$(quant nearest)" ;;
    2:4+gptq) passes="$(prune 2:4)$nl$(quant gptq)" ;;
    *) echo "unknown run $run" >&2; exit 2 ;;
  esac
  name="${run//[:+]/-}"
  bench_pipeline "$name" "$passes"
  "$bin" run "$work/$name.toml" --force > "$work/$name.log" 2>&1
  bytes="$("$bin" inspect "$work/$name" --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
ffn = sum(t["bytes"] for t in d["tensors"] if t["role"].startswith("ffn.") and t["kind"] == "weight")
total = d["total_bytes"]
print(f"{ffn}\t{total}")')"
  printf '%s\t%s\t%s\n' "$run" "$(bench_delta "$work/$name")" "$bytes" >> "$results"
  rm -rf "${work:?}/$name"
done
column -t -s $'\t' "$results"
