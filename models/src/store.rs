//! `TensorStore`: a checkpoint's safetensors (one file or shards) memory-mapped, plus a copy-on-write overlay of
//! changed tensors, addressed by canonical name (model prefix stripped).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::Value;

use crate::arch::ModelConfig;
use crate::error::{Error, Result};
use crate::forms::{self, Form, FormKind, Stored};
use crate::names::{Role, TensorSpec};
use crate::quant::ct::{CtConfig, ModuleClass};
use crate::quant::{Encoding, QuantTensor};
use crate::st::{self, SafetensorsFile};
use crate::tensor::{DType, HostTensor};

use crate::error::thousands;
pub use crate::error::{ValidationReport, LISTED_PROBLEMS};

#[derive(Debug, Clone)]
enum Entry {
    /// A dense tensor of one of the files, unchanged.
    File { file: usize, key: String },
    /// A tensor in any storage form (read from its parts, or set since loading).
    Stored(Stored),
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
        check_sizes(&files, config)?;
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
        let mut store = Self {
            files,
            entries,
            prefix,
            metadata,
        };
        store.decode_forms(config)?;
        Ok(store)
    }

    /// Replace the parts of every tensor stored in a non-dense form (forms.rs: compressed-tensors
    /// `M.weight_packed` / `weight_scale` / `weight_shape` / `weight_zero_point` or an int8 `M.weight` with its
    /// scale; low-rank `M.weight_u` / `weight_v`; sparse `M.weight_bitmask` or `weight_indices` with
    /// `weight_values` and `weight_shape`) by one stored `M.weight`. Quantized sizes are checked against config.json's
    /// `quantization_config`; the encodings of quantized low-rank factors come from the safetensors metadata
    /// [`forms::METADATA_KEY`], which is consumed here (the writer regenerates it).
    fn decode_forms(&mut self, config: &ModelConfig) -> Result<()> {
        let path = config.path.clone();
        let ct = CtConfig::from_config(&config.raw).map_err(|problem| Error::ConfigKey {
            path: path.clone(),
            key: "quantization_config".into(),
            problem,
        })?;
        let described = self.forms_metadata()?;
        let mut groups: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for name in self.entries.keys() {
            if let Some((base, suffix)) = forms::split_part(name) {
                groups
                    .entry(base.to_string())
                    .or_default()
                    .insert(suffix.to_string());
            }
        }
        let int8: BTreeSet<String> = match &ct {
            Some(_) => self
                .entries
                .keys()
                .filter(|k| k.ends_with(".weight"))
                .filter(|k| self.info(k).is_some_and(|(d, _)| d == DType::I8))
                .cloned()
                .collect(),
            None => BTreeSet::new(),
        };
        for name in &int8 {
            groups.entry(name.clone()).or_default();
        }
        if groups.is_empty() {
            return Ok(());
        }
        let specs: BTreeMap<String, (Role, Vec<usize>)> = config
            .expected_tensors()
            .into_iter()
            .map(|s| (s.name, (s.role, s.shape)))
            .collect();
        for (weight, suffixes) in groups {
            let kind =
                FormKind::identify(&suffixes, int8.contains(&weight)).map_err(|problem| {
                    Error::StoredForm {
                        path: path.clone(),
                        name: weight.clone(),
                        form: "unknown form",
                        problem,
                    }
                })?;
            // The encoding of a quantized matrix: a module's from its config group, a factor's from the metadata.
            let encoding = |base: &str| -> std::result::Result<(Encoding, String), String> {
                if base != weight {
                    return match described.get(&weight) {
                        Some(Form::LowRank { u, v, .. }) => {
                            let f = if base.ends_with("_u") { u } else { v };
                            match f {
                                forms::FactorForm::Quant { encoding } => Ok((
                                    *encoding,
                                    format!("`{}` metadata", forms::METADATA_KEY),
                                )),
                                forms::FactorForm::Dense { .. } => Err(format!(
                                    "`{}` is quantized, but the `{}` metadata describes it as dense",
                                    crate::quant::ct::leaf(base),
                                    forms::METADATA_KEY
                                )),
                            }
                        }
                        Some(Form::Sparse {
                            encoding: Some(encoding),
                            ..
                        }) => Ok((*encoding, format!("`{}` metadata", forms::METADATA_KEY))),
                        _ => Err(format!(
                            "`{}` is quantized, but the `{}` metadata of the safetensors header does not describe its encoding",
                            crate::quant::ct::leaf(base),
                            forms::METADATA_KEY
                        )),
                    };
                }
                let Some(ct) = &ct else {
                    return Err("the weights are quantized but config.json has no compressed-tensors `quantization_config`".into());
                };
                let class = match specs.get(&weight) {
                    Some((Role::EmbedTokens | Role::EmbedPositions | Role::EmbedTypes, _)) => {
                        ModuleClass::Embedding
                    }
                    Some(_) => ModuleClass::Linear,
                    None => return Err("is not a weight of this architecture".into()),
                };
                // Targets name modules as the loader sees them: with the model prefix (`bert.`) where the file
                // has it.
                let disk_module = self.disk_name(config, &weight);
                let disk_module = disk_module.trim_end_matches(".weight");
                let group = ct.group_for(disk_module, class).ok_or_else(|| {
                    "no `quantization_config.config_groups` entry targets this module".to_string()
                })?;
                Ok((group.encoding, format!("config group `{}`", group.name)))
            };
            let part = |name: &str| self.get(name).ok();
            let stored = Stored::read(kind, &weight, &part, &encoding).map_err(|e| match kind {
                FormKind::Quant => Error::Quantized {
                    path: path.clone(),
                    name: e.name,
                    problem: e.problem,
                },
                _ => Error::StoredForm {
                    path: path.clone(),
                    name: e.name,
                    form: kind.name(),
                    problem: e.problem,
                },
            })?;
            if let Some((_, expected)) = specs.get(&weight) {
                if stored.shape()[..] != expected[..] {
                    let problem = format!(
                        "holds a {:?} matrix, but the config implies {expected:?}",
                        stored.shape()
                    );
                    return Err(match kind {
                        FormKind::Quant => Error::Quantized {
                            path: path.clone(),
                            name: weight.clone(),
                            problem,
                        },
                        _ => Error::StoredForm {
                            path: path.clone(),
                            name: weight.clone(),
                            form: kind.name(),
                            problem,
                        },
                    });
                }
            }
            for suffix in &suffixes {
                self.entries.remove(&format!("{weight}{suffix}"));
            }
            self.entries.insert(weight, Entry::Stored(stored));
        }
        Ok(())
    }

    /// The [`forms::METADATA_KEY`] description of the files, by canonical name, taken out of `metadata`.
    fn forms_metadata(&mut self) -> Result<BTreeMap<String, Form>> {
        let mut out = BTreeMap::new();
        self.metadata.remove(forms::METADATA_KEY);
        for f in &self.files {
            let Some(text) = f.metadata.get(forms::METADATA_KEY) else {
                continue;
            };
            let described: BTreeMap<String, Form> =
                serde_json::from_str(text).map_err(|e| Error::Safetensors {
                    path: f.path.clone(),
                    problem: format!("`__metadata__.{}` is not valid: {e}", forms::METADATA_KEY),
                })?;
            for (name, form) in described {
                let canonical = name.strip_prefix(self.prefix.as_str()).unwrap_or(&name);
                out.insert(canonical.to_string(), form);
            }
        }
        Ok(out)
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

    /// Dtype and shape from metadata alone (no data read): of the dense tensor `get` gives.
    pub fn info(&self, name: &str) -> Option<(DType, Vec<usize>)> {
        match self.entries.get(name)? {
            Entry::File { file, key } => self.files[*file]
                .tensors
                .get(key)
                .map(|t| (t.dtype, t.shape.clone())),
            Entry::Stored(s) => Some((s.dtype(), s.shape())),
        }
    }

    /// The storage form of a tensor (metadata only).
    pub fn form(&self, name: &str) -> Option<Form> {
        match self.entries.get(name)? {
            Entry::File { .. } => self.info(name).map(|(dtype, _)| Form::Dense { dtype }),
            Entry::Stored(s) => Some(s.form()),
        }
    }

    /// The tensor in its storage form (mapped bytes for unchanged tensors, no copy).
    pub fn stored(&self, name: &str) -> Result<Stored> {
        match self.entries.get(name) {
            Some(Entry::Stored(s)) => Ok(s.clone()),
            Some(Entry::File { file, key }) => self.files[*file].tensor(key).map(Stored::Dense),
            None => Err(Error::TensorNotFound { name: name.into() }),
        }
    }

    /// Replace or add a tensor in any storage form (it reads back dense through `get`).
    pub fn set_stored(&mut self, name: &str, stored: Stored) {
        self.entries.insert(name.to_string(), Entry::Stored(stored));
    }

    /// The encoding of a quantized tensor, `None` for every other form.
    pub fn encoding(&self, name: &str) -> Option<Encoding> {
        self.form(name)?.encoding()
    }

    /// The codes and scales of a quantized tensor, `None` for every other form.
    pub fn get_quant(&self, name: &str) -> Option<Arc<QuantTensor>> {
        match self.entries.get(name)? {
            Entry::Stored(Stored::Quant(q)) => Some(q.clone()),
            _ => None,
        }
    }

    /// Store `name` as integer codes (it reads back dequantized, as f32). A tensor stored sparse (of the same
    /// shape) stays sparse: its mask is kept and only the codes of its stored values are written, the pruned
    /// elements decode to exactly 0 ([`forms::Sparse::with_quantized_values`]).
    pub fn set_quant(&mut self, name: &str, q: QuantTensor) {
        if let Some(Entry::Stored(Stored::Sparse(s))) = self.entries.get(name) {
            if s.shape() == (q.rows, q.cols) {
                if let Ok(sparse) = s.with_quantized_values(q.clone()) {
                    self.set_stored(name, Stored::Sparse(sparse));
                    return;
                }
            }
        }
        self.set_stored(name, Stored::Quant(Arc::new(q)));
    }

    /// Which elements of `name` (row-major) are stored, when it is stored sparse: pruned elements are `false`.
    pub fn sparse_mask(&self, name: &str) -> Option<Vec<bool>> {
        match self.entries.get(name)? {
            Entry::Stored(Stored::Sparse(s)) => Some(s.stored_mask()),
            _ => None,
        }
    }

    /// Replace every tensor stored in a non-dense form by its dense decoding (for dense export): quantized and
    /// low-rank ones as f32, sparse ones in their values' dtype. Returns how many were decoded.
    pub fn densify_all(&mut self) -> Result<usize> {
        let names: Vec<String> = self
            .entries
            .iter()
            .filter(|(_, e)| matches!(e, Entry::Stored(s) if s.kind() != FormKind::Dense))
            .map(|(n, _)| n.clone())
            .collect();
        for name in &names {
            let dense = self.get(name)?;
            self.set(name, dense);
        }
        Ok(names.len())
    }

    /// Bytes the tensor takes on disk: the sum of its parts ([`Stored::stored_bytes`]).
    pub fn stored_bytes(&self, name: &str) -> usize {
        match self.entries.get(name) {
            Some(Entry::Stored(s)) => s.stored_bytes(),
            Some(Entry::File { .. }) => self
                .info(name)
                .map_or(0, |(dt, shape)| shape.iter().product::<usize>() * dt.size()),
            None => 0,
        }
    }

    /// Quantized modules (`M` of `M.weight`, named as on disk: with the model prefix where the checkpoint has it)
    /// with their encodings, sorted by canonical name. Quantized low-rank factors are not modules and not listed.
    pub fn quantized_modules(&self, config: &ModelConfig) -> Vec<(String, Encoding)> {
        self.entries
            .iter()
            .filter_map(|(n, e)| match e {
                Entry::Stored(Stored::Quant(q)) => Some((
                    self.disk_name(config, n)
                        .trim_end_matches(".weight")
                        .to_string(),
                    q.encoding,
                )),
                _ => None,
            })
            .collect()
    }

    /// Every tensor as it is written to disk, by on-disk name (prefix restored), sorted: dense tensors as they are,
    /// every other form as its parts ([`Stored::write_parts`]; quantized ones as compressed-tensors parts).
    pub fn disk_tensors(&self, config: &ModelConfig) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::with_capacity(self.entries.len());
        for (name, entry) in &self.entries {
            let disk = self.disk_name(config, name);
            match entry {
                Entry::Stored(s) => out.extend(s.write_parts(&disk)?),
                Entry::File { file, key } => out.push((disk, self.files[*file].tensor(key)?)),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// [`TensorStore::disk_tensors`] with each quantized matrix's packed codes made only when they are written
    /// ([`st::write_parts_to`]): the same file, without every packed matrix held at once.
    pub fn disk_parts(&self, config: &ModelConfig) -> Result<Vec<(String, st::Part<'_>)>> {
        let mut out = Vec::with_capacity(self.entries.len());
        for (name, entry) in &self.entries {
            let disk = self.disk_name(config, name);
            match entry {
                Entry::Stored(Stored::Quant(q)) => {
                    let codes = q.clone();
                    out.push((
                        format!("{disk}_packed"),
                        st::Part::Later {
                            dtype: DType::I32,
                            shape: crate::quant::ct::packed_shape(q),
                            make: Box::new(move || crate::quant::ct::packed_part(&codes)),
                        },
                    ));
                    out.extend(
                        crate::quant::ct::small_parts(&disk, q)?
                            .into_iter()
                            .map(|(n, t)| (n, st::Part::Ready(t))),
                    );
                }
                Entry::Stored(s) => out.extend(
                    s.write_parts(&disk)?
                        .into_iter()
                        .map(|(n, t)| (n, st::Part::Ready(t))),
                ),
                Entry::File { file, key } => {
                    out.push((disk, st::Part::Ready(self.files[*file].tensor(key)?)))
                }
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The safetensors `__metadata__` to write with [`TensorStore::disk_tensors`]: the input's, plus the
    /// [`forms::METADATA_KEY`] description of every low-rank or sparse tensor (by on-disk name) when there is one.
    pub fn disk_metadata(&self, config: &ModelConfig) -> BTreeMap<String, String> {
        let mut metadata = self.metadata.clone();
        let described: BTreeMap<String, Form> = self
            .entries
            .iter()
            .filter_map(|(n, e)| match e {
                Entry::Stored(s @ (Stored::LowRank(_) | Stored::Sparse(_))) => {
                    Some((self.disk_name(config, n), s.form()))
                }
                _ => None,
            })
            .collect();
        if !described.is_empty() {
            if let Ok(text) = serde_json::to_string(&described) {
                metadata.insert(forms::METADATA_KEY.into(), text);
            }
        }
        metadata
    }

    /// The tensor, decoded to dense (mapped bytes for unchanged tensors, no copy).
    pub fn get(&self, name: &str) -> Result<HostTensor> {
        match self.entries.get(name) {
            Some(Entry::File { file, key }) => self.files[*file].tensor(key),
            Some(Entry::Stored(s)) => s.to_dense(name),
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
        let values = t.to_f32(name);
        // The values are copied out: the checkpoint's pages need not stay resident.
        t.release_pages();
        values
    }

    /// Replace or add a tensor (copy-on-write overlay).
    pub fn set(&mut self, name: &str, tensor: HostTensor) {
        self.set_stored(name, Stored::Dense(tensor));
    }

    /// Keep the rows in `ranges` (in order) of tensor `name` (a matrix or a vector), as dense values in its dtype.
    pub fn keep_row_ranges(&mut self, name: &str, ranges: &[std::ops::Range<usize>]) -> Result<()> {
        let t = self.get(name)?;
        let cols: usize = t.shape.iter().skip(1).product();
        let v = t.to_f32(name)?;
        let mut out = Vec::new();
        for r in ranges {
            let rows = v.get(r.start * cols..r.end * cols).ok_or_else(|| {
                Error::Runtime(format!(
                    "cannot keep rows {r:?} of tensor `{name}` of shape {:?}",
                    t.shape
                ))
            })?;
            out.extend_from_slice(rows);
        }
        let mut shape = t.shape.clone();
        shape[0] = ranges.iter().map(|r| r.len()).sum();
        let dtype = t.dtype;
        self.set(name, HostTensor::from_f32(shape, &out, dtype)?);
        Ok(())
    }

    /// Keep the columns in `ranges` (in order) of the matrix `name`, as dense values in its dtype.
    pub fn keep_col_ranges(&mut self, name: &str, ranges: &[std::ops::Range<usize>]) -> Result<()> {
        let t = self.get(name)?;
        let cols = t.shape.get(1).copied().unwrap_or(1);
        if ranges.iter().any(|r| r.end > cols) {
            return Err(Error::Runtime(format!(
                "cannot keep columns {ranges:?} of tensor `{name}` of shape {:?}",
                t.shape
            )));
        }
        let v = t.to_f32(name)?;
        let mut out = Vec::new();
        for row in v.chunks(cols.max(1)) {
            for r in ranges {
                out.extend_from_slice(&row[r.clone()]);
            }
        }
        let kept: usize = ranges.iter().map(|r| r.len()).sum();
        let (rows, dtype) = (t.shape[0], t.dtype);
        self.set(name, HostTensor::from_f32(vec![rows, kept], &out, dtype)?);
        Ok(())
    }

    /// Keep only rows `rows` (in the order given) of tensor `name` along its first dimension, in its stored
    /// encoding (e.g. vocabulary trimming of an embedding). An index past the end is an error naming the tensor.
    pub fn select_rows(&mut self, name: &str, rows: &[usize]) -> Result<()> {
        if let Some(q) = self.get_quant(name) {
            let selected = q.select_rows(rows).map_err(|problem| {
                Error::Runtime(format!("cannot select rows of tensor `{name}`: {problem}"))
            })?;
            self.set_quant(name, selected);
            return Ok(());
        }
        if let Some(kind) = self
            .form(name)
            .map(|f| f.kind())
            .filter(|k| matches!(k, FormKind::LowRank | FormKind::Bitmask | FormKind::TwoFour))
        {
            return Err(Error::Runtime(format!(
                "cannot select rows of tensor `{name}`: it is stored {}, and only dense and quantized tensors select rows",
                kind.name()
            )));
        }
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
        matches!(self.entries.get(name), Some(Entry::Stored(_)))
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
        self.entries.keys().map(|n| self.stored_bytes(n)).sum()
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
                        report.bad_dtype.push((spec.name.clone(), dtype.as_str()));
                    }
                }
            }
        }
        for name in self.names() {
            if !known.contains(name) && !is_tolerated_buffer(name) {
                report.unexpected.push(self.disk_like(name));
            }
        }
        // The architecture says which Linears are two factors, and of which rank; the store must agree.
        let ranks = config.low_rank_weights();
        let hint = "(`low_rank` of its layer in the `compressor` extension of config.json)";
        for name in self.names() {
            let stored = match self.form(name) {
                Some(Form::LowRank { rank, .. }) => Some(rank),
                _ => None,
            };
            let problem = match (ranks.get(name), stored) {
                (Some(want), Some(got)) if *want != got => format!(
                    "is stored low-rank with rank {got}, but the config says rank {want} {hint}"
                ),
                (Some(want), None) => format!(
                    "is stored as one matrix, but the config says low-rank with rank {want} {hint}"
                ),
                (None, Some(got)) if known.contains(name) => format!(
                    "is stored low-rank with rank {got}, but the config does not list it {hint}"
                ),
                _ => continue,
            };
            report.mis_formed.push((self.disk_like(name), problem));
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

/// Sizes of config.json that decide how much is allocated before the tensors are compared with the config, bounded
/// by what the tensors can hold: every encoder layer has at least one tensor of its own.
fn check_sizes(files: &[SafetensorsFile], config: &ModelConfig) -> Result<()> {
    let tensors: usize = files.iter().map(|f| f.tensors.len()).sum();
    let layers = config.bert().num_hidden_layers;
    if layers > tensors {
        return Err(Error::ConfigKey {
            path: config.path.clone(),
            key: "num_hidden_layers".into(),
            problem: format!(
                "is {}, but the checkpoint holds only {} tensor(s), fewer than one per layer",
                thousands(layers),
                thousands(tensors)
            ),
        });
    }
    Ok(())
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
