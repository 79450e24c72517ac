//! Rows of evaluation data: named fields of JSONL records or TSV/CSV columns, with file and line for errors.

use std::path::{Path, PathBuf};

use compressor_calibration::data::{read_jsonl, read_text_fields};
use serde_json::Value;

use super::{Result, TaskError};

/// One data row: where it came from and the requested fields' values, in the requested order.
#[derive(Debug, Clone)]
pub struct Row {
    pub path: PathBuf,
    pub line: usize,
    pub values: Vec<Value>,
}

fn is_jsonl(path: &Path) -> bool {
    matches!(
        path.extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("jsonl" | "ndjson" | "json")
    )
}

/// Read `fields` of every row of `path` (first `limit` rows when given). Missing fields are errors naming the
/// file, line and field.
pub fn load_rows(path: &Path, fields: &[&str], limit: Option<usize>) -> Result<Vec<Row>> {
    if is_jsonl(path) {
        let mut records = read_jsonl(path)?;
        if let Some(n) = limit {
            records.truncate(n);
        }
        records
            .into_iter()
            .map(|(line, obj)| {
                let values = fields
                    .iter()
                    .map(|f| {
                        obj.get(*f).cloned().ok_or_else(|| {
                            let mut available: Vec<&str> = obj.keys().map(String::as_str).collect();
                            available.sort_unstable();
                            TaskError::Field {
                                path: path.to_path_buf(),
                                line,
                                field: f.to_string(),
                                problem: format!(
                                    "is missing (fields here: {})",
                                    available.join(", ")
                                ),
                            }
                        })
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Row {
                    path: path.to_path_buf(),
                    line,
                    values,
                })
            })
            .collect()
    } else {
        // TSV / CSV: header on line 1, so data row i is on line i + 2 (records spanning lines shift this).
        let rows = read_text_fields(path, fields, limit)?;
        Ok(rows
            .into_iter()
            .enumerate()
            .map(|(i, r)| Row {
                path: path.to_path_buf(),
                line: i + 2,
                values: r.into_iter().map(Value::String).collect(),
            })
            .collect())
    }
}

impl Row {
    fn err(&self, field: &str, problem: String) -> TaskError {
        TaskError::Field {
            path: self.path.clone(),
            line: self.line,
            field: field.to_string(),
            problem,
        }
    }

    /// Field `i` (named `field`) as text.
    pub fn text(&self, i: usize, field: &str) -> Result<String> {
        match &self.values[i] {
            Value::String(s) => Ok(s.clone()),
            other => Err(self.err(field, format!("must be a string, found {}", short(other)))),
        }
    }

    /// Field `i` as a finite number (numeric strings from TSV/CSV accepted).
    pub fn number(&self, i: usize, field: &str) -> Result<f64> {
        let v = match &self.values[i] {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok(),
            _ => None,
        };
        match v {
            Some(x) if x.is_finite() => Ok(x),
            _ => Err(self.err(
                field,
                format!("must be a number, found {}", short(&self.values[i])),
            )),
        }
    }

    /// Field `i` as a label key: integers and strings both allowed (`1`, `"1"`, `"business"`).
    pub fn label(&self, i: usize, field: &str) -> Result<String> {
        match &self.values[i] {
            Value::String(s) if !s.is_empty() => Ok(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Ok(n.to_string()),
            Value::Number(n) if n.as_f64().is_some_and(|x| x.fract() == 0.0) => {
                Ok(format!("{}", n.as_f64().unwrap_or_default() as i64))
            }
            Value::Bool(b) => Ok(if *b { "1".into() } else { "0".into() }),
            other => Err(self.err(
                field,
                format!(
                    "must be a label (integer or string), found {}",
                    short(other)
                ),
            )),
        }
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}...", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}
