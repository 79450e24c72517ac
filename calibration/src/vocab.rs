//! Vocabulary mining for vocabulary trimming (Ushio et al. 2023): how often the model's own tokenizer produces each
//! token id on a corpus, and which ids to keep.
//!
//! - [`count_tokens`] tokenizes every text of one or more corpus files (JSONL fields, `.txt` lines, TSV/CSV
//!   columns; see [`crate::data`]) without special tokens, padding or truncation, on the rayon pool, and counts each id. The
//!   counts are a cached statistic, an entry of kind `vocab-counts` in the shared cache
//!   (`<cache>/analyses/vocab-counts/<key>.json`, see [`crate::cache`]), keyed by the tokenizer.json bytes, every
//!   corpus file's bytes (not its path) and its fields. A damaged entry is recomputed.
//! - [`select_ids`] keeps the ids always kept (special tokens, keep-list, ...), then ids seen at least
//!   `min_frequency` times, most frequent first (ties: lower id first), up to `target_size` ids in all. A token
//!   that can only be built from other tokens (a BPE merge result) brings those along, so that the trimmed
//!   tokenizer still produces it.
//!
//! Counting sums integers, so the result does not depend on the order the threads finish in.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::cache::{Cache, Hasher, Key};

use crate::data::read_text_fields;
use crate::error::{Error, Result};

/// Texts tokenized per batch (one rayon fan-out each).
const CHUNK: usize = 1024;

/// Version of the counting procedure and cache layout; part of the cache key.
const COUNTS_VERSION: &str = "compressor vocab-counts v1 (no special tokens, no truncation)";

/// The corpus to mine: files and, per file, the fields holding text (ignored for `.txt`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Corpus {
    pub files: Vec<CorpusFile>,
}

/// One corpus file and the fields of each record that hold text (JSONL keys, TSV/CSV columns; every one is
/// counted; a `.txt` file takes one, ignored, field).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorpusFile {
    pub path: PathBuf,
    pub fields: Vec<String>,
}

/// How often each token id occurs in a corpus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCounts {
    /// `counts[id]`: occurrences of `id`; ids past the end occur 0 times.
    pub counts: Vec<u64>,
    /// Texts read (a record with two text fields counts twice).
    pub texts: u64,
    /// Tokens produced (the sum of `counts`).
    pub tokens: u64,
    /// The digest of the cache key (tokenizer, corpus bytes, fields): identifies the statistic.
    pub key: String,
    /// Whether the counts came from the cache.
    pub cached: bool,
}

impl TokenCounts {
    /// Occurrences of `id`.
    pub fn get(&self, id: u32) -> u64 {
        self.counts.get(id as usize).copied().unwrap_or(0)
    }

    /// Ids that occur at least once.
    pub fn distinct(&self) -> usize {
        self.counts.iter().filter(|&&c| c > 0).count()
    }

    /// The fraction of corpus tokens whose id is in `kept` (1 for an empty corpus).
    pub fn coverage(&self, kept: &[u32]) -> f64 {
        if self.tokens == 0 {
            return 1.0;
        }
        let covered: u64 = kept.iter().map(|&id| self.get(id)).sum();
        covered as f64 / self.tokens as f64
    }
}

/// The on-disk form of [`TokenCounts`]: only nonzero counts, as `[id, count]` pairs in id order.
#[derive(Serialize, Deserialize)]
struct CacheEntry {
    texts: u64,
    tokens: u64,
    nonzero: Vec<(u32, u64)>,
}

