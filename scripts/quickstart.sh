#!/usr/bin/env bash
# The main job: fetch all-MiniLM-L6-v2 (first use only), build compressor, compress the model with the embedder
# recipe (examples/minilm-embedder.toml: 4-bit weights and embeddings, STS-B test measured before and after), and
# end with the run's summary: size before -> after, STS-B before -> after, wall time, where the output is and what
# loads it. The build uses the test command's feature set, so `./scripts/test.sh` afterwards reuses it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-minilm.sh
if [ ! -f ../shared/data/sts-b/test.jsonl ]; then
  echo "error: ../shared/data/sts-b/test.jsonl is absent; the recipe measures STS-B before and after" >&2
  echo "hint: put the shared data pack beside this checkout (../shared), or run without the evaluation:" >&2
  echo "  cargo build --release --bin compressor && ./target/release/compressor quantize .cache/models/all-MiniLM-L6-v2 --bits 4 --group-size 128 --embeddings 4 --output out/minilm-embedder --force" >&2
  exit 2
fi
cargo build --release --bin compressor
./target/release/compressor run examples/minilm-embedder.toml --force
