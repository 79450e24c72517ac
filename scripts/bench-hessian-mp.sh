#!/usr/bin/env bash
# The hessian-mp comparison of docs/passes/hessian-mp.md on the SST-2 classifier (minilm-l6-sst2): at 3 average bits
# per encoder weight (group 128, 8-bit word and position embeddings), uniform 3 bits vs Hessian mixed precision
# (top-k 2/4 and the exact allocation over {2, 3, 4, 8}) vs the reversed 2/4 assignment (MP-rev). Sensitivity:
# cross-entropy on SST-2 training sentences, RUNS runs of BATCH sentences, at most ITERS power iterations; the first
# pipeline computes it, the others read it from the statistics cache. Pipelines and artifacts go to
# out/bench-hessian-mp/; dev accuracy (GLUE SST-2) is in each artifact's eval report and printed by `compressor run`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${COMPRESSOR_BIN:-$root/target/release/compressor}"
work="$root/out/bench-hessian-mp"
mkdir -p "$work"
shared="$(cd "$root/../shared" && pwd)"
runs="${RUNS:-2}" iters="${ITERS:-6}" batch="${BATCH:-16}"

pipeline() { # name bits allocation
  cat > "$work/$1.toml" <<TOML
[model]
path = "$shared/models/minilm-l6-sst2"

[calibration]
data = "$shared/data/sst2/train.jsonl"
field = "sentence"
samples = 512

[[pass]]
kind = "hessian-mp"
bits = $2
average-bits = 3.0
allocation = "$3"
group-size = 128
embeddings = { word = 8, position = 8 }
sensitivity = { runs = $runs, max-iterations = $iters, batch-size = $batch, seed = 0 }

[output]
dir = "$work/$1"

[[eval]]
task = "glue"
data = "$shared/data/sst2/dev.jsonl"
TOML
}

pipeline mp-top-k "[2, 4]" top-k
pipeline mp-rev "[2, 4]" reversed
pipeline mp-optimal "[2, 3, 4, 8]" optimal
pipeline uniform-3 "[3]" optimal
for name in mp-top-k mp-rev mp-optimal uniform-3; do
  echo "== $name"
  /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS" "$bin" run "$work/$name.toml" --force
done
