//! compressor-passes: the [`Pass`] contract, the registry of pass kinds and one module per compression method.
//!
//! A pipeline is an ordered list of [`PassSpec`]s. Each spec is parsed in two steps (its `kind`, then that kind's
//! `Config` with unknown keys rejected), planned from metadata alone ([`Pass::plan`]) and then run on the
//! [`TensorStore`](compressor_models::TensorStore) ([`Pass::run`]), returning a serializable [`PassReport`].
//!
//! ```
//! use compressor_passes::{registry, PassSpec};
//! let spec = PassSpec::from_config("cast", serde_json::json!({ "dtype": "f16" }))?.expect("known kind");
//! assert_eq!(spec.kind(), "cast");
//! assert_eq!(registry::suggest("cats"), Some("cast"));
//! # Ok::<(), serde_json::Error>(())
//! ```

pub mod analyses;
pub mod blockwise_quant;
pub mod calibration;
pub mod cast;
pub mod error;
pub mod files;
pub mod fisher_prune;
pub mod gptq;
pub mod hessian_mp;
pub mod linalg;
pub mod optim;
pub mod pass;
pub mod progress;
pub mod prune;
pub mod qa_svd;
pub mod registry;
pub mod suggest;
pub(crate) mod targets;
pub mod vib_prune;
pub mod vocab_trim;

pub use calibration::CalibrationSpec;
pub use error::{Error, Result};
pub use files::SideFiles;
/// Q-BERT's parts, also used on their own (benches, tests).
pub use hessian_mp::{bit_allocation, hessian, qat};
pub use pass::{
    ArchChange, ModelInfo, Pass, PassContext, PassPlan, PassReport, Phase, PlanContext,
    PlannedChange, TensorMeta,
};
pub use progress::{NoProgress, Progress};
pub use registry::{PassInfo, PassSpec, REGISTRY};
