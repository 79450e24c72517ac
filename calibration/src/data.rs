//! Local datasets for calibration and evaluation: JSONL, plain text, TSV and CSV files, read strictly.
//!
//! Which reader is used depends on the file extension (case-insensitive):
//!
//! | extension | format | `field` means |
//! |---|---|---|
//! | `.jsonl`, `.ndjson`, `.json` | one JSON object per line; blank lines are skipped | the object's key |
//! | `.txt` | one text per non-blank line (a trailing `\r` is dropped) | ignored |
//! | `.tsv` | tab-separated, header row first | the column name |
//! | `.csv` | comma-separated with RFC 4180 quoting, header row first | the column name |
//!
//! CSV fields may be quoted (`"a, b"`), with doubled quotes inside (`"say ""hi"""`) and line breaks inside; a
//! quote inside an unquoted field is kept as a literal character (as Python's `csv` module does). TSV has no
//! quoting convention (GLUE's TSV files contain unbalanced quotes), so a TSV field is taken literally, except that
//! a field that is entirely wrapped in quotes with only doubled quotes inside (what pandas writes) is unquoted.
//!
//! Line numbers in errors are 1-based; a CSV record that spans lines is reported at the line where it starts.
//! A file without any record is an error ([`Error::EmptyFile`], [`Error::NoDataRows`]).

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{describe_json, Error, Result};

/// One JSONL record: a JSON object.
pub type Record = serde_json::Map<String, Value>;

/// Read a JSONL file: every non-blank line must be a JSON object. Returns `(1-based line, object)` pairs.
pub fn read_jsonl(path: &Path) -> Result<Vec<(usize, Record)>> {
    let text = read_text(path)?;
    let records = jsonl_records(path, &text).collect::<Result<Vec<_>>>()?;
    if records.is_empty() {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(records)
}

/// The string value of `field` in the JSONL record read from `path` at `line`.
pub fn text_field(path: &Path, line: usize, obj: &Record, field: &str) -> Result<String> {
    match get_field(path, line, obj, field)? {
        Value::String(s) => Ok(s.clone()),
        other => Err(wrong_type(path, line, field, "a string", other)),
    }
}

/// The numeric value of `field` in the JSONL record read from `path` at `line`.
pub fn number_field(path: &Path, line: usize, obj: &Record, field: &str) -> Result<f64> {
    let value = get_field(path, line, obj, field)?;
    value
        .as_f64()
        .ok_or_else(|| wrong_type(path, line, field, "a number", value))
}

/// The integer value of `field` in the JSONL record read from `path` at `line`. A float with no fractional part
/// (`1.0`, as pandas writes labels) is accepted.
pub fn int_field(path: &Path, line: usize, obj: &Record, field: &str) -> Result<i64> {
    let value = get_field(path, line, obj, field)?;
    if let Some(i) = value.as_i64() {
        return Ok(i);
    }
    match value.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(f as i64),
        _ => Err(wrong_type(path, line, field, "an integer", value)),
    }
}

/// Read up to `limit` texts from `path` (JSONL, `.txt`, TSV or CSV; see the module docs), taking `field` from each
/// record (ignored for `.txt`).
pub fn read_texts(path: &Path, field: &str, limit: Option<usize>) -> Result<Vec<String>> {
    let rows = read_text_fields(path, &[field], limit)?;
    Ok(rows
        .into_iter()
        .map(|mut row| row.pop().unwrap_or_default())
        .collect())
}

