#!/usr/bin/env bash
# The fisher-prune figures of docs/passes/fisher-prune.md: all-MiniLM-L6-v2 with 50% of its FFN weights set to zero
# by magnitude, general-only Fisher, domain-only Fisher and GAPrune, unstructured and 2:4, each evaluated on BBC
# retrieval (headline -> article, the first 400 rows of bbc-news; the domain triplets skip them) and STS-B test.
# Pipelines, logs and artifacts go to out/bench-fisher-prune/; the gradients are cached in its cache/ (the first
# run that needs them sweeps both triplet sets and prints the sweep's wall time). Needs ../shared and
# scripts/fetch-minilm.sh.
#   SCORES="magnitude fisher-general fisher-domain gaprune" PATTERNS="unstructured 2:4" TRIPLETS=128 \
#     ./scripts/bench-fisher-prune.sh
# ALLOCATION=per-layer (or per-tensor) sets the unstructured allocation (default: the pass's, global); the runs are
# then named with it.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${COMPRESSOR_BIN:-$root/target/release/compressor}"
work="$root/out/bench-fisher-prune"
mkdir -p "$work"
shared="$(cd "$root/../shared" && pwd)"
export COMPRESSOR_CACHE="$work/cache"
triplets="${TRIPLETS:-128}"

pipeline() { # NAME SCORE PATTERN
  local target="target = 0.5"
  [ "$3" = "2:4" ] && target=""
  [ "$3" != "2:4" ] && [ -n "${ALLOCATION:-}" ] && target="$target
allocation = \"$ALLOCATION\""
  cat > "$work/$1.toml" <<EOT
[model]
path = "$root/.cache/models/all-MiniLM-L6-v2"
[[pass]]
kind = "fisher-prune"
$target
pattern = "$3"
score = "$2"
triplets = $triplets
micro-batch = 8
max-length = 128
[pass.general]
data = "$shared/data/calibration-wiki/en.jsonl"
format = "paragraphs"
[pass.domain]
data = "$shared/data/bbc-news/all.jsonl"
format = "pairs"
skip = 400
[output]
dir = "$work/out-$1"
[[eval]]
task = "retrieval"
name = "bbc-retrieval"
data = "$shared/data/bbc-news/all.jsonl"
limit = 400
[[eval]]
task = "sts"
data = "$shared/data/sts-b/test.jsonl"
EOT
}

pipeline sweep gaprune unstructured
start=$(date +%s.%N)
"$bin" plan "$work/sweep.toml" > "$work/sweep.log"
echo "gradient sweep (both sets, ${triplets} triplets each; 0 if cached): $(echo "$(date +%s.%N) - $start" | bc) s"
for pattern in ${PATTERNS:-unstructured 2:4}; do
  for score in ${SCORES:-magnitude fisher-general fisher-domain gaprune}; do
    name="$score-${pattern/:/-}${ALLOCATION:+-$ALLOCATION}"
    pipeline "$name" "$score" "$pattern"
    "$bin" run --force "$work/$name.toml" > "$work/$name.log" 2>&1
    echo "$name: $(grep -E 'ndcg_at_10|spearman' "$work/$name.log" | tr -s ' ' | tr '\n' ';')"
    rm -rf "$work/out-$name"
  done
done
