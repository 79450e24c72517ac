#!/usr/bin/env bash
# The main job: fetch all-MiniLM-L6-v2 (first use only), build compressor, compress the model with
# examples/quickstart.toml, and show what came out.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-minilm.sh
cargo build --release --bin compressor
./target/release/compressor run examples/quickstart.toml --force
./target/release/compressor inspect out/minilm-f16