/// Count the token ids that the tokenizer in `tokenizer_json` (the bytes of a `tokenizer.json`; `tokenizer_path`
/// only names it in messages) produces on every text of `corpus`, without special tokens, padding or truncation.
/// With `cache_dir`, counts are looked up there first and stored there after counting.
pub fn count_tokens(
    tokenizer_json: &[u8],
    tokenizer_path: &Path,
    corpus: &Corpus,
    cache_dir: Option<&Path>,
) -> Result<TokenCounts> {
    let key = cache_key(tokenizer_json, corpus)?;
    let cache = Cache::new(cache_dir);
    if let Some(found) = cache
        .read_json::<CacheEntry>(&key)
        .and_then(|e| e.counts(&key))
    {
        return Ok(found);
    }
    let mut tokenizer =
        Tokenizer::from_bytes(tokenizer_json).map_err(|cause| Error::ParseTokenizer {
            path: tokenizer_path.to_path_buf(),
            cause,
        })?;
    tokenizer.with_padding(None);
    tokenizer
        .with_truncation(None)
        .map_err(|cause| Error::ParseTokenizer {
            path: tokenizer_path.to_path_buf(),
            cause,
        })?;
    let mut counts: Vec<u64> = vec![0; tokenizer.get_vocab_size(true)];
    let mut texts = 0u64;
    for file in &corpus.files {
        let fields: Vec<&str> = file.fields.iter().map(String::as_str).collect();
        let rows: Vec<String> = read_text_fields(&file.path, &fields, None)?
            .into_iter()
            .flatten()
            .collect();
        texts += rows.len() as u64;
        for chunk in rows.chunks(CHUNK) {
            let encodings = tokenizer
                .encode_batch_fast(chunk.iter().map(|t| t.as_str()).collect(), false)
                .map_err(|cause| Error::Encode {
                    path: tokenizer_path.to_path_buf(),
                    cause,
                })?;
            for enc in &encodings {
                for &id in enc.get_ids() {
                    let i = id as usize;
                    if i >= counts.len() {
                        counts.resize(i + 1, 0);
                    }
                    counts[i] += 1;
                }
            }
        }
    }
    let tokens = counts.iter().sum();
    let result = TokenCounts {
        counts,
        texts,
        tokens,
        key: key.digest(),
        cached: false,
    };
    cache.write_json(&key, &CacheEntry::new(&result))?;
    Ok(result)
}

/// The cache key: the tokenizer.json bytes, every corpus file's bytes (not its path) and its fields.
fn cache_key(tokenizer_json: &[u8], corpus: &Corpus) -> Result<Key> {
    let mut model = Hasher::default();
    model.part(tokenizer_json);
    let mut data = Hasher::default();
    for file in &corpus.files {
        let bytes = std::fs::read(&file.path).map_err(|cause| Error::ReadFile {
            path: file.path.clone(),
            cause,
        })?;
        data.part(&bytes).part(file.fields.join("\0").as_bytes());
    }
    Ok(Key {
        kind: "vocab-counts",
        model: model.hex(),
        data: data.hex(),
        settings: COUNTS_VERSION.to_string(),
    })
}

impl CacheEntry {
    fn new(counts: &TokenCounts) -> Self {
        Self {
            texts: counts.texts,
            tokens: counts.tokens,
            nonzero: counts
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(id, &c)| (id as u32, c))
                .collect(),
        }
    }

    /// The counts of a cached entry, if it is consistent.
    fn counts(self, key: &Key) -> Option<TokenCounts> {
        let len = self.nonzero.last().map_or(0, |&(id, _)| id as usize + 1);
        let mut counts = vec![0u64; len];
        for (id, c) in self.nonzero {
            *counts.get_mut(id as usize)? = c;
        }
        if counts.iter().sum::<u64>() != self.tokens {
            return None;
        }
        Some(TokenCounts {
            counts,
            texts: self.texts,
            tokens: self.tokens,
            key: key.digest(),
            cached: true,
        })
    }
}

/// Which ids to keep and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// The kept ids, sorted: new id `i` is old id `old_ids[i]`.
    pub old_ids: Vec<u32>,
    /// Ids always kept (the `always` set and what building them needs).
    pub always: usize,
    /// Ids seen at least `min_frequency` times.
    pub frequent: usize,
    /// Frequent ids left out to meet `target_size`.
    pub cut_by_target: usize,
    /// Ids kept only because a kept token is built from them (BPE merges).
    pub parts: usize,
}

/// `target_size` is below the number of ids that are always kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetTooSmall {
    /// Ids always kept.
    pub needed: usize,
}