/// Read up to `limit` records from `path`, taking the string `fields` of each (for example
/// `["sentence1", "sentence2"]` for pairs). Returns one `Vec` with `fields.len()` texts per record. A `.txt` file
/// holds one text per line, so it can only be read with exactly one field (whose name is ignored).
pub fn read_text_fields(
    path: &Path,
    fields: &[&str],
    limit: Option<usize>,
) -> Result<Vec<Vec<String>>> {
    let format = Format::of(path)?;
    let text = read_text(path)?;
    let limit = limit.unwrap_or(usize::MAX);
    let mut out = Vec::new();
    let mut seen_any = false;
    let mut push = |row: Vec<String>, out: &mut Vec<Vec<String>>| -> bool {
        seen_any = true;
        if out.len() >= limit {
            return false;
        }
        out.push(row);
        out.len() < limit
    };
    match format {
        Format::Jsonl => {
            for record in jsonl_records(path, &text) {
                let (line, obj) = record?;
                let row = fields
                    .iter()
                    .map(|f| text_field(path, line, &obj, f))
                    .collect::<Result<Vec<_>>>()?;
                if !push(row, &mut out) {
                    break;
                }
            }
        }
        Format::Text => {
            if fields.len() != 1 {
                return Err(Error::TextFileFields {
                    path: path.to_path_buf(),
                    count: fields.len(),
                });
            }
            for line in text.lines() {
                let line = line.strip_suffix('\r').unwrap_or(line);
                if line.trim().is_empty() {
                    continue;
                }
                if !push(vec![line.to_string()], &mut out) {
                    break;
                }
            }
        }
        Format::Tsv | Format::Csv => {
            let mut rows: Box<dyn Iterator<Item = Result<(usize, Vec<String>)>>> =
                if format == Format::Tsv {
                    Box::new(TsvRows::new(&text))
                } else {
                    Box::new(CsvRows::new(path, &text, b','))
                };
            let header = match rows.next() {
                None => {
                    return Err(Error::EmptyFile {
                        path: path.to_path_buf(),
                    })
                }
                Some(h) => h?.1,
            };
            let columns = fields
                .iter()
                .map(|f| {
                    header
                        .iter()
                        .position(|h| h == f)
                        .ok_or_else(|| Error::MissingColumn {
                            path: path.to_path_buf(),
                            column: (*f).to_string(),
                            columns: header.clone(),
                        })
                })
                .collect::<Result<Vec<_>>>()?;
            let mut any_row = false;
            for row in rows {
                let (line, mut values) = row?;
                any_row = true;
                if values.len() != header.len() {
                    return Err(Error::FieldCount {
                        path: path.to_path_buf(),
                        line,
                        expected: header.len(),
                        found: values.len(),
                    });
                }
                let picked = columns
                    .iter()
                    .map(|&c| std::mem::take(&mut values[c]))
                    .collect();
                if !push(picked, &mut out) {
                    break;
                }
            }
            if !any_row {
                return Err(Error::NoDataRows {
                    path: path.to_path_buf(),
                });
            }
        }
    }
    if !seen_any {
        return Err(Error::EmptyFile {
            path: path.to_path_buf(),
        });
    }
    Ok(out)
}

/// Deterministically keep `n` of `items`, in their original order (all of them when `n >= items.len()`).
///
/// Algorithm: selection sampling (Knuth, TAOCP vol. 2, Algorithm S). Item `i` of `N` is kept when
/// `below(N - i) < n - kept`, where `below(m)` maps the next output of a [`SplitMix64`] generator seeded with `seed`
/// to `0..m` by multiply-shift (`(x * m) >> 64`). Every subset of size `n` is (up to that mapping's 2^-64 bias)
/// equally likely, exactly `n` items are kept, and the result depends only on `(items.len(), n, seed)`.
pub fn sample<T>(items: Vec<T>, n: usize, seed: u64) -> Vec<T> {
    let total = items.len();
    if n >= total {
        return items;
    }
    let mut rng = SplitMix64::new(seed);
    let mut kept = 0usize;
    let mut out = Vec::with_capacity(n);
    for (i, item) in items.into_iter().enumerate() {
        if kept == n {
            break;
        }
        let remaining = (total - i) as u64;
        if rng.below(remaining) < (n - kept) as u64 {
            out.push(item);
            kept += 1;
        }
    }
    out
}

/// Indices `0..lengths.len()` stably sorted by `lengths` (ascending): batch `order` in chunks to group similar
/// lengths (less padding), then write result `k` of the sorted run back to `order[k]`.
pub fn length_sorted_order(lengths: &[usize]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    order
}

pub use compressor_models::rng::SplitMix64;

// ---------------------------------------------------------------------------------------------------------------
// File formats

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Jsonl,
    Text,
    Tsv,
    Csv,
}

impl Format {
    fn of(path: &Path) -> Result<Self> {
        let ext = path
            .extension()
            .map(|e| e.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        match ext.as_str() {
            "jsonl" | "ndjson" | "json" => Ok(Self::Jsonl),
            "txt" => Ok(Self::Text),
            "tsv" => Ok(Self::Tsv),
            "csv" => Ok(Self::Csv),
            _ => Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
                extension: if ext.is_empty() {
                    "(no extension)".to_string()
                } else {
                    format!(".{ext}")
                },
            }),
        }
    }
}

/// Read a whole file as UTF-8, dropping a leading byte-order mark.
pub(crate) fn read_text(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).map_err(|cause| Error::ReadFile {
        path: path.to_path_buf(),
        cause,
    })?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let valid = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        Error::NotUtf8 {
            path: path.to_path_buf(),
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_string(),
        None => text,
    })
}

