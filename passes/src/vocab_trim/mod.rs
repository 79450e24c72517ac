//! `vocab-trim`: keep only the vocabulary a corpus uses (Ushio et al. 2023, "Efficient Multilingual Language Model
//! Compression through Vocabulary Trimming").
//!
//! 1. **Mine**: tokenize every text of the corpus files with the model's own tokenizer (no special tokens, no
//!    truncation) and count each id ([`compressor_calibration::vocab`]; the counts are cached under
//!    `$COMPRESSOR_CACHE/vocab-counts/`).
//! 2. **Select**: always keep the special tokens (added tokens, the unknown token, the post-processor's tokens, the
//!    special-token ids of config.json and the tokens named by special_tokens_map.json / tokenizer_config.json),
//!    the byte pieces, the keep-list and, with `keep-alphabet`, every single-character piece; then ids seen at
//!    least `min-frequency` times, most frequent first, up to `target-size` ids in all. A BPE token keeps the
//!    tokens it is merged from.
//! 3. **Rewrite**: kept ids get new contiguous ids in their original order; tokenizer.json (vocabulary, merges,
//!    `unk_id`, added tokens, post-processor, padding), tokenizer_config.json (`added_tokens_decoder`),
//!    added_tokens.json, vocab.txt and config.json (`vocab_size`, `*_token_id`) follow
//!    ([`compressor_calibration::trim`]).
//! 4. **Slice** the word embedding (and any MLM output embedding and bias) to the kept rows, in whatever encoding
//!    it is stored, and write the id map `old_ids` (I32, sorted: new id `i` was old id `old_ids[i]`) to
//!    `vocab_map.safetensors`. Trimming an artifact that already has a map composes the two, so `old_ids` always
//!    refers to the first model's ids.
//!
//! Mining runs at plan time too (the plan needs the kept size; with the cache the run does not tokenize again).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use compressor_calibration::trim::{
    named_special_tokens, rewrite_added_tokens, rewrite_tokenizer, rewrite_tokenizer_config,
    vocab_txt, IdMap, TokenizerModel, Vocabulary, CONFIG_TOKEN_ID_KEYS,
};
use compressor_calibration::vocab::{
    count_tokens, select_ids, Corpus, CorpusFile, Selection, TokenCounts,
};
use compressor_models::{st, DType, HostTensor, ModelConfig, Role};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::files::SideFiles;
use crate::pass::{
    Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlannedChange, TensorMeta,
};

/// The side file holding the id map.
pub const VOCAB_MAP_FILE: &str = "vocab_map.safetensors";
/// The tensor of [`VOCAB_MAP_FILE`].
pub const OLD_IDS: &str = "old_ids";

/// Output-embedding tensors of masked-LM heads, sliced with the word embedding when a model has them.
pub const OUTPUT_EMBEDDING_NAMES: &[&str] = &[
    "cls.predictions.decoder.weight",
    "cls.predictions.decoder.bias",
    "cls.predictions.bias",
    "lm_head.decoder.weight",
    "lm_head.decoder.bias",
    "lm_head.bias",
];

/// Settings of a `vocab-trim` pass.
///
/// ```toml
/// [[pass]]
/// kind = "vocab-trim"
/// corpus = ["data/calibration-wiki/en.jsonl", { path = "data/sts-b/train.jsonl", field = ["sentence1", "sentence2"] }]
/// field = "text"            # JSONL field / TSV or CSV column of files without their own (ignored for .txt)
/// min-frequency = 2         # keep ids seen at least this often
/// target-size = 20000       # optional: at most this many ids in all
/// keep = ["[unused0]"]      # tokens always kept
/// keep-file = "keep.txt"    # optional: one token per line, always kept
/// keep-alphabet = true      # keep every single-character piece
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Corpus files (JSONL, `.txt`, TSV or CSV), relative to the pipeline file: one path or a list, whose items
    /// are paths or `{ path = "...", field = "..." | [...] }` tables (fields of that file).
    #[serde(deserialize_with = "one_or_many")]
    pub corpus: Vec<CorpusEntry>,
    /// The field holding the text (JSONL key, TSV/CSV column; ignored for `.txt`) of files without their own.
    #[serde(default = "default_field")]
    pub field: String,
    /// Keep ids seen at least this many times in the corpus.
    #[serde(default = "default_min_frequency")]
    pub min_frequency: u64,
    /// At most this many ids in the trimmed vocabulary (the always-kept ones included).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_size: Option<usize>,
    /// Tokens always kept (vocabulary tokens, as `compressor` / `tokenizers` spell them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keep: Vec<String>,
    /// A file with one token per line, always kept (relative to the pipeline file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_file: Option<PathBuf>,
    /// Keep every single-character piece (WordPiece: and its `##` form), so words of known characters never become
    /// the unknown token.
    #[serde(default = "default_true")]
    pub keep_alphabet: bool,
}

