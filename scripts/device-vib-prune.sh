#!/usr/bin/env bash
# The vib-prune GPU figures, run on the lent device machine (the repository travels there) with the folder
# scripts/stage-device-vib-prune.sh prepared here (.devcarry/, git-ignored, carried):
#   ./scripts/device-vib-prune.sh                        # unpack the CUDA binary, join the carried model parts
#   BUDGET=540 ./scripts/device-vib-prune.sh sst2 "0.3 0.5 0.7" 'full:device="cuda" fast:device="cuda"'
# MODELS TARGETS METHODS as in scripts/bench-vib-prune.sh, which it runs with COMPRESSOR_BIN set to the CUDA binary
# and SHARED to the carried copy of ../shared. BUDGET (seconds, default 560) stops the sweep inside one call's
# limit; a sweep cut short resumes at the next call, since results.tsv and the kernel cache stay on the machine
# while it is held. results.tsv and the logs' ends are copied to $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
dc=.devcarry
if [ ! -x $dc/bin/compressor ]; then
  xz -dc $dc/bin/compressor.xz > $dc/bin/compressor.partial && chmod +x $dc/bin/compressor.partial &&
    mv $dc/bin/compressor.partial $dc/bin/compressor
fi
for d in $dc/d/models/*/; do
  m=$(basename "$d")
  [ -f "$d/model.safetensors" ] && continue
  parts=$(ls $dc/c*/"$m".part-* 2>/dev/null | sort -t- -k2)
  # shellcheck disable=SC2086
  [ -n "$parts" ] && cat $parts > "$d/model.partial"
  if [ -n "$parts" ] && [ "$(sha256sum "$d/model.partial" | cut -d' ' -f1)" = "$(cat "$d/model.sha256")" ]; then
    mv "$d/model.partial" "$d/model.safetensors" && echo "$m: model.safetensors joined"
  else
    rm -f "$d/model.partial" && echo "$m: $(echo "$parts" | wc -w) part(s) here, not the whole model yet"
  fi
done
nvidia-smi --query-gpu=name,memory.used --format=csv,noheader 2>/dev/null || echo "no GPU seen (nvidia-smi)"
[ -n "${1:-}" ] || exit 0
export SHARED=$dc/d COMPRESSOR_BIN=$PWD/$dc/bin/compressor COMPRESSOR_CACHE=$PWD/out/device-cache
MODELS="$1" TARGETS="$2" METHODS="$3" timeout "${BUDGET:-560}" ./scripts/bench-vib-prune.sh
rc=$?
if [ -n "${OUT:-}" ]; then
  cp out/bench-vib-prune/results.tsv "$OUT/" 2>/dev/null
  tail -c 300000 -q out/bench-vib-prune/*.log > "$OUT/logs.txt" 2>/dev/null
fi
exit $rc
