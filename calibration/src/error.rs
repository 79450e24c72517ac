//! The error type of `compressor-calibration`.
//!
//! Every variant names the file it is about (and the 1-based line and the field where that applies), and its
//! message reads well after `error: `. Causes (I/O, JSON, tokenizer errors) are kept as typed fields and shown at
//! the end of the message; they are deliberately *not* also returned by [`std::error::Error::source`], so that an
//! `anyhow` chain printed with `{:#}` does not repeat them.

use std::path::PathBuf;

/// `Result` with this crate's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while reading datasets or loading and running a tokenizer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A data or config file could not be read (missing, unreadable).
    #[error("cannot read `{}`: {cause}", .path.display())]
    ReadFile {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// A file is not UTF-8 text.
    #[error("{}:{line}: the file is not valid UTF-8 text", .path.display())]
    NotUtf8 { path: PathBuf, line: usize },

    /// A data file has no rows at all (only blank lines, or nothing).
    #[error("{}: the file is empty", .path.display())]
    EmptyFile { path: PathBuf },

    /// A TSV/CSV file has a header row but no data rows.
    #[error("{}: the file has a header row but no data rows", .path.display())]
    NoDataRows { path: PathBuf },

    /// A line of a JSONL file is not valid JSON.
    #[error("{}:{line}: invalid JSON: {cause}", .path.display())]
    InvalidJsonLine {
        path: PathBuf,
        line: usize,
        cause: serde_json::Error,
    },

    /// A whole-file JSON document (config.json, sentence_bert_config.json) is not valid JSON.
    #[error("{}: invalid JSON: {cause}", .path.display())]
    InvalidJsonFile {
        path: PathBuf,
        cause: serde_json::Error,
    },

    /// A JSONL line (or a JSON config file, `line` 0) holds something other than an object.
    #[error("{}{}: expected a JSON object, found {found}", .path.display(), at_line(*.line))]
    NotAnObject {
        path: PathBuf,
        line: usize,
        found: String,
    },

    /// A JSONL record lacks a field.
    #[error("{}:{line}: missing field `{field}` (fields here: {})", .path.display(), list(.available))]
    MissingField {
        path: PathBuf,
        line: usize,
        field: String,
        available: Vec<String>,
    },

    /// A field (of a JSONL record, `line` >= 1, or of a JSON config file, `line` 0) has the wrong type.
    #[error(
        "{}{}: field `{field}` is not {expected} (found {found})",
        .path.display(),
        at_line(*.line)
    )]
    WrongFieldType {
        path: PathBuf,
        line: usize,
        field: String,
        expected: &'static str,
        found: String,
    },

    /// A TSV/CSV header lacks the requested column.
    #[error("{}: no column `{column}` in the header row (columns: {})", .path.display(), list(.columns))]
    MissingColumn {
        path: PathBuf,
        column: String,
        columns: Vec<String>,
    },

    /// A TSV/CSV row has a different number of fields than the header.
    #[error("{}:{line}: expected {expected} fields (as in the header row), found {found}", .path.display())]
    FieldCount {
        path: PathBuf,
        line: usize,
        expected: usize,
        found: usize,
    },

    /// A CSV file breaks the RFC 4180 quoting rules.
    #[error("{}:{line}: {problem}", .path.display())]
    CsvSyntax {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },

    /// The data file's extension is not one this crate reads.
    #[error(
        "{}: unsupported data file type `{extension}` (expected .jsonl, .ndjson, .txt, .tsv or .csv)",
        .path.display()
    )]
    UnsupportedFormat { path: PathBuf, extension: String },

    /// Several fields were requested from a plain-text file.
    #[error(
        "{}: a .txt file holds one text per line, so it cannot provide {count} fields per record (use JSONL, TSV \
         or CSV)",
        .path.display()
    )]
    TextFileFields { path: PathBuf, count: usize },

    /// `tokenizer.json` could not be read.
    #[error("cannot read tokenizer `{}`: {cause}", .path.display())]
    ReadTokenizer {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// `tokenizer.json` could not be parsed by the `tokenizers` crate.
    #[error("cannot load tokenizer `{}`: {cause}", .path.display())]
    ParseTokenizer {
        path: PathBuf,
        cause: tokenizers::Error,
    },

    /// The tokenizer rejected the truncation settings.
    #[error("cannot set truncation to {max_length} tokens on tokenizer `{}`: {cause}", .path.display())]
    SetTruncation {
        path: PathBuf,
        max_length: usize,
        cause: tokenizers::Error,
    },

    /// The maximum length leaves no room for text once the special tokens are added.
    #[error(
        "max length {max_length} is too small for tokenizer `{}`: it adds {special_tokens} special tokens to a \
         pair of texts, so the max length must be at least {}",
        .path.display(),
        .special_tokens + 1
    )]
    MaxLengthTooSmall {
        path: PathBuf,
        max_length: usize,
        special_tokens: usize,
    },

    /// The requested maximum length exceeds what the model's position embeddings allow.
    #[error(
        "max length {max_length} exceeds the {positions} positions the model supports (`max_position_embeddings` \
         in `{}`)",
        .config.display()
    )]
    MaxLengthTooLarge {
        config: PathBuf,
        max_length: usize,
        positions: usize,
    },

    /// A `tokenizer.json` whose model type vocabulary trimming cannot rewrite.
    #[error(
        "`{}`: tokenizer model type `{model_type}` is not supported by vocabulary trimming (supported: WordPiece, \
         BPE, Unigram)",
        .path.display()
    )]
    UnsupportedTokenizer { path: PathBuf, model_type: String },

    /// A `tokenizer.json` (or tokenizer side file) that parses as JSON but lacks what we need, or contradicts itself.
    #[error("`{}`: {problem}", .path.display())]
    TokenizerFile { path: PathBuf, problem: String },

    /// A statistics cache entry that cannot be written.
    #[error("cannot write the statistics cache `{}`: {cause}\nhint: set COMPRESSOR_CACHE to a writable folder", .path.display())]
    Cache {
        path: PathBuf,
        cause: std::io::Error,
    },

    /// The tokenizer failed on an input.
    #[error("cannot tokenize with `{}`: {cause}", .path.display())]
    Encode {
        path: PathBuf,
        cause: tokenizers::Error,
    },
}

