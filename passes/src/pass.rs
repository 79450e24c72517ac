//! The `Pass` contract: a kind, a phase, a metadata-only plan and a run that returns a report.

use std::collections::BTreeMap;
use std::path::Path;

use compressor_models::arch::LayerShape;
use compressor_models::{DType, Encoding, Form, Kind, ModelConfig, Role, TensorSpec, TensorStore};
use serde::{Serialize, Serializer};

use crate::calibration::CalibrationSpec;
use crate::error::Result;
use crate::files::SideFiles;
use crate::progress::Progress;

/// Where a pass sits in a pipeline. Phases may not go backwards (structure, then factorize, then quantize): the
/// planner rejects a pipeline that, for example, prunes heads after quantizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Removes or reshapes parts of the model (heads, FFN rows, vocabulary).
    Structure,
    /// Replaces matrices by factors (low rank).
    Factorize,
    /// Lowers the precision of stored values (casts, integer codes).
    Quantize,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Structure => "structure",
            Phase::Factorize => "factorize",
            Phase::Quantize => "quantize",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(crate) fn ser_dtype<S: Serializer>(d: &DType, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

/// What the planner knows about one tensor: metadata only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMeta {
    /// Canonical name (model prefix stripped).
    pub name: String,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype: DType,
    pub shape: Vec<usize>,
    pub role: Role,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<usize>,
    /// Integer encoding when the tensor is stored quantized (`dtype` is then the dtype it decodes to).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
    /// The storage form (models `forms`). For dense and quantized tensors `dtype` and `encoding` say the same and
    /// stay authoritative (passes set those); low-rank and sparse forms are known from this field only.
    #[serde(skip_serializing_if = "is_plain")]
    pub form: Form,
}

/// Dense and quantized forms, which `dtype` and `encoding` already describe.
fn is_plain(form: &Form) -> bool {
    matches!(form, Form::Dense { .. } | Form::Quant { .. })
}

impl TensorMeta {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Bytes on disk: the sum of the parts of its form (packed codes, scales and shape for a quantized tensor).
    pub fn bytes(&self) -> usize {
        if !is_plain(&self.form) {
            return self.form.bytes(&self.shape);
        }
        match (&self.encoding, &self.shape[..]) {
            (Some(e), [rows, cols]) => e.stored_bytes(*rows, *cols),
            _ => self.numel() * self.dtype.size(),
        }
    }

    /// The form the matrix takes when its values are quantized in `e`: a sparse one stays sparse (its stored values
    /// quantized), any other becomes compressed-tensors codes.
    pub fn quantized_form(&self, e: Encoding) -> Form {
        match self.form {
            Form::Sparse { pattern, nnz, .. } => Form::Sparse {
                pattern,
                nnz,
                dtype: DType::F32,
                encoding: Some(e),
            },
            _ => Form::Quant { encoding: e },
        }
    }

    /// The architecture's view of the tensor, for selector matching.
    pub fn spec(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.clone(),
            shape: self.shape.clone(),
            role: self.role,
            kind: self.kind,
            layer: self.layer,
            optional: false,
        }
    }
}

/// Every tensor of a model as metadata, sorted by canonical name. The planner threads one `ModelInfo` through the
/// pipeline, applying each pass's [`PassPlan`], so each pass plans against the state its predecessors leave.
#[derive(Debug, Clone, Serialize)]
pub struct ModelInfo {
    pub tensors: Vec<TensorMeta>,
    /// The tensors (by their current names) whose values an earlier pass of the pipeline rewrites, whatever their
    /// metadata: a pass that reads the checkpoint's own weights at plan time must not run after those.
    #[serde(skip)]
    pub rewritten: std::collections::BTreeSet<String>,
}

/// Equal metadata (which earlier passes rewrote is history, not metadata).
impl PartialEq for ModelInfo {
    fn eq(&self, other: &Self) -> bool {
        self.tensors == other.tensors
    }
}

impl Eq for ModelInfo {}

impl ModelInfo {
    /// The tensors of `store` with the roles and kinds `config` gives them. Tensors the architecture does not list
    /// (tolerated buffers such as `embeddings.token_type_ids`) get role and kind `buffer`.
    pub fn from_store(config: &ModelConfig, store: &TensorStore) -> Self {
        let specs: BTreeMap<String, TensorSpec> = config
            .expected_tensors()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let tensors = store
            .names()
            .filter_map(|name| {
                let (dtype, shape) = store.info(name)?;
                let (role, kind, layer) = match specs.get(name) {
                    Some(s) => (s.role, s.kind, s.layer),
                    None => (Role::Buffer, Kind::Buffer, None),
                };
                Some(TensorMeta {
                    name: name.to_string(),
                    dtype,
                    shape,
                    role,
                    kind,
                    layer,
                    encoding: store.encoding(name),
                    form: store.form(name).unwrap_or(Form::Dense { dtype }),
                })
            })
            .collect();
        Self {
            tensors,
            rewritten: Default::default(),
        }
    }

