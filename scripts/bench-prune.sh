#!/usr/bin/env bash
# The prune figures of docs/passes/prune.md: all-MiniLM-L6-v2 (STS-B test Spearman) and the SST-2 classifier
# fine-tuned from it (GLUE dev accuracy) with 10 / 25 / 40% of the encoder's parameters removed: heads only, FFN
# neurons only, and both; uniform vs per-layer allocation; magnitude vs activation importance (256 Wikipedia
# paragraphs for MiniLM, 256 SST-2 training sentences for the classifier, 128 tokens). Pipelines and artifacts go to
# out/bench-prune/ (each artifact is removed after its evaluation); one TSV line per run is appended to
# out/bench-prune/results.tsv. Needs ../shared and scripts/fetch-minilm.sh.
# Settings already in results.tsv are skipped, so an interrupted sweep resumes.
#   MODELS="minilm sst2" TARGETS="0.1 0.25 0.4" STRUCTURES="heads neurons heads,neurons" \
#     ALLOCATIONS="uniform per-layer" IMPORTANCES="magnitude activation" ./scripts/bench-prune.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
bench_setup prune $'model\ttarget\tstructures\tallocation\timportance\tremoved\tbaseline\tscore\tdelta\tbytes'

for model in ${MODELS:-minilm sst2}; do
  bench_model "$model"
  for target in ${TARGETS:-0.1 0.25 0.4}; do
    for structures in ${STRUCTURES:-heads neurons heads,neurons}; do
      for allocation in ${ALLOCATIONS:-uniform per-layer}; do
        for importance in ${IMPORTANCES:-magnitude activation}; do
          name="$model-$target-${structures//,/+}-$allocation-$importance"
          key="$(printf '%s\t%s\t%s\t%s\t%s\t' "$model" "$target" "$structures" "$allocation" "$importance")"
          if grep -qF "$key" "$results" && ! grep -F "$key" "$results" | grep -q ERROR; then
            continue  # measured already (delete the line or results.tsv to measure again)
          fi
          list="[\"${structures//,/\", \"}\"]"
          bench_pipeline "$name" "[[pass]]
kind = \"prune\"
target = $target
structures = $list
allocation = \"$allocation\"
importance = \"$importance\""
          echo "== $name" >&2
          if ! "$bin" run "$work/$name.toml" --force > "$work/$name.log" 2>&1; then
            printf '%s\t%s\t%s\t%s\t%s\tERROR\n' "$model" "$target" "$structures" "$allocation" "$importance" >> "$results"
            tail -3 "$work/$name.log" >&2
            continue
          fi
          python3 - "$work/$name" "$model" "$target" "$structures" "$allocation" "$importance" >> "$results" <<'PY'
import json, sys
d, model, target, structures, allocation, importance = sys.argv[1:]
m = json.load(open(f"{d}/manifest.json"))
r = json.load(open(f"{d}/report.json"))
prune = next(p for p in m["passes"] if p["kind"] == "prune")
removed = prune["metrics"]["encoder_fraction_removed"]
delta = r["deltas"][0]
size = r["models"][1]["size_bytes"]
print("\t".join([model, target, structures, allocation, importance, f"{removed:.4f}",
                 f"{100 * delta['baseline']:.2f}", f"{100 * delta['compressed']:.2f}", f"{100 * delta['delta']:+.2f}", str(size)]))
PY
          tail -1 "$results" >&2
          rm -rf "$work/$name"
        done
      done
    done
  done
done
column -t -s $'\t' "$results"
# The same as Markdown tables (docs/passes/prune.md): one per model, a column per target.
python3 - "$results" <<'PY'
import collections, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])][1:]
by_model = collections.defaultdict(dict)
targets = sorted({r[1] for r in rows}, key=float)
for r in rows:
    if len(r) < 10:
        continue
    by_model[r[0]][(r[2], r[3], r[4], r[1])] = r
for model, cells in by_model.items():
    base = next(iter(cells.values()))[6]
    print(f"\n{model} (unpruned {base})\n")
    print("| structures | allocation | importance | " + " | ".join(f"{float(t):.0%} removed" for t in targets) + " |")
    print("|---|---|---|" + "---:|" * len(targets))
    for key in sorted({k[:3] for k in cells}):
        out = []
        for t in targets:
            r = cells.get(key + (t,))
            out.append(f"{r[7]} ({r[8]})" if r else "")
        print(f"| {key[0].replace(',', ' + ')} | {key[1]} | {key[2]} | " + " | ".join(out) + " |")
PY
