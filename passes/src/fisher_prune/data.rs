//! The two triplet sets of GAPrune, `(query, positive, negative)` texts read from JSONL:
//! - `paragraphs` (general data, the Wikipedia calibration text): a paragraph is the query, the next paragraph of
//!   the same article (consecutive records with the same `group-field`) its positive, a paragraph of another
//!   article its negative;
//! - `pairs` (a domain set such as bbc-news): `query-field` (a headline) and `positive-field` (its article) of one
//!   record, the `positive-field` of another record as the negative;
//! - `triplets`: a user's file with all three fields.
//!
//! `skip` leaves out the first records of the file (so that an evaluation that reads the first N rows with
//! `limit = N` never sees the triplets' texts). Triplets are sampled with the pipeline seed; negatives are drawn
//! from the same seeded generator, so the same file and seed give the same triplets.

use std::path::{Path, PathBuf};

use compressor_calibration::{read_jsonl, sample, text_field, Record};
use compressor_models::rng::Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// How a file's records make triplets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// Adjacent paragraphs of one article (query, positive), a paragraph of another article (negative).
    #[default]
    Paragraphs,
    /// A query and its positive per record; another record's positive is the negative.
    Pairs,
    /// `query`, `positive` and `negative` in every record.
    Triplets,
}

/// One triplet set: where its records are and how they make triplets.
///
/// ```toml
/// [[pass]]
/// kind = "fisher-prune"
/// target = 0.5
/// [pass.domain]
/// data = "../../shared/data/bbc-news/all.jsonl"
/// format = "pairs"            # paragraphs | pairs | triplets
/// query-field = "title"       # pairs: default "title"; triplets: default "query"
/// positive-field = "text"     # pairs: default "text"; triplets: default "positive"
/// skip = 400                  # leave out the first 400 records (the evaluation's `limit = 400`)
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Source {
    pub data: PathBuf,
    #[serde(default)]
    pub format: Format,
    /// `paragraphs`: the paragraph text (default `text`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text_field: Option<String>,
    /// `paragraphs`: the article a paragraph belongs to (default `title`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub positive_field: Option<String>,
    /// `triplets`: the negative (default `negative`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub negative_field: Option<String>,
    /// Records at the start of the file that are never used.
    #[serde(default)]
    pub skip: usize,
}

/// The first two `fields` of every record (an error names the file and line of a record without one).
fn two_fields(
    path: &Path,
    records: &[(usize, Record)],
    fields: &[String; 3],
) -> Result<Vec<(String, String)>> {
    records
        .iter()
        .map(|(line, r)| {
            Ok((
                text_field(path, *line, r, &fields[0])?,
                text_field(path, *line, r, &fields[1])?,
            ))
        })
        .collect()
}

/// One triplet of texts.
pub type Triplet = [String; 3];

impl Source {
    /// `data` resolved against `base` when relative.
    pub fn with_base(&self, base: &Path) -> Self {
        Self {
            data: base.join(&self.data),
            ..self.clone()
        }
    }

    /// The field names of this format: `(first, second, third)` as used by [`Source::triplets`]; a field given
    /// that the format does not use is an error naming `key.field`.
    fn fields(&self, key: &str) -> Result<[String; 3]> {
        let given = |f: &Option<String>, default: &str| f.clone().unwrap_or_else(|| default.into());
        let unused: &[(&str, &Option<String>)] = match self.format {
            Format::Paragraphs => &[
                ("query-field", &self.query_field),
                ("positive-field", &self.positive_field),
                ("negative-field", &self.negative_field),
            ],
            Format::Pairs => &[
                ("text-field", &self.text_field),
                ("group-field", &self.group_field),
                ("negative-field", &self.negative_field),
            ],
            Format::Triplets => &[
                ("text-field", &self.text_field),
                ("group-field", &self.group_field),
            ],
        };
        if let Some((name, _)) = unused.iter().find(|(_, v)| v.is_some()) {
            return Err(Error::Config {
                key: format!("{key}.{name}"),
                problem: format!(
                    "is not used by format = \"{}\"",
                    serde_json::to_value(self.format)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ),
            });
        }
        Ok(match self.format {
            Format::Paragraphs => [
                given(&self.text_field, "text"),
                given(&self.group_field, "title"),
                String::new(),
            ],
            Format::Pairs => [
                given(&self.query_field, "title"),
                given(&self.positive_field, "text"),
                String::new(),
            ],
            Format::Triplets => [
                given(&self.query_field, "query"),
                given(&self.positive_field, "positive"),
                given(&self.negative_field, "negative"),
            ],
        })
    }