    pub fn get(&self, name: &str) -> Option<&TensorMeta> {
        self.tensors
            .binary_search_by(|t| t.name.as_str().cmp(name))
            .ok()
            .map(|i| &self.tensors[i])
    }

    pub fn total_bytes(&self) -> usize {
        self.tensors.iter().map(TensorMeta::bytes).sum()
    }

    /// The state after `plan` is applied: tensors changed (by their names before the pass), then removed, then
    /// renamed; roles, kinds and layers are then read again from `config`, the architecture after the pass.
    pub fn apply(&mut self, plan: &PassPlan, config: &ModelConfig) {
        self.rewritten
            .extend(plan.changes.iter().map(|c| c.name.clone()));
        for change in &plan.changes {
            if let Ok(i) = self
                .tensors
                .binary_search_by(|t| t.name.as_str().cmp(&change.name))
            {
                self.tensors[i].dtype = change.dtype_after;
                self.tensors[i].shape = change.shape_after.clone();
                self.tensors[i].encoding = change.encoding_after;
                self.tensors[i].form = match (change.form_after, change.encoding_after) {
                    (Some(form), _) => form,
                    (None, Some(encoding)) => Form::Quant { encoding },
                    (None, None) => Form::Dense {
                        dtype: change.dtype_after,
                    },
                };
            }
        }
        if plan.removed.is_empty() && plan.renamed.is_empty() && plan.arch.is_empty() {
            return;
        }
        let removed: std::collections::BTreeSet<&str> =
            plan.removed.iter().map(String::as_str).collect();
        let renamed: BTreeMap<&str, &str> = plan
            .renamed
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_str()))
            .collect();
        let specs: BTreeMap<String, TensorSpec> = config
            .expected_tensors()
            .into_iter()
            .map(|s| (s.name.clone(), s))
            .collect();
        let mut tensors: Vec<TensorMeta> = std::mem::take(&mut self.tensors)
            .into_iter()
            .filter(|t| !removed.contains(t.name.as_str()))
            .map(|mut t| {
                if let Some(to) = renamed.get(t.name.as_str()) {
                    t.name = to.to_string();
                }
                if let Some(s) = specs.get(&t.name) {
                    (t.role, t.kind, t.layer) = (s.role, s.kind, s.layer);
                }
                t
            })
            .collect();
        tensors.sort_by(|a, b| a.name.cmp(&b.name));
        self.tensors = tensors;
        self.rewritten = std::mem::take(&mut self.rewritten)
            .into_iter()
            .filter(|n| !removed.contains(n.as_str()))
            .map(|n| {
                renamed
                    .get(n.as_str())
                    .map_or(n.clone(), |to| to.to_string())
            })
            .collect();
    }
}

/// A change of the architecture that a pass's plan announces, so that the next pass plans against the model
/// this one leaves (typed, applied by the planner and again by the runner's config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ArchChange {
    /// Every encoder layer's new shape (pruning, factorization); layers may be fewer.
    Layers(Vec<LayerShape>),
    /// The residual stream keeps the hidden dimensions at these positions (of the current `0..hidden_size`).
    Hidden(Vec<usize>),
    /// The rates the (sorted) model can later be cut at, with every layer's widths at each.
    Elastic(Vec<compressor_models::arch::ElasticRate>),
}

impl ArchChange {
    /// `config` with this change made.
    pub fn apply(&self, config: &mut ModelConfig) -> compressor_models::Result<()> {
        match self {
            ArchChange::Layers(layers) => config.set_layers(layers.clone()),
            ArchChange::Hidden(kept) => config.set_hidden(kept),
            ArchChange::Elastic(table) => config.set_elastic(table.clone()),
        }
    }
}

/// What a pass sees at plan time: the config and the tensors' metadata (no weights), as the passes before it
/// leave them.
pub struct PlanContext<'a> {
    pub config: &'a ModelConfig,
    pub info: &'a ModelInfo,
    /// The checkpoint's own tensors (as loaded, before any pass). A structural pass whose decision depends on the
    /// weights (`prune`) reads them here; every other pass plans from `info` alone.
    pub store: &'a TensorStore,
    /// The checkpoint folder (side files such as tokenizer.json may be read at plan time).
    pub model_dir: &'a Path,
    /// The pipeline's `[calibration]` data, if it has any.
    pub calibration: Option<&'a CalibrationSpec>,
    /// Progress of long plan-time work (mask training).
    pub progress: &'a dyn crate::Progress,
}

