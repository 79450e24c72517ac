#!/usr/bin/env bash
# The physical floor of a data-free quantization run, next to the run itself: reading the input checkpoint once
# (page cache warm, as for the run) plus writing the output's bytes once with fsync, against
# `compressor quantize MODEL --bits 4 --group-size 128` end to end. Three rounds, taken in turn; prints each figure
# and the ratio of the medians.
#
#   scripts/bench-floor.sh [MODEL_DIR]      # default: .cache/models/all-MiniLM-L6-v2; needs a release build
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
model=${1:-.cache/models/all-MiniLM-L6-v2}
bin=./target/release/compressor
[ -x "$bin" ] || { echo "error: build first: cargo build --release" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
now() { date +%s.%N; }
"$bin" quantize "$model" --bits 4 --group-size 128 --output "$out/w4" --force >/dev/null 2>&1
out_bytes=$(stat -c %s "$out/w4/model.safetensors")
floors=() runs=()
for round in 1 2 3; do
  t0=$(now)
  cat "$model"/*.safetensors >/dev/null
  head -c "$out_bytes" /dev/zero | dd of="$out/floor.bin" bs=8M conv=fsync status=none
  t1=$(now)
  "$bin" quantize "$model" --bits 4 --group-size 128 --output "$out/w4" --force >/dev/null 2>&1
  t2=$(now)
  floors+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }')")
  runs+=("$(awk -v a="$t1" -v b="$t2" 'BEGIN { print b - a }')")
done
median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
in_bytes=$(cat "$model"/*.safetensors | wc -c)
printf 'input %d bytes, output model.safetensors %d bytes\n' "$in_bytes" "$out_bytes"
printf 'floor (read input + write output, fsync): %s s\n' "$(printf '%.3f ' "${floors[@]}")"
printf 'compressor quantize W4 g128:             %s s\n' "$(printf '%.3f ' "${runs[@]}")"
awk -v r="$(median "${runs[@]}")" -v f="$(median "${floors[@]}")" \
  'BEGIN { printf "median: run %.3f s, floor %.3f s, run / floor %.2fx\n", r, f, r / f }'
