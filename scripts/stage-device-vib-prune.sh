#!/usr/bin/env bash
# Stages the vib-prune GPU sweep for the lent device machine (which has no Rust toolchain, no ../shared and takes
# 64 MiB per call): builds the CUDA binary here and packs .devcarry/ (git-ignored):
#   bin/compressor.xz   the `--features cuda` release binary (64 MB, 10 MB packed; it runs CPU work too)
#   d/                  the SST-2 and MRPC data and classifiers from ../shared (configs, tokenizers, the sha256 of
#                       each model.safetensors)
#   c1 .. c4            each classifier's model.safetensors in two parts, one folder a call
# Then, call by call within the held machine's warm time (30 s), carry [".devcarry/bin", ".devcarry/d",
# ".devcarry/c1"], then [".devcarry/c2"], ... : what an earlier call brought stays there.
# scripts/device-vib-prune.sh joins a model there once all its parts have come, and runs the sweep.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
shared="$(cd "${SHARED:-$root/../shared}" && pwd)"
cd "$root"
cargo build --release -p compressor --features cuda
dc=.devcarry
rm -rf $dc/bin $dc/d $dc/c[0-9]*
mkdir -p $dc/bin $dc/d/data
xz -T2 -6 -c target/release/compressor > $dc/bin/compressor.xz
cp -r "$shared/data/sst2" "$shared/data/mrpc" $dc/d/data/
n=0
for m in minilm-l6-sst2 minilm-l6-mrpc; do
  d=$dc/d/models/$m
  mkdir -p "$d"
  for f in config.json special_tokens_map.json tokenizer.json tokenizer_config.json vocab.txt; do
    cp "$shared/models/$m/$f" "$d/"
  done
  sha256sum "$shared/models/$m/model.safetensors" | cut -d' ' -f1 > "$d/model.sha256"
  mkdir -p $dc/c$((n + 1)) $dc/c$((n + 2))
  split -b 45500000 -a 1 "$shared/models/$m/model.safetensors" "$dc/c$((n + 1))/$m.part-"
  mv "$dc/c$((n + 1))/$m.part-b" "$dc/c$((n + 2))/"
  n=$((n + 2))
done
du -sh $dc/bin $dc/d $dc/c[0-9]* >&2