impl PlanContext<'_> {
    /// The forward statistics `want` asks for, on `spec`'s records (unlabelled), of the checkpoint's own weights.
    pub fn forward_statistics(
        &self,
        spec: &CalibrationSpec,
        batch_size: usize,
        want: crate::analyses::Want,
        cache: &crate::analyses::cache::Cache,
    ) -> Result<crate::analyses::Forward> {
        let files = SideFiles::new(self.model_dir);
        let records = spec.records(&files, self.config, crate::calibration::LabelRequest::None)?;
        let analyses = crate::analyses::Analyses::new(
            self.store,
            self.config,
            compressor_models::Pooling::load(self.model_dir)?,
            cache.clone(),
        );
        analyses.forward(&records, batch_size, want, &|_, _| {})
    }

    /// A pass that reads the encoder weights at plan time (`kind`) needs the checkpoint's own: no earlier pass may
    /// have changed a layer's tensors. `hint` says what to do instead.
    pub fn require_checkpoint_weights(&self, kind: &str, hint: &str) -> Result<()> {
        for spec in self.config.expected_tensors() {
            if spec.layer.is_none() {
                continue;
            }
            let planned = self.info.get(&spec.name).map(|t| t.shape.clone());
            let stored = self.store.info(&spec.name).map(|(_, s)| s);
            if planned.is_none() || planned != stored || self.info.rewritten.contains(&spec.name) {
                return Err(crate::error::Error::Config {
                    key: "kind".into(),
                    problem: format!(
                        "an earlier pass changes `{}`; `{kind}` reads the checkpoint's own encoder weights\nhint: {hint}",
                        spec.name
                    ),
                });
            }
        }
        Ok(())
    }
}

/// One tensor a pass will change, as the plan predicts it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedChange {
    pub name: String,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype_before: DType,
    #[serde(serialize_with = "ser_dtype")]
    pub dtype_after: DType,
    pub shape_before: Vec<usize>,
    pub shape_after: Vec<usize>,
    pub bytes_before: usize,
    pub bytes_after: usize,
    /// The integer encoding the tensor will be stored in, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encoding_after: Option<Encoding>,
    /// The storage form after the pass when it is neither dense nor quantized (sparse: `fisher-prune`); `None`:
    /// dense in `dtype_after`, or quantized in `encoding_after`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub form_after: Option<Form>,
}

impl PlannedChange {
    /// The planned change of tensor `t` to `shape` (sliced or rewritten), in its own dtype.
    pub fn reshaped(t: &TensorMeta, shape: &[usize]) -> Self {
        let numel: usize = shape.iter().product();
        Self {
            name: t.name.clone(),
            dtype_before: t.dtype,
            dtype_after: t.dtype,
            shape_before: t.shape.clone(),
            shape_after: shape.to_vec(),
            bytes_before: t.bytes(),
            bytes_after: numel * t.dtype.size(),
            encoding_after: None,
            form_after: None,
        }
    }
}

/// A pass's plan: the tensors it will change, remove and rename, the architecture change, and notes for the dry
/// run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassPlan {
    pub changes: Vec<PlannedChange>,
    /// Tensors the pass removes (canonical names before the pass).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<String>,
    /// Tensors the pass renames, `(before, after)` (layers renumbered after dropping one).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renamed: Vec<(String, String)>,
    /// How the architecture changes, applied in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub arch: Vec<ArchChange>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The statistics the pass takes from the shared analyses (computed from `[calibration]`, cached).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub statistics: Vec<crate::analyses::Statistic>,
}

impl PassPlan {
    /// Bytes of the changed tensors before the pass (removed tensors are counted by the planner's totals).
    pub fn bytes_before(&self) -> usize {
        self.changes.iter().map(|c| c.bytes_before).sum()
    }

    pub fn bytes_after(&self) -> usize {
        self.changes.iter().map(|c| c.bytes_after).sum()
    }
}

/// What a pass sees when it runs.
pub struct PassContext<'a> {
    /// The model's config as earlier passes left it; a pass that changes the architecture (vocabulary size, FFN
    /// width) updates it with [`ModelConfig::set`].
    pub config: &'a mut ModelConfig,
    pub store: &'a mut TensorStore,
    /// Tokenizer and sentence-transformers files, as earlier passes left them.
    pub files: &'a mut SideFiles,
    /// The pipeline's `[calibration]` data, if it has any.
    pub calibration: Option<&'a CalibrationSpec>,
    /// The plan this pass made for this model.
    pub plan: &'a PassPlan,
    pub progress: &'a dyn Progress,
    /// The pipeline seed, for passes that sample.
    pub seed: u64,
}