fn at_line(line: usize) -> String {
    if line == 0 {
        String::new()
    } else {
        format!(":{line}")
    }
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".to_string();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A short description of a JSON value for error messages: its kind and (truncated) text.
pub(crate) fn describe_json(value: &serde_json::Value) -> String {
    use serde_json::Value;
    let kind = match value {
        Value::Null => return "null".to_string(),
        Value::Bool(b) => return format!("boolean {b}"),
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let text = value.to_string();
    const MAX: usize = 60;
    if text.chars().count() > MAX {
        let cut: String = text.chars().take(MAX).collect();
        format!("{kind} {cut}…")
    } else {
        format!("{kind} {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn error_is_send_sync_static() {
        fn check<T: std::error::Error + Send + Sync + 'static>() {}
        check::<Error>();
    }

    #[test]
    fn describe_json_kinds() {
        assert_eq!(describe_json(&json!(null)), "null");
        assert_eq!(describe_json(&json!(true)), "boolean true");
        assert_eq!(describe_json(&json!(3)), "number 3");
        assert_eq!(describe_json(&json!("a")), "string \"a\"");
        assert_eq!(describe_json(&json!([1, 2])), "array [1,2]");
        let long = describe_json(&json!("x".repeat(100)));
        assert!(long.ends_with('…') && long.chars().count() == "string ".len() + 61);
    }

    #[test]
    fn line_zero_means_whole_file() {
        let e = Error::WrongFieldType {
            path: "m/config.json".into(),
            line: 0,
            field: "max_position_embeddings".into(),
            expected: "a positive integer",
            found: "string \"512\"".into(),
        };
        assert_eq!(
            e.to_string(),
            "m/config.json: field `max_position_embeddings` is not a positive integer (found string \"512\")"
        );
    }
}
