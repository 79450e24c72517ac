# Sourced by the bench scripts (after they set `root`, the checkout):
# - `bench_setup NAME HEADER`: `bin` (the release binary, or $COMPRESSOR_BIN), `work` (out/bench-NAME, created),
#   `shared` (../shared, or $SHARED: a copy of its models/ and data/, as on the device machine) and `results` (work/results.tsv, started with the tab-separated HEADER when new);
# - `bench_model NAME`: `path` (the checkpoint), `calib` (the [calibration] data keys) and `evals` (the [[eval]]
#   tables) for `minilm` (all-MiniLM-L6-v2, 256 Wikipedia paragraphs, STS-B test), `mpnet` (all-mpnet-base-v2,
#   the same data), `sst2` (the SST-2 classifier fine-tuned from it, SST-2 training sentences, GLUE dev) or `mrpc`
#   (the MRPC classifier, MRPC training pairs, GLUE dev accuracy and F1);
# - `bench_pipeline NAME PASSES`: writes work/NAME.toml, the model of `bench_model` with its [calibration] ($SAMPLES, default 256
#   samples, 128 tokens), the [[pass]] tables PASSES, output work/NAME and the evaluations;
# - `bench_delta DIR`: "baseline<TAB>compressed<TAB>delta" (x100) of the first evaluation in DIR/report.json.
bench_setup() {
  bin="${COMPRESSOR_BIN:-$root/target/release/compressor}"
  work="$root/out/bench-$1"
  mkdir -p "$work"
  shared="$(cd "${SHARED:-$root/../shared}" && pwd)"
  results="$work/results.tsv"
  [ -f "$results" ] || printf '%s\n' "$2" > "$results"
}

bench_model() {
  case $1 in
    minilm)
      path="$root/.cache/models/all-MiniLM-L6-v2"
      calib="data = \"$shared/data/calibration-wiki/en.jsonl\""
      evals="[[eval]]
task = \"sts\"
data = \"$shared/data/sts-b/test.jsonl\"" ;;
    mpnet)
      path="$root/.cache/models/all-mpnet-base-v2"
      calib="data = \"$shared/data/calibration-wiki/en.jsonl\""
      evals="[[eval]]
task = \"sts\"
data = \"$shared/data/sts-b/test.jsonl\"" ;;
    sst2)
      path="$shared/models/minilm-l6-sst2"
      calib="data = \"$shared/data/sst2/train.jsonl\"
field = \"sentence\""
      evals="[[eval]]
task = \"glue\"
data = \"$shared/data/sst2/dev.jsonl\"
max-length = 128" ;;
    mrpc)
      path="$shared/models/minilm-l6-mrpc"
      calib="data = \"$shared/data/mrpc/train.jsonl\"
field = \"sentence1\"
pair-field = \"sentence2\""
      evals="[[eval]]
task = \"glue\"
data = \"$shared/data/mrpc/dev.jsonl\"
max-length = 128" ;;
    *) echo "unknown model $1 (minilm, mpnet, sst2, mrpc)" >&2; return 1 ;;
  esac
}

bench_pipeline() {
  cat > "$work/$1.toml" <<TOML
[model]
path = "$path"

[calibration]
$calib
samples = ${SAMPLES:-256}
max-length = 128

$2

[output]
dir = "$work/$1"

$evals
TOML
}

bench_delta() {
  python3 - "$1" <<'PY'
import json, sys
d = json.load(open(f"{sys.argv[1]}/report.json"))["deltas"][0]
print(f"{100 * d['baseline']:.2f}\t{100 * d['compressed']:.2f}\t{100 * d['delta']:+.2f}")
PY
}
