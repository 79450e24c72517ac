#!/usr/bin/env bash
# The vib-prune GPU figures, run on the lent device machine from the folder scripts/stage-device-vib-prune.sh
# prepared here (.devcarry/, git-ignored). Run from the repository root there:
#   .devcarry/d/run.sh                                   # unpack the CUDA binary, join the carried model parts
#   BUDGET=540 .devcarry/d/run.sh sst2 "0.3 0.5 0.7" 'full:device="cuda" fast:device="cuda"'
# MODELS TARGETS METHODS as in scripts/bench-vib-prune.sh, which it runs with COMPRESSOR_BIN set to the CUDA binary
# and SHARED to the carried copy of ../shared. BUDGET (seconds, default 560) stops the sweep inside one call's
# limit; a sweep cut short resumes at the next call, since results.tsv and the kernel cache stay on the machine
# while it is held. results.tsv and the logs' ends are copied to $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
dc=.devcarry
if [ ! -x $dc/bin/compressor ]; then
  xz -dc $dc/bin/compressor.xz > $dc/bin/compressor.partial && chmod +x $dc/bin/compressor.partial &&
    mv $dc/bin/compressor.partial $dc/bin/compressor
fi
for d in $dc/d/models/*/; do
  m=$(basename "$d")
  [ -f "$d/model.safetensors" ] && continue
  parts=$(ls $dc/c*/"$m".part-* 2>/dev/null | sort -t- -k2)
  if [ "$(echo "$parts" | wc -w)" != "$(cat "$d/parts")" ]; then
    echo "$m: $(echo "$parts" | wc -w) of $(cat "$d/parts") parts here so far"
    continue
  fi
  # shellcheck disable=SC2086
  cat $parts > "$d/model.partial"
  if [ "$(sha256sum "$d/model.partial" | cut -d' ' -f1)" = "$(cat "$d/model.sha256")" ]; then
    mv "$d/model.partial" "$d/model.safetensors" && echo "$m: model.safetensors joined"
  else
    rm "$d/model.partial" && echo "$m: sha256 mismatch of the joined parts" >&2
  fi
done
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null || echo "no GPU seen (nvidia-smi)"
[ -n "${1:-}" ] || exit 0
export SHARED=$dc/d COMPRESSOR_BIN=$PWD/$dc/bin/compressor COMPRESSOR_CACHE=/tmp/compressor-cache
MODELS="$1" TARGETS="$2" METHODS="$3" timeout "${BUDGET:-560}" ./scripts/bench-vib-prune.sh
rc=$?
if [ -n "${OUT:-}" ]; then
  cp out/bench-vib-prune/results.tsv "$OUT/" 2>/dev/null
  tail -c 300000 -q out/bench-vib-prune/*.log > "$OUT/logs.txt" 2>/dev/null
fi
exit $rc
