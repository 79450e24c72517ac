#!/usr/bin/env bash
# The vocab-trim figures of docs/benchmarks.md: all-MiniLM-L6-v2 (STS-B test, SST-2 logistic regression on
# embeddings) and the SST-2 classifier (GLUE dev), each trimmed on English Wikipedia paragraphs with and without
# `keep-alphabet`, and on Wikipedia plus the eval domain's training split. Pipelines and artifacts go to
# out/bench-vocab-trim/; a summary table is printed at the end. Needs ../shared and scripts/fetch-minilm.sh.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${COMPRESSOR_BIN:-$root/target/release/compressor}"
work="$root/out/bench-vocab-trim"
mkdir -p "$work"
shared="$(cd "$root/../shared" && pwd)"
wiki="\"$shared/data/calibration-wiki/en.jsonl\""
sts_train="{ path = \"$shared/data/sts-b/train.jsonl\", field = [\"sentence1\", \"sentence2\"] }"
sst_train="{ path = \"$shared/data/sst2/train.jsonl\", field = \"sentence\" }"

pipeline() { # name model corpus keep_alphabet evals
  cat > "$work/$1.toml" <<TOML
[model]
path = "$2"

[[pass]]
kind = "vocab-trim"
corpus = [$3]
keep-alphabet = $4

[output]
dir = "$work/$1"
$5
TOML
}
minilm="$root/.cache/models/all-MiniLM-L6-v2"
sst2_model="$shared/models/minilm-l6-sst2"
minilm_evals="
[[eval]]
task = \"sts\"
data = \"$shared/data/sts-b/test.jsonl\"

[[eval]]
task = \"classification\"
name = \"sst2\"
data = \"$shared/data/sst2/train.jsonl\"
test = \"$shared/data/sst2/dev.jsonl\"
text-fields = [\"sentence\"]"
glue_evals="
[[eval]]
task = \"glue\"
data = \"$shared/data/sst2/dev.jsonl\"
max-length = 128"

pipeline minilm-wiki "$minilm" "$wiki" true "$minilm_evals"
pipeline minilm-wiki-noalpha "$minilm" "$wiki" false "$minilm_evals"
pipeline minilm-wiki-domain "$minilm" "$wiki, $sts_train, $sst_train" true "$minilm_evals"
pipeline sst2-wiki "$sst2_model" "$wiki" true "$glue_evals"
pipeline sst2-wiki-noalpha "$sst2_model" "$wiki" false "$glue_evals"
pipeline sst2-wiki-domain "$sst2_model" "$wiki, $sst_train" true "$glue_evals"

for name in minilm-wiki minilm-wiki-noalpha minilm-wiki-domain sst2-wiki sst2-wiki-noalpha sst2-wiki-domain; do
  echo "== $name" >&2
  COMPRESSOR_NO_PROGRESS=1 "$bin" run --force "$work/$name.toml" || [ $? -eq 1 ]
done

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
print("| variant | vocab | parameters | corpus coverage | task | metric | before | after | [UNK] tokens before | after |")
print("|---|---:|---:|---:|---|---|---:|---:|---:|---:|")
for name in ["minilm-wiki", "minilm-wiki-noalpha", "minilm-wiki-domain", "sst2-wiki", "sst2-wiki-noalpha", "sst2-wiki-domain"]:
    m = json.loads((work / name / "manifest.json").read_text())
    p = m["passes"][0]["metrics"]
    ev = m["evaluation"]
    res = {(r["model"], r["name"]): r for r in ev["results"]}
    for d in ev["deltas"]:
        o, c = res[("original", d["task"])], res[("compressed", d["task"])]
        print(f"| {name} | {p['vocab_before']:,} -> {p['vocab_after']:,} | {m['input']['parameters']:,} -> {m['output']['parameters']:,} "
              f"| {100 * p['corpus_coverage']:.2f}% | {d['task']} | {d['metric']} | {100 * d['baseline']:.2f} | {100 * d['compressed']:.2f} "
              f"| {o['unk_tokens']:,} / {o['tokens']:,} | {c['unk_tokens']:,} / {c['tokens']:,} ({100 * c['metrics'].get('unk_fraction', 0):.2f}%) |")
PY
