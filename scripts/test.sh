#!/usr/bin/env bash
# The test command: fetch the real model (first use only), then run the whole test suite in the release profile
# (numeric tests need optimised code; one profile means dependencies compile once).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
./scripts/fetch-minilm.sh
./scripts/fetch-mpnet.sh
if [ ! -d ../shared ]; then
  echo "note: ../shared is absent, so the tests on the shared classifiers and data will be skipped" >&2
fi
cargo test --release --workspace "$@"
