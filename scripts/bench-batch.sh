#!/usr/bin/env bash
# Wall time of `compressor batch` (docs/batch.md, docs/benchmarks.md): the 12 jobs of examples/sweep.toml
# (all-MiniLM-L6-v2, {quant, trim-quant} x bits {8, 4, 3} x group size {32, 128}, each scored on STS-B) from a cold
# cache with --jobs 1 and --jobs 2, then the rerun that finds every job finished; and the reuse across jobs: both
# pipelines at 4 bits on MiniLM and on the SST-2 classifier fine-tuned from it (per job: seconds and whether
# vocab-trim's token counts came from the cache). Results in out/bench-batch/results.tsv. Needs ../shared and
# scripts/fetch-minilm.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/bench-models.sh
. "$root/scripts/bench-models.sh"
bench_setup batch $'run\tjobs_at_once\twall_s\tjobs\tdetail'
export COMPRESSOR_NO_PROGRESS=1
sweep() { # NAME MODELS BITS: a copy of examples/sweep.toml writing to work/NAME
  cat > "$work/$1.toml" <<TOML
name = "$1"
output = "$work/$1"

[models]
$2

[pipelines]
quant = "$root/examples/sweep/quant.toml"
trim-quant = "$root/examples/sweep/trim-quant.toml"

[sweep.blockwise-quant]
bits = $3
group-size = [32, 128]
TOML
}
timed() { # NAME K [ARGS...]: run, append a line
  local name="$1" k="$2"; shift 2
  local start=$SECONDS
  "$bin" batch "$work/$name.toml" --jobs "$k" "$@" > "$work/$name-$k.log" 2>&1 || true
  local wall=$((SECONDS - start))
  local detail
  detail="$(python3 - "$work/$name" <<'PY'
import json, sys
d = json.load(open(f"{sys.argv[1]}/report.json"))
c = d["counts"]
secs = [j["seconds"] for j in d["jobs"] if j.get("seconds")]
print(f"{c['done']} done, {c['skipped']} skipped, {c['failed']} failed; job seconds {min(secs, default=0):.1f}-{max(secs, default=0):.1f}")
PY
)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$k" "$wall" "$(grep -c '^\[' "$work/$name-$k.log" || true)" "$detail" >> "$results"
}
minilm="minilm = \"$root/.cache/models/all-MiniLM-L6-v2\""
for k in 1 2; do
  sweep "sweep-j$k" "$minilm" "[8, 4, 3]"
  rm -rf "${work:?}/sweep-j$k"
  timed "sweep-j$k" "$k"
done
timed sweep-j2 2   # every job finished: all skipped
# Reuse across jobs: baseline evaluations per model, token counts per tokenizer and corpus.
sweep reuse "$minilm
sst2 = \"$shared/models/minilm-l6-sst2\"" "[4]"
rm -rf "${work:?}/reuse"
timed reuse 1
python3 - "$work/reuse" >> "$results" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
seconds = {j["name"]: j.get("seconds") for j in json.load(open(out / "report.json"))["jobs"]}
for job in sorted((out / "jobs").iterdir()):
    m = json.load(open(job / "manifest.json"))
    trim = [p for p in m["passes"] if p["kind"] == "vocab-trim"]
    cached = trim[0]["metrics"].get("counts_cached") if trim else "-"
    print(f"# {job.name}: {seconds.get(job.name) or 0:.1f} s, token counts cached: {cached}")
PY
# Two classifiers fine-tuned from MiniLM share one tokenizer: the second one's trim job reads the first one's counts.
cat > "$work/shared-counts.toml" <<TOML
name = "shared-counts"
output = "$work/shared-counts"

[models]
mrpc = "$shared/models/minilm-l6-mrpc"
sst2 = "$shared/models/minilm-l6-sst2"

[pipelines]
trim-quant = "$root/examples/sweep/trim-quant.toml"

[sweep.blockwise-quant]
bits = [4]
group-size = [128]
TOML
rm -rf "${work:?}/shared-counts"
timed shared-counts 1
python3 - "$work/shared-counts" >> "$results" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
for j in json.load(open(out / "report.json"))["jobs"]:
    print(f"# {j['name']}: {j.get('seconds') or 0:.1f} s")
counts = list((out / "cache" / "analyses" / "vocab-counts").iterdir())
print(f"# token count files for both models: {len(counts)}")
PY
column -t -s $'\t' "$results"