fn jsonl_records<'a>(
    path: &'a Path,
    text: &'a str,
) -> impl Iterator<Item = Result<(usize, Record)>> + 'a {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(move |(i, l)| {
            let line = i + 1;
            let value: Value = serde_json::from_str(l).map_err(|cause| Error::InvalidJsonLine {
                path: path.to_path_buf(),
                line,
                cause,
            })?;
            match value {
                Value::Object(obj) => Ok((line, obj)),
                other => Err(Error::NotAnObject {
                    path: path.to_path_buf(),
                    line,
                    found: describe_json(&other),
                }),
            }
        })
}

fn get_field<'a>(path: &Path, line: usize, obj: &'a Record, field: &str) -> Result<&'a Value> {
    obj.get(field).ok_or_else(|| Error::MissingField {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        available: obj.keys().cloned().collect(),
    })
}

fn wrong_type(
    path: &Path,
    line: usize,
    field: &str,
    expected: &'static str,
    found: &Value,
) -> Error {
    Error::WrongFieldType {
        path: path.to_path_buf(),
        line,
        field: field.to_string(),
        expected,
        found: describe_json(found),
    }
}

/// Rows of a TSV file: `(line, fields)`, blank lines skipped.
struct TsvRows<'a> {
    lines: std::iter::Enumerate<std::str::Lines<'a>>,
}

impl<'a> TsvRows<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            lines: text.lines().enumerate(),
        }
    }
}

impl Iterator for TsvRows<'_> {
    type Item = Result<(usize, Vec<String>)>;

    fn next(&mut self) -> Option<Self::Item> {
        for (i, line) in self.lines.by_ref() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if line.is_empty() {
                continue;
            }
            return Some(Ok((
                i + 1,
                line.split('\t').map(unquote_tsv_field).collect(),
            )));
        }
        None
    }
}

/// A TSV field taken literally, unless it is wrapped in quotes and every quote inside is doubled.
fn unquote_tsv_field(field: &str) -> String {
    let inner = match field.strip_prefix('"').and_then(|f| f.strip_suffix('"')) {
        Some(inner) if field.len() >= 2 => inner,
        _ => return field.to_string(),
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '"' && chars.next() != Some('"') {
            return field.to_string();
        }
        out.push(c);
    }
    out
}

/// Records of an RFC 4180 file: `(line where the record starts, fields)`. Empty lines are skipped.
struct CsvRows<'a> {
    path: PathBuf,
    text: &'a [u8],
    src: &'a str,
    pos: usize,
    line: usize,
    delim: u8,
    failed: bool,
}

impl<'a> CsvRows<'a> {
    fn new(path: &Path, text: &'a str, delim: u8) -> Self {
        Self {
            path: path.to_path_buf(),
            text: text.as_bytes(),
            src: text,
            pos: 0,
            line: 1,
            delim,
            failed: false,
        }
    }

    fn error(&mut self, line: usize, problem: &'static str) -> Error {
        self.failed = true;
        Error::CsvSyntax {
            path: self.path.clone(),
            line,
            problem,
        }
    }

    /// Consume a line break at `pos` if there is one (`\n` or `\r\n`); true if consumed or at the end.
    fn at_record_end(&mut self) -> bool {
        let t = self.text;
        if self.pos >= t.len() {
            return true;
        }
        if t[self.pos] == b'\n' {
            self.pos += 1;
            self.line += 1;
            return true;
        }
        if t[self.pos] == b'\r' && t.get(self.pos + 1) == Some(&b'\n') {
            self.pos += 2;
            self.line += 1;
            return true;
        }
        false
    }

    fn record(&mut self) -> Result<(usize, Vec<String>)> {
        let t = self.text;
        let start_line = self.line;
        let mut fields = Vec::new();
        loop {
            // One field starts at `pos`. Byte slicing is safe: we only stop at ASCII bytes.
            if t.get(self.pos) == Some(&b'"') {
                let quote_line = self.line;
                self.pos += 1;
                let mut value = String::new();
                loop {
                    let Some(off) = t[self.pos..].iter().position(|&b| b == b'"') else {
                        return Err(
                            self.error(quote_line, "unterminated quoted field (it starts here)")
                        );
                    };
                    let chunk = &self.src[self.pos..self.pos + off];
                    self.line += chunk.bytes().filter(|&b| b == b'\n').count();
                    value.push_str(chunk);
                    self.pos += off + 1;
                    if t.get(self.pos) == Some(&b'"') {
                        value.push('"');
                        self.pos += 1;
                    } else {
                        break;
                    }
                }
                fields.push(value);
                if t.get(self.pos) == Some(&self.delim) {
                    self.pos += 1;
                    continue;
                }
                if self.at_record_end() {
                    return Ok((start_line, fields));
                }
                let line = self.line;
                return Err(self.error(
                    line,
                    "unexpected character after a closing quote (inside a quoted field, write a quote as \"\")",
                ));
            }
            let start = self.pos;
            while self.pos < t.len()
                && t[self.pos] != self.delim
                && t[self.pos] != b'\n'
                && !(t[self.pos] == b'\r' && t.get(self.pos + 1) == Some(&b'\n'))
            {
                self.pos += 1;
            }
            fields.push(self.src[start..self.pos].to_string());
            if t.get(self.pos) == Some(&self.delim) {
                self.pos += 1;
                continue;
            }
            self.at_record_end();
            return Ok((start_line, fields));
        }
    }
}