impl<'a> PassContext<'a> {
    /// The pipeline's `[calibration]` records (unlabelled) and the collector on the model as earlier passes left
    /// it; `key` names the setting that needs them.
    pub fn analyses(
        &self,
        key: &str,
        cache: &crate::analyses::cache::Cache,
    ) -> Result<(crate::calibration::Records, crate::analyses::Analyses<'_>)> {
        let spec = self
            .calibration
            .ok_or_else(|| crate::error::Error::NoCalibration { key: key.into() })?;
        let records = spec.records(
            self.files,
            self.config,
            crate::calibration::LabelRequest::None,
        )?;
        let pooling = compressor_models::Pooling::load(self.files.dir())?;
        Ok((
            records,
            crate::analyses::Analyses::new(self.store, self.config, pooling, cache.clone()),
        ))
    }

    /// The input second moment (and mean) of every Linear on the `[calibration]` records, on the model as earlier
    /// passes left it.
    pub fn covariance(
        &self,
        key: &str,
        cache: &crate::analyses::cache::Cache,
    ) -> Result<crate::analyses::Covariance> {
        let (records, analyses) = self.analyses(key, cache)?;
        let want = crate::analyses::Want {
            importance: false,
            covariance: true,
        };
        analyses
            .forward(&records, 32, want, &|_, _| {})?
            .covariance
            .ok_or_else(|| {
                compressor_models::Error::Runtime("the analyses returned no covariance".into())
                    .into()
            })
    }
}

/// What a pass did, as data: written to the manifest. Maps are sorted so the JSON is deterministic.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PassReport {
    pub kind: String,
    /// Canonical names of the tensors the pass changed, sorted.
    pub changed: Vec<String>,
    /// Numbers measured while running (bytes, errors, counts).
    pub metrics: BTreeMap<String, serde_json::Value>,
    /// What the pass decided (dtypes, bits, ranks, masks), as a pure function of its inputs.
    pub decisions: BTreeMap<String, serde_json::Value>,
    pub warnings: Vec<String>,
    /// Files for people (plots): `(file name, text)`, written into the artifact as `pass-<index>-<file name>`
    /// and listed with their hashes in the manifest's `output.files`.
    #[serde(skip)]
    pub plots: Vec<(String, String)>,
}

impl PassReport {
    /// A structural pass's report with the encoder's parameter counts before and after (and the fraction removed).
    pub fn structural(kind: &str, changed: Vec<String>, before: usize, after: usize) -> Self {
        let mut report = Self {
            kind: kind.into(),
            changed,
            ..Self::default()
        };
        report.metrics.insert(
            "encoder_parameters_before".into(),
            serde_json::json!(before),
        );
        report
            .metrics
            .insert("encoder_parameters_after".into(), serde_json::json!(after));
        report.metrics.insert(
            "encoder_fraction_removed".into(),
            serde_json::json!(1.0 - after as f64 / before.max(1) as f64),
        );
        report
    }
}

/// What a pass decided at plan time (from the weights and the calibration data), kept for `run`.
pub struct PlanDecision<T>(std::sync::Mutex<Option<T>>);

impl<T: Clone> PlanDecision<T> {
    pub fn new() -> Self {
        Self(std::sync::Mutex::new(None))
    }

    pub fn set(&self, decision: T) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(decision);
        }
    }

    /// The decision of the last plan; an error (key `kind`) when `run` comes before `plan`.
    pub fn get(&self, kind: &str) -> Result<T> {
        self.0
            .lock()
            .ok()
            .and_then(|d| d.clone())
            .ok_or_else(|| crate::error::Error::Config {
                key: kind.into(),
                problem: "run before plan: the decision is made when the pipeline is planned"
                    .into(),
            })
    }
}

impl<T: Clone> Default for PlanDecision<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// One compression method. `plan` reads metadata only and must find every problem that metadata can reveal; `run`
/// then changes the store and reports what it did. Both are deterministic.
pub trait Pass {
    /// The kebab-case id used in `pipeline.toml` (`kind = "cast"`).
    fn kind(&self) -> &'static str;
    fn phase(&self) -> Phase;
    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan>;
    fn run(&self, ctx: &mut PassContext) -> Result<PassReport>;
}
