#!/usr/bin/env bash
# The vib-prune figures of docs/passes/vib-prune.md: the SST-2 and MRPC classifiers fine-tuned from all-MiniLM-L6-v2
# (GLUE dev accuracy; the compressed model's other metrics, F1 for MRPC, in the last column; masks trained on their training sentences or pairs)
# and all-MiniLM-L6-v2 (STS-B test Spearman; distillation on Wikipedia paragraphs) with 30 / 50 / 70% of the
# encoder's parameters removed, per VTrans variant, next to the `prune` baseline (heads + neurons, per-layer, activation and magnitude importance) at the same targets.
# $SAMPLES calibration records (default 2048), 128 tokens, 3 epochs of batches of 32 unless EPOCHS is set.
# Pipelines, logs and artifacts go to out/bench-vib-prune/ (artifacts are removed after their evaluation); one TSV
# line per run is appended to out/bench-vib-prune/results.tsv, with the wall time of the whole run. Settings already
# in results.tsv are skipped, so an interrupted sweep resumes. Mask training is cached: COMPRESSOR_CACHE decides
# where (set a fresh one for honest wall times). KEEP=1 keeps the artifacts (for scripts/bench-forward.sh).
#   MODELS="sst2 mrpc minilm" TARGETS="0.3 0.5 0.7" METHODS="faster fast full prune-activation prune-magnitude" \
#     ./scripts/bench-vib-prune.sh
# A method VARIANT:key=value;key=value adds vib-prune settings (METHODS='faster:kl-factor=1e-3;steps=400').
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SAMPLES="${SAMPLES:-2048}"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
bench_setup vib-prune $'model\ttarget\tmethod\tremoved\tbaseline\tscore\tdelta\tbytes\tseconds\talso'

for model in ${MODELS:-sst2 minilm}; do
  bench_model "$model"
  for target in ${TARGETS:-0.3 0.5 0.7}; do
    for method in ${METHODS:-faster prune-activation prune-magnitude}; do
      name="$model-$target-${method//[^a-zA-Z0-9.-]/_}"
      key="$(printf '%s\t%s\t%s\t' "$model" "$target" "$method")"
      if grep -qF "$key" "$results" && ! grep -F "$key" "$results" | grep -q ERROR; then
        continue  # measured already (delete the line or results.tsv to measure again)
      fi
      case $method in
        prune-*) passes="[[pass]]
kind = \"prune\"
target = $target
structures = [\"heads\", \"neurons\"]
allocation = \"per-layer\"
importance = \"${method#prune-}\"" ;;
        *) # VARIANT or VARIANT:key=value;key=value (extra vib-prune settings, TOML values)
          extra=""
          if [[ $method == *:* ]]; then
            extra="$(tr ';' '\n' <<< "${method#*:}" | sed 's/=/ = /')"
          fi
          passes="[[pass]]
kind = \"vib-prune\"
target = $target
variant = \"${method%%:*}\"
epochs = ${EPOCHS:-3}
$extra" ;;
      esac
      bench_pipeline "$name" "$passes"
      echo "== $name" >&2
      start=$(date +%s.%N)
      if ! "$bin" run "$work/$name.toml" --force > "$work/$name.log" 2>&1; then
        printf '%s\t%s\t%s\tERROR\n' "$model" "$target" "$method" >> "$results"
        tail -3 "$work/$name.log" >&2
        continue
      fi
      seconds=$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$start" "$(date +%s.%N)")
      python3 - "$work/$name" "$model" "$target" "$method" "$seconds" >> "$results" <<'PY'
import json, sys
d, model, target, method, seconds = sys.argv[1:]
m = json.load(open(f"{d}/manifest.json"))
r = json.load(open(f"{d}/report.json"))
p = m["passes"][0]
removed = p["metrics"]["encoder_fraction_removed"]
delta = r["deltas"][0]
size = r["models"][1]["size_bytes"]
print("\t".join([model, target, method, f"{removed:.4f}", f"{100 * delta['baseline']:.2f}",
                 f"{100 * delta['compressed']:.2f}", f"{100 * delta['delta']:+.2f}", str(size), seconds,
                 " ".join(f"{k} {100 * v:.2f}" for res in r["results"] if res["model"] == r["models"][1]["label"]
                          for k, v in sorted(res["result"]["metrics"].items()) if k in ("f1", "mcc"))]))
PY
      tail -1 "$results" >&2
      [ "${KEEP:-0}" = 1 ] || rm -rf "$work/$name"
    done
  done
done
column -t -s $'\t' "$results" 2>/dev/null || cat "$results"