/// One corpus file: a path (the pass's `field`) or a table with its own fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    untagged,
    expecting = "a path or a table `{ path = \"...\", field = \"...\" }`"
)]
pub enum CorpusEntry {
    Path(PathBuf),
    Table(CorpusTable),
}

/// `{ path = "...", field = "..." }` or `field = ["a", "b"]` (every field's text is counted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorpusTable {
    pub path: PathBuf,
    #[serde(deserialize_with = "one_or_many")]
    pub field: Vec<String>,
}

impl CorpusEntry {
    pub fn path(&self) -> &Path {
        match self {
            CorpusEntry::Path(p) => p,
            CorpusEntry::Table(t) => &t.path,
        }
    }

    fn with_base(&self, base: &Path) -> Self {
        match self {
            CorpusEntry::Path(p) => CorpusEntry::Path(base.join(p)),
            CorpusEntry::Table(t) => CorpusEntry::Table(CorpusTable {
                path: base.join(&t.path),
                field: t.field.clone(),
            }),
        }
    }
}

fn one_or_many<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> std::result::Result<Vec<T>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged, expecting = "one value or a list")]
    // `Many` first: a table also deserializes from a list (`["a.jsonl", "b.txt"]` would read as one table).
    enum OneOrMany<T> {
        Many(Vec<T>),
        One(T),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(p) => vec![p],
        OneOrMany::Many(v) => v,
    })
}

fn default_field() -> String {
    "text".into()
}
fn default_min_frequency() -> u64 {
    2
}
fn default_true() -> bool {
    true
}

impl Config {
    /// This config with relative paths resolved against `base` (the pipeline file's folder).
    pub fn with_base(&self, base: &Path) -> Self {
        let mut c = self.clone();
        c.corpus = c.corpus.iter().map(|e| e.with_base(base)).collect();
        c.keep_file = c.keep_file.as_ref().map(|p| base.join(p));
        c
    }
}

/// The `vocab-trim` pass.
pub struct VocabTrim {
    config: Config,
    cache_dir: Option<PathBuf>,
}

impl VocabTrim {
    /// A pass whose token counts are cached in [`compressor_calibration::default_cache_dir`].
    pub fn new(config: Config) -> Self {
        Self {
            config,
            cache_dir: Some(compressor_calibration::default_cache_dir()),
        }
    }

    /// Cache the token counts in `dir` (`None`: no cache).
    pub fn with_cache_dir(mut self, dir: Option<PathBuf>) -> Self {
        self.cache_dir = dir;
        self
    }
}

/// Everything decided before any tensor changes.
struct Decision {
    vocab: Vocabulary,
    tokenizer: Value,
    counts: TokenCounts,
    selection: Selection,
    /// Special tokens kept, by token.
    specials: Vec<String>,
    /// Keep-list tokens that are not in the vocabulary.
    unknown_keep: Vec<String>,
    /// Keep-list tokens that are.
    keep_found: usize,
}

fn config_err(key: &str, problem: impl Into<String>) -> Error {
    Error::Config {
        key: key.into(),
        problem: problem.into(),
    }
}

const PATH_HINT: &str = "\nhint: paths in a pipeline are relative to the pipeline file's folder";