/// Choose the ids to keep: every id of `always`, then ids with at least `min_frequency` occurrences, most
/// frequent first (ties: lower id first), stopping at `target_size` ids in all. `parts(id)` lists the ids a token
/// is built from (BPE merge parts, empty otherwise); they are kept with it, and a frequent id whose parts would not
/// fit under `target_size` is skipped.
pub fn select_ids(
    counts: &TokenCounts,
    vocab_size: usize,
    always: &BTreeSet<u32>,
    parts: &HashMap<u32, Vec<u32>>,
    min_frequency: u64,
    target_size: Option<usize>,
) -> std::result::Result<Selection, TargetTooSmall> {
    let mut kept: BTreeSet<u32> = BTreeSet::new();
    for &id in always {
        add_with_parts(id, parts, &mut kept);
    }
    let always_n = kept.len();
    if let Some(t) = target_size {
        if t < always_n {
            return Err(TargetTooSmall { needed: always_n });
        }
    }
    let mut frequent: Vec<u32> = (0..vocab_size as u32)
        .filter(|&id| counts.get(id) >= min_frequency.max(1))
        .collect();
    frequent.sort_by(|&a, &b| counts.get(b).cmp(&counts.get(a)).then(a.cmp(&b)));
    let mut cut = 0;
    let mut via_parts = 0;
    for &id in &frequent {
        if kept.contains(&id) {
            continue;
        }
        let mut needed = BTreeSet::new();
        add_with_parts(id, parts, &mut needed);
        let new: Vec<u32> = needed.difference(&kept).copied().collect();
        if target_size.is_some_and(|t| kept.len() + new.len() > t) {
            cut += 1;
            continue;
        }
        via_parts += new
            .iter()
            .filter(|&&n| counts.get(n) < min_frequency)
            .count();
        kept.extend(new);
    }
    Ok(Selection {
        old_ids: kept.into_iter().collect(),
        always: always_n,
        frequent: frequent.len(),
        cut_by_target: cut,
        parts: via_parts,
    })
}

/// Add `id` and, transitively, every part it is built from.
fn add_with_parts(id: u32, parts: &HashMap<u32, Vec<u32>>, kept: &mut BTreeSet<u32>) {
    let mut stack = vec![id];
    while let Some(i) = stack.pop() {
        if kept.insert(i) {
            if let Some(p) = parts.get(&i) {
                stack.extend(p.iter().copied());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(c: &[u64]) -> TokenCounts {
        TokenCounts {
            counts: c.to_vec(),
            texts: 1,
            tokens: c.iter().sum(),
            key: String::new(),
            cached: false,
        }
    }

    #[test]
    fn selection_keeps_always_then_most_frequent() {
        let c = counts(&[0, 5, 1, 3, 3, 9, 2]);
        let always = BTreeSet::from([0]);
        let none = HashMap::new();
        let all = select_ids(&c, 7, &always, &none, 2, None).expect("fits");
        assert_eq!(all.old_ids, vec![0, 1, 3, 4, 5, 6]);
        assert_eq!((all.always, all.frequent, all.cut_by_target), (1, 5, 0));
        // Top 3 besides id 0: 5 (9), 1 (5), then 3 before 4 (tie, lower id first).
        let top = select_ids(&c, 7, &always, &none, 2, Some(4)).expect("fits");
        assert_eq!(top.old_ids, vec![0, 1, 3, 5]);
        assert_eq!(top.cut_by_target, 2);
        assert_eq!(
            select_ids(&c, 7, &BTreeSet::from([0, 1, 2]), &none, 2, Some(2)),
            Err(TargetTooSmall { needed: 3 })
        );
        assert!((c.coverage(&all.old_ids) - 22.0 / 23.0).abs() < 1e-12);
    }

    #[test]
    fn merge_results_bring_their_parts() {
        // 5 = 3 + 4, 4 = 1 + 2; only 5 is frequent.
        let c = counts(&[0, 0, 0, 0, 0, 7]);
        let parts = HashMap::from([(5, vec![3, 4]), (4, vec![1, 2])]);
        let s = select_ids(&c, 6, &BTreeSet::from([0]), &parts, 2, None).expect("fits");
        assert_eq!(s.old_ids, vec![0, 1, 2, 3, 4, 5]);
        assert_eq!(s.parts, 4);
        // Under a target of 3 the token and its parts do not fit: it is skipped.
        let s = select_ids(&c, 6, &BTreeSet::from([0]), &parts, 2, Some(3)).expect("fits");
        assert_eq!((s.old_ids, s.cut_by_target), (vec![0], 1));
    }
}
