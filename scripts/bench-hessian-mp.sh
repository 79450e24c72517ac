#!/usr/bin/env bash
# The hessian-mp comparison of docs/passes/hessian-mp.md on the SST-2 classifier (minilm-l6-sst2): at 3 average bits
# per encoder weight (group 128, 8-bit word and position embeddings), uniform 3 bits vs Hessian mixed precision
# (top-k 2/4 and the exact allocation over {2, 3, 4, 8}) vs the reversed 2/4 assignment (MP-rev); then "2/3 MP"
# (top-k over {2, 3} at 2.5 bits) without and with QAT (QAT_STEPS steps). Sensitivity: cross-entropy on SAMPLES
# SST-2 training sentences, RUNS runs of BATCH sentences, at most ITERS products per run and block (METHOD lanczos
# or power, or hutchinson for the mean Hessian diagonal with ITERS probes); BLOCK=layer (default: one block and width
# per encoder layer, as the paper) or matrix; ROW_GROUPS=128 for the paper's output-row groups instead of group 128
# along the input dimension; QAT_SEED for the fine-tuning's data order. The first pipeline computes the sensitivity,
# the others read it from the statistics cache. TAG=x writes to out/bench-hessian-mp-x/ instead;
# PIPELINES="a b" runs only those. Pipelines and artifacts go to
# out/bench-hessian-mp/; dev accuracy (GLUE SST-2) is in each artifact's eval report and printed by `compressor run`.
# `./scripts/bench-hessian-mp.sh minilm`: all-MiniLM-L6-v2 instead (self-distillation loss on STS-B training
# sentences), exact allocation vs uniform at 4 and at 3 average bits, STS-B test Spearman (needs
# scripts/fetch-minilm.sh). `./scripts/bench-hessian-mp.sh mpnet`: all-mpnet-base-v2 the same way, exact allocation
# vs uniform at 3 bits and "2/3 MP" (PIPELINES=mpnet-mp-2-3-qat adds QAT; needs scripts/fetch-mpnet.sh).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${COMPRESSOR_BIN:-$root/target/release/compressor}"
work="$root/out/bench-hessian-mp${TAG:+-$TAG}"
mkdir -p "$work"
shared="$(cd "$root/../shared" && pwd)"
steps="${QAT_STEPS:-300}" runs="${RUNS:-5}" iters="${ITERS:-20}" batch="${BATCH:-32}" method="${METHOD:-lanczos}"
block="${BLOCK:-layer}" qat_seed="${QAT_SEED:-0}"
if [ -n "${ROW_GROUPS:-}" ]; then groups="row-groups = $ROW_GROUPS"; else groups="group-size = 128"; fi

if [ "${1:-sst2}" = minilm ] || [ "${1:-sst2}" = mpnet ]; then
  model="$root/.cache/models/all-MiniLM-L6-v2" calib="$shared/data/sts-b/train.jsonl" field=sentence1
  [ "$1" = mpnet ] && model="$root/.cache/models/all-mpnet-base-v2"
  samples="${SAMPLES:-512}"
  eval_table="task = \"sts\"
data = \"$shared/data/sts-b/test.jsonl\""
else
  model="$shared/models/minilm-l6-sst2" calib="$shared/data/sst2/train.jsonl" field=sentence
  samples="${SAMPLES:-4096}"
  eval_table="task = \"glue\"
data = \"$shared/data/sst2/dev.jsonl\""
fi

pipeline() { # name bits allocation [average bits] [extra pass lines]
  cat > "$work/$1.toml" <<TOML
[model]
path = "$model"

[calibration]
data = "$calib"
field = "$field"
samples = $samples

[[pass]]
kind = "hessian-mp"
bits = $2
average-bits = ${4:-3.0}
allocation = "$3"
block = "$block"
$groups
embeddings = { word = 8, position = 8 }
sensitivity = { runs = $runs, method = "$method", max-iterations = $iters, batch-size = $batch, seed = 0 }
${5:-}

[output]
dir = "$work/$1"

[[eval]]
$eval_table
TOML
}

run() {
  for name in "$@"; do
    echo "== $name"
    /usr/bin/time -f "$name: %e s wall, %M KiB peak RSS" "$bin" run "$work/$name.toml" --force
  done
}

if [ "${1:-sst2}" = minilm ]; then
  pipeline minilm-mp-4 "[2, 3, 4, 8]" optimal 4.0
  pipeline minilm-uniform-4 "[4]" optimal 4.0
  pipeline minilm-mp-3 "[2, 3, 4, 8]" optimal 3.0
  pipeline minilm-uniform-3 "[3]" optimal 3.0
  run ${PIPELINES:-minilm-mp-4 minilm-uniform-4 minilm-mp-3 minilm-uniform-3}
  exit 0
fi
if [ "${1:-sst2}" = mpnet ]; then
  pipeline mpnet-mp-3 "[2, 3, 4, 8]" optimal 3.0
  pipeline mpnet-uniform-3 "[3]" optimal 3.0
  pipeline mpnet-mp-2-3 "[2, 3]" top-k 2.5
  pipeline mpnet-mp-2-3-qat "[2, 3]" top-k 2.5 "qat = { steps = $steps, lr = 2e-5, batch-size = 32, seed = $qat_seed }"
  run ${PIPELINES:-mpnet-mp-3 mpnet-uniform-3 mpnet-mp-2-3}
  exit 0
fi

pipeline mp-top-k "[2, 4]" top-k
pipeline mp-rev "[2, 4]" reversed
pipeline mp-optimal "[2, 3, 4, 8]" optimal
pipeline uniform-3 "[3]" optimal
# "2/3 MP": the most sensitive half of the blocks at 3 bits, the rest at 2 (about 13x smaller encoder weights),
# without and with quantization-aware fine-tuning.
pipeline mp-2-3 "[2, 3]" top-k 2.5
pipeline mp-2-3-qat "[2, 3]" top-k 2.5 "qat = { steps = $steps, lr = 2e-5, batch-size = 32, seed = $qat_seed }"
# Not run by default (PIPELINES="uniform-3-qat mp-optimal-qat mp-rev-qat"): 3 bits, uniform vs the exact allocation
# vs the reversed assignment, all with QAT.
pipeline uniform-3-qat "[3]" optimal 3.0 "qat = { steps = $steps, lr = 2e-5, batch-size = 32, seed = $qat_seed }"
pipeline mp-optimal-qat "[2, 3, 4, 8]" optimal 3.0 "qat = { steps = $steps, lr = 2e-5, batch-size = 32, seed = $qat_seed }"
pipeline mp-rev-qat "[2, 4]" reversed 3.0 "qat = { steps = $steps, lr = 2e-5, batch-size = 32, seed = $qat_seed }"
run ${PIPELINES:-mp-optimal uniform-3 mp-top-k mp-rev mp-2-3 mp-2-3-qat}