impl VocabTrim {
    /// Check the settings and the corpus files (missing, and the keep-file), without reading the tokenizer.
    fn check_files(&self) -> Result<()> {
        let c = &self.config;
        if c.corpus.is_empty() {
            return Err(config_err("corpus", "names no file\nhint: give one path or a list of paths, e.g. `corpus = [\"data/en.jsonl\"]`"));
        }
        for p in c.corpus.iter().map(CorpusEntry::path) {
            if !p.is_file() {
                return Err(config_err(
                    "corpus",
                    format!("file `{}` does not exist{PATH_HINT}", p.display()),
                ));
            }
        }
        if let Some(p) = &c.keep_file {
            if !p.is_file() {
                return Err(config_err(
                    "keep-file",
                    format!("file `{}` does not exist{PATH_HINT}", p.display()),
                ));
            }
        }
        if c.min_frequency == 0 {
            return Err(config_err("min-frequency", "must be at least 1"));
        }
        Ok(())
    }

    /// The keep-list: `keep` then the keep-file's non-empty lines.
    fn keep_list(&self) -> Result<Vec<String>> {
        let mut out = self.config.keep.clone();
        if let Some(p) = &self.config.keep_file {
            let text = std::fs::read_to_string(p).map_err(|e| Error::File {
                path: p.clone(),
                problem: format!("cannot be read: {e}"),
            })?;
            out.extend(
                text.lines()
                    .map(|l| l.strip_suffix('\r').unwrap_or(l))
                    .filter(|l| !l.is_empty())
                    .map(str::to_string),
            );
        }
        Ok(out)
    }

    /// Mine and select, from the side files as they are now.
    fn decide(&self, files: &SideFiles, config: &ModelConfig) -> Result<Decision> {
        self.check_files()?;
        let tok_path = files.dir().join("tokenizer.json");
        let bytes = files.read("tokenizer.json")?.ok_or_else(|| Error::File {
            path: tok_path.clone(),
            problem:
                "is missing: `vocab-trim` rewrites the model's tokenizer.json and mines with it"
                    .into(),
        })?;
        let tokenizer: Value = serde_json::from_slice(&bytes).map_err(|e| Error::File {
            path: tok_path.clone(),
            problem: format!("is not valid JSON: {e}"),
        })?;
        let vocab = Vocabulary::from_json(&tok_path, &tokenizer)?;

        let mut always = vocab.required();
        let mut specials: BTreeSet<u32> = vocab.specials();
        for key in CONFIG_TOKEN_ID_KEYS {
            if let Some(id) = config.raw.get(*key).and_then(Value::as_u64) {
                if (id as usize) < vocab.len() {
                    specials.insert(id as u32);
                }
            }
        }
        for rel in ["special_tokens_map.json", "tokenizer_config.json"] {
            if let Some(doc) = files.read_json(rel)? {
                specials.extend(
                    named_special_tokens(&doc)
                        .iter()
                        .filter_map(|t| vocab.id(t)),
                );
            }
        }
        always.extend(specials.iter().copied());
        if self.config.keep_alphabet {
            always.extend(vocab.alphabet.iter().copied());
        }
        let mut unknown_keep = Vec::new();
        let mut keep_found = 0;
        for t in self.keep_list()? {
            match vocab.id(&t) {
                Some(id) => {
                    keep_found += 1;
                    always.insert(id);
                }
                None => unknown_keep.push(t),
            }
        }
        unknown_keep.sort();
        unknown_keep.dedup();

        let corpus = Corpus {
            files: self
                .config
                .corpus
                .iter()
                .map(|e| CorpusFile {
                    path: e.path().to_path_buf(),
                    fields: match e {
                        CorpusEntry::Path(_) => vec![self.config.field.clone()],
                        CorpusEntry::Table(t) => t.field.clone(),
                    },
                })
                .collect(),
        };
        let counts = count_tokens(&bytes, &tok_path, &corpus, self.cache_dir.as_deref())?;
        if counts.tokens == 0 {
            return Err(config_err(
                "corpus",
                format!(
                    "the {} text(s) of the corpus give no tokens (all are empty)",
                    counts.texts
                ),
            ));
        }
        let selection = select_ids(
            &counts,
            vocab.len(),
            &always,
            &vocab.parts,
            self.config.min_frequency,
            self.config.target_size,
        )
        .map_err(|e| {
            config_err(
                "target-size",
                format!(
                    "{} is smaller than the {} tokens every trimmed vocabulary of this tokenizer keeps (special \
                     tokens, byte pieces, keep-list{})\nhint: raise `target-size` to at least {}",
                    self.config.target_size.unwrap_or(0),
                    e.needed,
                    if self.config.keep_alphabet { ", single characters (`keep-alphabet = false` drops them)" } else { "" },
                    e.needed
                ),
            )
        })?;
        Ok(Decision {
            specials: specials
                .iter()
                .filter_map(|&id| vocab.token(id).map(str::to_string))
                .collect(),
            vocab,
            tokenizer,
            counts,
            selection,
            unknown_keep,
            keep_found,
        })
    }