    /// `n` triplets sampled uniformly with `seed` (see [`Source::candidates`]).
    pub fn triplets(&self, key: &str, n: usize, seed: u64) -> Result<Vec<Triplet>> {
        Ok(sample(self.candidates(key, n, seed)?, n, seed))
    }

    /// Every triplet the file gives (negatives drawn with `seed`), at least `n`. `key` names this source in errors
    /// (`general`, `domain`). A record without a field is an error naming the file and line; fewer candidate
    /// triplets than `n` is an error naming the file, the count and `key`.
    pub fn candidates(&self, key: &str, n: usize, seed: u64) -> Result<Vec<Triplet>> {
        let fields = self.fields(key)?;
        let path = &self.data;
        let records: Vec<_> = read_jsonl(path)?.into_iter().skip(self.skip).collect();
        let mut rng = Rng::new(seed);
        let candidates: Vec<Triplet> = match self.format {
            Format::Triplets => records
                .iter()
                .map(|(line, r)| {
                    Ok([
                        text_field(path, *line, r, &fields[0])?,
                        text_field(path, *line, r, &fields[1])?,
                        text_field(path, *line, r, &fields[2])?,
                    ])
                })
                .collect::<Result<_>>()?,
            Format::Pairs => {
                let pairs = two_fields(path, &records, &fields)?;
                let m = pairs.len();
                (0..if m > 1 { m } else { 0 })
                    .map(|i| {
                        // Another record: an offset in 1..m.
                        let other = (i + 1 + rng.below(m - 1)) % m;
                        [
                            pairs[i].0.clone(),
                            pairs[i].1.clone(),
                            pairs[other].1.clone(),
                        ]
                    })
                    .collect()
            }
            Format::Paragraphs => {
                let paragraphs = two_fields(path, &records, &fields)?;
                let adjacent: Vec<usize> = (0..paragraphs.len().saturating_sub(1))
                    .filter(|&i| paragraphs[i].1 == paragraphs[i + 1].1)
                    .collect();
                let mut out = Vec::with_capacity(adjacent.len());
                for i in adjacent {
                    let group = &paragraphs[i].1;
                    let others = paragraphs.iter().filter(|p| &p.1 != group).count();
                    if others == 0 {
                        break;
                    }
                    // The `k`-th paragraph of another article.
                    let k = rng.below(others);
                    let Some(negative) = paragraphs.iter().filter(|p| &p.1 != group).nth(k) else {
                        break;
                    };
                    out.push([
                        paragraphs[i].0.clone(),
                        paragraphs[i + 1].0.clone(),
                        negative.0.clone(),
                    ]);
                }
                out
            }
        };
        if candidates.len() < n {
            let what = match self.format {
                Format::Paragraphs => "pairs of adjacent paragraphs of one article (with a paragraph of another article)",
                Format::Pairs => "records (with at least 2 records, for negatives)",
                Format::Triplets => "triplets",
            };
            return Err(Error::Config {
                key: format!("{key}.data"),
                problem: format!(
                    "`{}` gives {} {what} after skipping {} records; `triplets` asks for {n}\nhint: lower `triplets` or `{key}.skip`, or give a larger file",
                    path.display(),
                    candidates.len(),
                    self.skip
                ),
            });
        }
        Ok(candidates)
    }
}
