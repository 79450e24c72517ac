//! compressor-models: canonical tensor names and roles, architecture configs, the `TensorStore` over Hugging Face
//! safetensors checkpoints, and the burn runtime of the BERT-like encoders.
//!
//! ```no_run
//! use compressor_models::Checkpoint;
//! let ckpt = Checkpoint::open(std::path::Path::new("models/all-MiniLM-L6-v2"))?;
//! println!("{} parameters", ckpt.parameter_count());
//! # Ok::<(), compressor_models::Error>(())
//! ```

pub mod arch;
pub mod batch;
pub mod checkpoint;
pub mod densify;
pub mod elastic;
pub mod error;
pub mod family;
pub mod forms;
pub mod fsio;
pub mod gguf;
pub mod names;
pub mod onnx;
pub mod quant;
pub mod remote_code;
pub mod rng;
pub mod runtime;
pub mod st;
pub mod store;
pub mod tensor;
pub mod testing;

pub use arch::{ArchConfig, BertConfig, Head, ModelConfig, Pooling, PoolingMode};
pub use batch::EncodedBatch;
pub use checkpoint::Checkpoint;
pub use error::{Error, Result};
pub use family::{Family, Slot};
pub use forms::{Factor, FactorForm, Form, FormKind, SparsePattern, SparseValues, Stored};
pub use names::{Kind, Role, Selector, TensorSpec};
pub use quant::{Encoding, QuantTensor, Strategy};
pub use store::{TensorStore, ValidationReport};
pub use tensor::{DType, HostTensor};