    fn warnings(&self, d: &Decision) -> Vec<String> {
        let mut w = Vec::new();
        if !d.unknown_keep.is_empty() {
            w.push(format!(
                "{} keep-list token(s) are not in the vocabulary and were ignored: {}",
                d.unknown_keep.len(),
                d.unknown_keep
                    .iter()
                    .map(|t| format!("`{t}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        w
    }
}

/// The tensors indexed by token id: the word embedding and any MLM output embedding / bias.
fn vocab_tensors<'a>(
    tensors: impl Iterator<Item = (&'a str, Role, &'a [usize])>,
    rows: usize,
) -> Vec<String> {
    tensors
        .filter(|(name, role, shape)| {
            (*role == Role::EmbedTokens || OUTPUT_EMBEDDING_NAMES.contains(name))
                && shape.first() == Some(&rows)
        })
        .map(|(name, _, _)| name.to_string())
        .collect()
}

impl Pass for VocabTrim {
    fn kind(&self) -> &'static str {
        "vocab-trim"
    }

    fn phase(&self) -> Phase {
        Phase::Structure
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        let rows = ctx.config.bert().vocab_size;
        let embedding = "embeddings.word_embeddings.weight";
        match ctx.info.get(embedding) {
            Some(t) if t.shape.first() == Some(&rows) => {}
            Some(t) => {
                return Err(config_err(
                    "kind",
                    format!(
                        "an earlier pass changed the vocabulary (`{embedding}` has {} rows, config.json says {rows}); \
                         a pipeline trims the vocabulary once",
                        t.shape.first().copied().unwrap_or(0)
                    ),
                ))
            }
            None => {
                return Err(config_err("kind", format!("the model has no `{embedding}` to trim")))
            }
        }
        let d = self.decide(&SideFiles::new(ctx.model_dir), ctx.config)?;
        if d.vocab.len() > rows {
            return Err(Error::File {
                path: ctx.model_dir.join("tokenizer.json"),
                problem: format!(
                    "has {} ids but `{embedding}` has only {rows} rows: the tokenizer does not belong to this model",
                    d.vocab.len()
                ),
            });
        }
        let kept = d.selection.old_ids.len();
        let names = vocab_tensors(
            ctx.info
                .tensors
                .iter()
                .map(|t| (t.name.as_str(), t.role, t.shape.as_slice())),
            rows,
        );
        let mut plan = PassPlan::default();
        for name in names {
            let Some(t) = ctx.info.get(&name) else {
                continue;
            };
            let mut shape = t.shape.clone();
            shape[0] = kept;
            let after = TensorMeta {
                shape: shape.clone(),
                ..t.clone()
            };
            plan.changes.push(PlannedChange {
                name: t.name.clone(),
                dtype_before: t.dtype,
                dtype_after: t.dtype,
                shape_before: t.shape.clone(),
                bytes_before: t.bytes(),
                // A quantized table keeps its encoding: its codes and scales are sliced by row.
                bytes_after: after.bytes(),
                shape_after: shape,
                encoding_after: t.encoding,
                form_after: None,
            });
        }
        plan.notes.push(format!(
            "{} vocabulary: {} -> {kept} ids; the corpus ({} text(s), {} tokens{}) covers {:.4}% of its tokens with them",
            d.vocab.model.as_str(),
            rows,
            d.counts.texts,
            d.counts.tokens,
            if d.counts.cached { ", counts cached" } else { "" },
            100.0 * d.counts.coverage(&d.selection.old_ids)
        ));
        plan.notes.extend(self.warnings(&d));
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let d = self.decide(ctx.files, ctx.config)?;
        let rows = ctx.config.bert().vocab_size;
        let old_ids = &d.selection.old_ids;
        let kept = old_ids.len();
        if let Some(c) = ctx
            .plan
            .changes
            .iter()
            .find(|c| c.shape_after.first() != Some(&kept))
        {
            return Err(config_err(
                "corpus",
                format!(
                    "the plan kept {} ids of `{}` but the run keeps {kept}: the corpus or tokenizer changed in between",
                    c.shape_after.first().copied().unwrap_or(0),
                    c.name
                ),
            ));
        }
        let row_index: Vec<usize> = old_ids.iter().map(|&i| i as usize).collect();
        let mut changed = Vec::new();
        let mut params_before = 0usize;
        let mut params_after = 0usize;
        for c in &ctx.plan.changes {
            ctx.progress.on_unit(&c.name);
            ctx.store.select_rows(&c.name, &row_index)?;
            params_before += c.shape_before.iter().product::<usize>();
            params_after += c.shape_after.iter().product::<usize>();
            changed.push(c.name.clone());
        }
        changed.sort();

        // Tokenizer and side files.
        let map = IdMap::new(old_ids.clone(), d.vocab.len());
        let tok_path = ctx.files.dir().join("tokenizer.json");
        let tokenizer = rewrite_tokenizer(&tok_path, &d.tokenizer, &d.vocab, &map)?;
        ctx.files.set_json("tokenizer.json", &tokenizer);
        if let Some(cfg) = ctx.files.read_json("tokenizer_config.json")? {
            ctx.files.set_json(
                "tokenizer_config.json",
                &rewrite_tokenizer_config(&cfg, &map),
            );
        }
        if let Some(added) = ctx.files.read_json("added_tokens.json")? {
            ctx.files
                .set_json("added_tokens.json", &rewrite_added_tokens(&added, &map));
        }
        let mut warnings = self.warnings(&d);
        if ctx.files.read("vocab.txt")?.is_some() {
            if d.vocab.model == TokenizerModel::WordPiece {
                ctx.files
                    .set("vocab.txt", vocab_txt(&d.vocab, &map).into_bytes());
            } else {
                warnings.push(format!(
                    "vocab.txt was left as it was: it belongs to a {} tokenizer, whose vocabulary is in tokenizer.json",
                    d.vocab.model.as_str()
                ));
            }
        }

        // config.json: vocab_size and the special-token ids.
        let mut remapped = BTreeMap::new();
        for key in CONFIG_TOKEN_ID_KEYS {
            if let Some(old) = ctx.config.raw.get(*key).and_then(Value::as_u64) {
                let new = map.get(old as u32).ok_or_else(|| {
                    config_err(
                        key,
                        format!("config.json's id {old} was removed by the trimming"),
                    )
                })?;
                ctx.config.set(key, Some(json!(new)))?;
                remapped.insert(key.to_string(), json!([old, new]));
            }
        }
        ctx.config.set("vocab_size", Some(json!(kept)))?;

        // The id map, composed with the input's when the input was trimmed before.
        let previous = match ctx.files.read(VOCAB_MAP_FILE)? {
            Some(bytes) => Some(read_old_ids(&ctx.files.dir().join(VOCAB_MAP_FILE), &bytes)?),
            None => None,
        };
        let original_ids: Vec<i32> = match &previous {
            Some(prev) => {
                if prev.len() != rows {
                    return Err(Error::File {
                        path: ctx.files.dir().join(VOCAB_MAP_FILE),
                        problem: format!(
                            "maps {} ids but the model has {rows}: it does not belong to this model",
                            prev.len()
                        ),
                    });
                }
                old_ids.iter().map(|&i| prev[i as usize]).collect()
            }
            None => old_ids.iter().map(|&i| i as i32).collect(),
        };
        let mut meta = BTreeMap::new();
        meta.insert("format".to_string(), "pt".to_string());
        meta.insert("corpus_counts_sha256".to_string(), d.counts.key.clone());
        meta.insert(
            "min_frequency".to_string(),
            self.config.min_frequency.to_string(),
        );
        if let Some(t) = self.config.target_size {
            meta.insert("target_size".to_string(), t.to_string());
        }
        let bytes: Vec<u8> = original_ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensor = HostTensor::from_bytes(DType::I32, vec![kept], bytes)?;
        ctx.files.set(
            VOCAB_MAP_FILE,
            st::serialize(&[(OLD_IDS.to_string(), tensor)], &meta),
        );

        let mut report = PassReport {
            kind: "vocab-trim".into(),
            changed,
            warnings,
            ..PassReport::default()
        };
        let bytes_before = ctx.plan.bytes_before();
        let bytes_after = ctx.plan.bytes_after();
        let m = &mut report.metrics;
        m.insert("vocab_before".into(), json!(rows));
        m.insert("vocab_after".into(), json!(kept));
        m.insert("parameters_before".into(), json!(params_before));
        m.insert("parameters_after".into(), json!(params_after));
        m.insert(
            "parameters_saved".into(),
            json!(params_before - params_after),
        );
        m.insert("bytes_before".into(), json!(bytes_before));
        m.insert("bytes_after".into(), json!(bytes_after));
        m.insert("bytes_saved".into(), json!(bytes_before - bytes_after));
        m.insert("corpus_texts".into(), json!(d.counts.texts));
        m.insert("corpus_tokens".into(), json!(d.counts.tokens));
        m.insert("corpus_distinct_ids".into(), json!(d.counts.distinct()));
        m.insert("corpus_coverage".into(), json!(d.counts.coverage(old_ids)));
        m.insert("always_kept".into(), json!(d.selection.always));
        m.insert("frequent_ids".into(), json!(d.selection.frequent));
        m.insert(
            "cut_by_target_size".into(),
            json!(d.selection.cut_by_target),
        );
        m.insert("kept_as_merge_parts".into(), json!(d.selection.parts));
        m.insert("counts_cached".into(), json!(d.counts.cached));
        let dd = &mut report.decisions;
        dd.insert("tokenizer_model".into(), json!(d.vocab.model.as_str()));
        dd.insert("kept_specials".into(), json!(d.specials));
        dd.insert("keep_list_found".into(), json!(d.keep_found));
        dd.insert("keep_list_unknown".into(), json!(d.unknown_keep));
        dd.insert("config_token_ids".into(), json!(remapped));
        dd.insert(
            "id_map".into(),
            json!(format!("{VOCAB_MAP_FILE}:{OLD_IDS}")),
        );
        Ok(report)
    }
}

/// The `old_ids` tensor of a `vocab_map.safetensors` file's bytes (`path` names it in messages).
pub fn read_old_ids(path: &Path, bytes: &[u8]) -> Result<Vec<i32>> {
    let (data_start, tensors, _) = st::parse_header(path, bytes)?;
    let bad = |problem: String| Error::File {
        path: path.to_path_buf(),
        problem,
    };
    let info = tensors
        .get(OLD_IDS)
        .ok_or_else(|| bad(format!("has no `{OLD_IDS}` tensor")))?;
    if info.dtype != DType::I32 || info.shape.len() != 1 {
        return Err(bad(format!(
            "`{OLD_IDS}` must be a 1-D I32 tensor, found {} {:?}",
            info.dtype, info.shape
        )));
    }
    let data = &bytes[data_start + info.begin..data_start + info.end];
    Ok(data
        .chunks_exact(4)
        .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Config {
        serde_json::from_value(v).expect("valid config")
    }

    #[test]
    fn corpus_is_one_path_a_list_or_tables() {
        let p = |s: &str| CorpusEntry::Path(PathBuf::from(s));
        assert_eq!(
            parse(json!({"corpus": "a.jsonl"})).corpus,
            vec![p("a.jsonl")]
        );
        assert_eq!(
            parse(json!({"corpus": ["a.jsonl", "b.txt"]})).corpus,
            vec![p("a.jsonl"), p("b.txt")]
        );
        let t = parse(json!({"corpus": ["a.jsonl", {"path": "b.jsonl", "field": "s"}]}));
        assert_eq!(
            t.corpus[1],
            CorpusEntry::Table(CorpusTable {
                path: "b.jsonl".into(),
                field: vec!["s".into()]
            })
        );
        assert_eq!(
            t.with_base(Path::new("base")).corpus[1].path(),
            Path::new("base/b.jsonl")
        );
        let c = parse(json!({"corpus": "a.jsonl"}));
        assert_eq!(
            (
                c.field.as_str(),
                c.min_frequency,
                c.target_size,
                c.keep_alphabet
            ),
            ("text", 2, None, true)
        );
    }
}
