//! `TensorStore`: a checkpoint's safetensors (one file or shards) memory-mapped, plus a copy-on-write overlay of
//! changed tensors, addressed by canonical name (model prefix stripped).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::arch::ModelConfig;
use crate::error::{Error, Result};
use crate::names::TensorSpec;
use crate::st::SafetensorsFile;
use crate::tensor::{DType, HostTensor};

/// Everything wrong between a store and its architecture, listed at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationReport {
    pub missing: Vec<String>,
    pub unexpected: Vec<String>,
    /// (name, expected, found)
    pub mis_shaped: Vec<(String, Vec<usize>, Vec<usize>)>,
    /// (name, dtype) of parameters whose dtype is not a float type.
    pub bad_dtype: Vec<(String, DType)>,
}

impl ValidationReport {
    pub fn is_ok(&self) -> bool {
        self.missing.is_empty()
            && self.unexpected.is_empty()
            && self.mis_shaped.is_empty()
            && self.bad_dtype.is_empty()
    }
}

impl std::fmt::Display for ValidationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut lines = Vec::new();
        for (name, expected, got) in &self.mis_shaped {
            lines.push(format!(
                "  tensor `{name}` has shape {got:?}, the config implies {expected:?}"
            ));
        }
        for name in &self.missing {
            lines.push(format!("  tensor `{name}` is missing"));
        }
        for name in &self.unexpected {
            lines.push(format!("  tensor `{name}` is not part of the architecture"));
        }
        for (name, dtype) in &self.bad_dtype {
            lines.push(format!(
                "  tensor `{name}` has dtype {dtype}, expected F32, F16 or BF16"
            ));
        }
        write!(f, "{}", lines.join("\n"))
    }
}

#[derive(Debug, Clone)]
enum Entry {
    File { file: usize, key: String },
    Owned(HostTensor),
}

/// The tensors of one model, by canonical name.
#[derive(Debug)]
pub struct TensorStore {
    files: Vec<SafetensorsFile>,
    entries: BTreeMap<String, Entry>,
    /// The model prefix found in the checkpoint (`bert.`), or empty.
    pub prefix: String,
    /// `__metadata__` of the first file.
    pub metadata: BTreeMap<String, String>,
}

impl TensorStore {
    /// Open the safetensors weights of a checkpoint folder (`model.safetensors` or a sharded index), stripping the
    /// model prefix that `config` expects (`bert.`) when every non-head tensor carries it.
    pub fn open(dir: &Path, config: &ModelConfig) -> Result<Self> {
        let files = weight_files(dir)?
            .iter()
            .map(|p| SafetensorsFile::open(p))
            .collect::<Result<Vec<_>>>()?;
        Self::from_files(files, config)
    }

    fn from_files(files: Vec<SafetensorsFile>, config: &ModelConfig) -> Result<Self> {
        let prefix = config.model_prefix();
        let all: Vec<&String> = files.iter().flat_map(|f| f.tensors.keys()).collect();
        let body: Vec<&&String> = all.iter().filter(|k| !config.is_head_tensor(k)).collect();
        let prefixed = !body.is_empty() && body.iter().all(|k| k.starts_with(prefix));
        let prefix = if prefixed {
            prefix.to_string()
        } else {
            String::new()
        };
        let mut entries = BTreeMap::new();
        for (i, f) in files.iter().enumerate() {
            for key in f.tensors.keys() {
                let canonical = key.strip_prefix(prefix.as_str()).unwrap_or(key).to_string();
                if entries.contains_key(&canonical) {
                    return Err(Error::Safetensors {
                        path: f.path.clone(),
                        problem: format!("tensor `{key}` appears twice in the checkpoint"),
                    });
                }
                entries.insert(
                    canonical,
                    Entry::File {
                        file: i,
                        key: key.clone(),
                    },
                );
            }
        }
        let metadata = files
            .first()
            .map(|f| f.metadata.clone())
            .unwrap_or_default();
        Ok(Self {
            files,
            entries,
            prefix,
            metadata,
        })
    }

    /// An empty store (for tests and builders).
    pub fn empty() -> Self {
        Self {
            files: Vec::new(),
            entries: BTreeMap::new(),
            prefix: String::new(),
            metadata: BTreeMap::new(),
        }
    }

    /// Canonical names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Dtype and shape from metadata alone (no data read).
    pub fn info(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        match self.entries.get(name)? {
            Entry::File { file, key } => self.files[*file]
                .tensors
                .get(key)
                .map(|t| (t.dtype, t.shape.clone())),
            Entry::Owned(t) => Some((t.dtype, t.shape.clone())),
        }
    }

    /// The tensor (mapped bytes for unchanged tensors, no copy).
    pub fn get(&self, name: &str) -> Result<HostTensor> {
        match self.entries.get(name) {
            Some(Entry::File { file, key }) => self.files[*file].tensor(key),
            Some(Entry::Owned(t)) => Ok(t.clone()),
            None => Err(Error::TensorNotFound { name: name.into() }),
        }
    }