impl Iterator for CsvRows<'_> {
    type Item = Result<(usize, Vec<String>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.failed || self.pos >= self.text.len() {
                return None;
            }
            // Skip empty lines.
            let before = self.pos;
            if self.at_record_end() && self.pos != before {
                continue;
            }
            return Some(self.record());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csv(text: &str) -> Vec<(usize, Vec<String>)> {
        CsvRows::new(Path::new("t.csv"), text, b',')
            .collect::<Result<Vec<_>>>()
            .expect("valid csv")
    }

    fn row(line: usize, fields: &[&str]) -> (usize, Vec<String>) {
        (line, fields.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn csv_rfc4180() {
        let rows = csv("a,b\r\n\"x, y\",\"say \"\"hi\"\"\"\n\"multi\nline\",plain\n\n,\nlast,\"\"");
        assert_eq!(
            rows,
            vec![
                row(1, &["a", "b"]),
                row(2, &["x, y", "say \"hi\""]),
                row(3, &["multi\nline", "plain"]),
                row(6, &["", ""]),
                row(7, &["last", ""]),
            ]
        );
        // A quote inside an unquoted field is literal.
        assert_eq!(csv("5\" tall,b"), vec![row(1, &["5\" tall", "b"])]);
    }

    #[test]
    fn csv_errors() {
        let err = |text: &str| {
            CsvRows::new(Path::new("t.csv"), text, b',')
                .collect::<Result<Vec<_>>>()
                .expect_err("invalid csv")
                .to_string()
        };
        assert_eq!(
            err("a,b\n\"open,b\nmore\n"),
            "t.csv:2: unterminated quoted field (it starts here)"
        );
        assert_eq!(
            err("a,b\nx,\"q\"z\n"),
            "t.csv:2: unexpected character after a closing quote (inside a quoted field, write a quote as \"\")"
        );
    }

    #[test]
    fn tsv_fields() {
        assert_eq!(unquote_tsv_field("plain"), "plain");
        assert_eq!(
            unquote_tsv_field("\"pandas \"\"quoted\"\"\""),
            "pandas \"quoted\""
        );
        assert_eq!(unquote_tsv_field("\"GLUE unbalanced"), "\"GLUE unbalanced");
        assert_eq!(unquote_tsv_field("\"a\" and \"b\""), "\"a\" and \"b\"");
        assert_eq!(unquote_tsv_field("\""), "\"");
        assert_eq!(unquote_tsv_field("\"\""), "");
    }

    #[test]
    fn splitmix64_reference_values() {
        // First outputs for seed 1234567 from the reference C implementation (also used by xoshiro's tests).
        let mut rng = SplitMix64::new(1_234_567);
        let got: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(
            got,
            vec![
                6_457_827_717_110_365_317,
                3_203_168_211_198_807_973,
                9_817_491_932_198_370_423
            ]
        );
    }

    #[test]
    fn sample_is_exact_ordered_and_deterministic() {
        let items: Vec<usize> = (0..100).collect();
        let a = sample(items.clone(), 10, 7);
        assert_eq!(a.len(), 10);
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(a, sample(items.clone(), 10, 7));
        assert_ne!(a, sample(items.clone(), 10, 8));
        assert_eq!(sample(items.clone(), 100, 7), items);
        assert_eq!(sample(items.clone(), 1000, 7), items);
        assert!(sample(items, 0, 7).is_empty());
    }

    #[test]
    fn sample_is_roughly_uniform() {
        let mut hits = [0usize; 10];
        for seed in 0..2000 {
            for i in sample((0..10).collect::<Vec<usize>>(), 3, seed) {
                hits[i] += 1;
            }
        }
        // Each index is expected 600 times.
        assert!(hits.iter().all(|&h| (500..700).contains(&h)), "{hits:?}");
    }

    #[test]
    fn length_sorted_order_is_stable() {
        assert_eq!(length_sorted_order(&[3, 1, 2, 1, 3]), vec![1, 3, 2, 0, 4]);
        assert!(length_sorted_order(&[]).is_empty());
    }
}
