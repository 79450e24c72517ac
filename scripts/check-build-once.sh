#!/usr/bin/env bash
# Check that the README's two commands build dependencies once: after the main job's
# `cargo build --release --bin compressor`, the test command's `cargo test --release --workspace` must compile no
# crate from outside the workspace (its dev-dependencies' own crates, such as tempfile, excepted: they are new
# crates, not recompiles). Prints what the test build compiled and exits 1 if it recompiled a dependency of the
# binary. Run it on a warm or a cold target folder; it changes nothing but the build cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cargo build --release --bin compressor --message-format=json > "$work/build.json"
cargo test --release --workspace --no-run --message-format=json > "$work/test.json"
python3 - "$work/build.json" "$work/test.json" <<'PY'
import json, sys

def artifacts(path):
    out = []
    for line in open(path):
        m = json.loads(line)
        if m.get("reason") == "compiler-artifact":
            out.append(m)
    return out

build, test = artifacts(sys.argv[1]), artifacts(sys.argv[2])
workspace = lambda m: m["package_id"].startswith("path+file://")
# A dependency unit of the binary is identified by its output files (which carry cargo's metadata hash).
built = {f for m in build if not workspace(m) for f in m["filenames"]}
compiled = [m for m in test if not m["fresh"] and not workspace(m)]
tested = {f for m in test for f in m["filenames"]}
# On a warm cache nothing may be compiled either way, so also check that every dependency unit of the binary is the
# very unit (same feature hash in its file names) the test build uses.
recompiled = [m for m in build if not workspace(m) and not set(m["filenames"]) & tested]
recompiled += [m for m in compiled if not set(m["filenames"]) & built
               and any(m["target"]["name"] == b["target"]["name"] for b in build)]
print(f"binary build: {len(build)} units; test build: {len(test)} units, "
      f"{len(compiled)} dependency units compiled: {sorted(m['target']['name'] for m in compiled)}")
if recompiled:
    print("error: the test build recompiled dependencies of the binary with other features: "
          + ", ".join(sorted(m["target"]["name"] for m in recompiled)))
    sys.exit(1)
print(f"ok: the test build uses the {len([m for m in build if not workspace(m)])} dependency units of the binary build as they are")
PY
