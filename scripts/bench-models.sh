# Sourced by the bench scripts: `bench_model NAME` sets `path` (the checkpoint), `calib` (the [calibration] data
# keys) and `evals` (the [[eval]] tables) for NAME: `minilm` (all-MiniLM-L6-v2, 256 Wikipedia paragraphs, STS-B
# test) or `sst2` (the SST-2 classifier fine-tuned from it, SST-2 training sentences, GLUE dev). Needs `root` and
# `shared` set.
bench_model() {
  case $1 in
    minilm)
      path="$root/.cache/models/all-MiniLM-L6-v2"
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
    *) echo "unknown model $1 (minilm, sst2)" >&2; return 1 ;;
  esac
}