    /// The tensor as f32 values, checking its shape.
    pub fn get_f32(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let t = self.get(name)?;
        if t.shape != shape {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: shape.to_vec(),
                got: t.shape.clone(),
            });
        }
        t.to_f32(name)
    }

    /// Replace or add a tensor (copy-on-write overlay).
    pub fn set(&mut self, name: &str, tensor: HostTensor) {
        self.entries.insert(name.to_string(), Entry::Owned(tensor));
    }

    /// Keep only rows `rows` (in the order given) of tensor `name` along its first dimension, in its stored
    /// encoding (e.g. vocabulary trimming of an embedding). An index past the end is an error naming the tensor.
    pub fn select_rows(&mut self, name: &str, rows: &[usize]) -> Result<()> {
        let t = self.get(name)?;
        let Some(&n) = t.shape.first() else {
            return Err(Error::Runtime(format!(
                "tensor `{name}` is a scalar and has no rows to select"
            )));
        };
        if let Some(&bad) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::Runtime(format!(
                "row {bad} of tensor `{name}` does not exist (it has {n} rows)"
            )));
        }
        let row_bytes = t.nbytes() / n.max(1);
        let src = t.bytes();
        let mut out = Vec::with_capacity(rows.len() * row_bytes);
        for &r in rows {
            out.extend_from_slice(&src[r * row_bytes..(r + 1) * row_bytes]);
        }
        let mut shape = t.shape.clone();
        shape[0] = rows.len();
        self.set(name, HostTensor::from_bytes(t.dtype, shape, out)?);
        Ok(())
    }

    pub fn remove(&mut self, name: &str) -> Option<HostTensor> {
        let t = self.get(name).ok();
        self.entries.remove(name);
        t
    }

    /// Whether the tensor was changed since loading.
    pub fn is_changed(&self, name: &str) -> bool {
        matches!(self.entries.get(name), Some(Entry::Owned(_)))
    }

    /// The name the tensor carries on disk (prefix restored, head tensors unprefixed).
    pub fn disk_name(&self, config: &ModelConfig, canonical: &str) -> String {
        if self.prefix.is_empty() || config.is_head_tensor(canonical) {
            canonical.to_string()
        } else {
            format!("{}{canonical}", self.prefix)
        }
    }

    /// Total bytes of all tensors as stored now.
    pub fn total_bytes(&self) -> usize {
        self.entries
            .keys()
            .filter_map(|n| self.info(n))
            .map(|(dt, shape)| shape.iter().product::<usize>() * dt.size())
            .sum()
    }

    /// Compare the store with what `config` expects: every missing, unexpected and mis-shaped tensor.
    pub fn validate(&self, config: &ModelConfig) -> ValidationReport {
        let expected = config.expected_tensors();
        let mut report = ValidationReport::default();
        let mut known: BTreeSet<&str> = BTreeSet::new();
        let optional_groups_present = |spec: &TensorSpec| {
            // An optional group (the pooler's weight + bias) is all-or-nothing.
            expected
                .iter()
                .filter(|t| {
                    t.optional && t.role == spec.role && t.kind != crate::names::Kind::Buffer
                })
                .any(|t| self.contains(&t.name))
        };
        for spec in &expected {
            known.insert(&spec.name);
            match self.info(&spec.name) {
                None => {
                    let required = !spec.optional
                        || (spec.kind != crate::names::Kind::Buffer
                            && optional_groups_present(spec));
                    if required {
                        report.missing.push(spec.name.clone());
                    }
                }
                Some((dtype, shape)) => {
                    if shape != spec.shape {
                        report
                            .mis_shaped
                            .push((spec.name.clone(), spec.shape.clone(), shape));
                    }
                    if spec.kind != crate::names::Kind::Buffer && !dtype.is_float() {
                        report.bad_dtype.push((spec.name.clone(), dtype));
                    }
                }
            }
        }
        for name in self.names() {
            if !known.contains(name) && !is_tolerated_buffer(name) {
                report.unexpected.push(self.disk_like(name));
            }
        }
        report
    }

    fn disk_like(&self, canonical: &str) -> String {
        match self.entries.get(canonical) {
            Some(Entry::File { key, .. }) => key.clone(),
            _ => canonical.to_string(),
        }
    }

    /// `validate` as a `Result`.
    pub fn check(&self, config: &ModelConfig) -> Result<()> {
        let report = self.validate(config);
        if report.is_ok() {
            Ok(())
        } else {
            Err(Error::Invalid(report))
        }
    }

    /// Fail on the first float tensor holding NaN or Inf, naming it.
    pub fn check_finite(&self) -> Result<()> {
        for name in self.names() {
            self.get(name)?.check_finite(name)?;
        }
        Ok(())
    }

    /// The paths of the files backing the store.
    pub fn file_paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|f| f.path.clone()).collect()
    }
}

/// Buffers that some BERT checkpoints carry and that are not parameters.
fn is_tolerated_buffer(name: &str) -> bool {
    name == "embeddings.token_type_ids"
}

/// The safetensors files of a checkpoint folder: `model.safetensors`, or the shards named by
/// `model.safetensors.index.json`. Pickle-only folders are refused.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        let value = crate::arch::read_json(&index)?;
        let map = value
            .get("weight_map")
            .and_then(Value::as_object)
            .ok_or_else(|| Error::ConfigKey {
                path: index.clone(),
                key: "weight_map".into(),
                problem: "is missing or not an object".into(),
            })?;
        let mut shards: BTreeSet<String> = BTreeSet::new();
        for (tensor, file) in map {
            let file = file.as_str().ok_or_else(|| Error::ConfigKey {
                path: index.clone(),
                key: format!("weight_map.{tensor}"),
                problem: "must be a file name".into(),
            })?;
            if file.contains('/') || file.contains("..") {
                return Err(Error::ConfigKey {
                    path: index.clone(),
                    key: format!("weight_map.{tensor}"),
                    problem: format!("`{file}` must be a file name inside the checkpoint folder"),
                });
            }
            shards.insert(file.to_string());
        }
        return Ok(shards.into_iter().map(|s| dir.join(s)).collect());
    }
    if dir.join("pytorch_model.bin").is_file() || dir.join("pytorch_model.bin.index.json").is_file()
    {
        return Err(Error::PickleCheckpoint {
            dir: dir.to_path_buf(),
        });
    }
    Err(Error::NoWeights {
        dir: dir.to_path_buf(),
    })
}
