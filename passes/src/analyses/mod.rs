//! Shared analyses: the statistics passes need from calibration data, computed by one collector and kept in one
//! on-disk cache ([`cache`]) keyed by (model fingerprint, data hash, settings).
//!
//! | statistic | computed by | used by |
//! | --- | --- | --- |
//! | per-head / per-neuron importance, block influence | one forward sweep ([`forward`]) | `prune` |
//! | input covariance `E[x x^T]` and mean `E[x]` per Linear (f64) | the same sweep | `qa-svd` |
//! | gradients, Fisher diagonal `E[g * g]` per Linear | first-order autodiff ([`fisher`]) | `fisher-prune` (contrastive triplets) |
//! | Hessian top eigenvalues per block | double backward (`hessian_mp::hessian`) | `hessian-mp` |
//! | activation ranges per quantization point | the runtime's observer | `blockwise-quant` |
//!
//! A pass declares what it needs ([`crate::Pass::statistics`]); the plan lists it. The calibration records
//! (texts, and labels where a loss needs them) come from one reader, [`crate::CalibrationSpec::records`].
//! The losses of the gradient statistics ([`loss`]) are shared with Q-BERT's Hessians.

pub use compressor_calibration::cache;
pub mod fisher;
pub mod forward;

use std::sync::OnceLock;

use compressor_models::runtime::{flat, Backend, Bert, Cpu, Tensor, TensorData};
use compressor_models::{EncodedBatch, ModelConfig, Pooling, TensorStore};
use serde::Serialize;

use self::cache::{Cache, Hasher, Key};
pub use self::fisher::Gradients;
pub use self::forward::{covariance_site, Covariance, Importance, Want};
use crate::calibration::Records;
use crate::error::{Error, Result};

/// What identifies a model for the cache: every tensor's name and decoded values (a quantized tensor hashes by
/// what the model computes with), the architecture and the pooling.
pub fn model_fingerprint(
    store: &TensorStore,
    config: &compressor_models::ModelConfig,
    pooling: &compressor_models::Pooling,
) -> Result<String> {
    let mut h = Hasher::default();
    let mut names: Vec<&str> = store.names().collect();
    names.sort_unstable();
    for name in names {
        let Some((dtype, shape)) = store.info(name) else {
            continue;
        };
        h.part(name.as_bytes());
        h.ints(&shape.iter().map(|&d| d as i64).collect::<Vec<_>>());
        if dtype.is_float() {
            h.floats(&store.get_f32(name, &shape)?);
        } else {
            // Integer buffers (`embeddings.position_ids`): their stored bytes.
            h.part(store.get(name)?.bytes());
        }
    }
    h.part(format!("{:?}{:?}", config.bert(), pooling).as_bytes());
    Ok(h.hex())
}

/// A statistic a pass needs, as the plan lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Statistic {
    /// Per-head and per-neuron importance and block influence (forward sweep).
    Importance,
    /// Input second moments per Linear (forward sweep).
    Covariance,
    /// Gradients and Fisher diagonals per Linear (backward passes).
    Gradients,
    /// Top Hessian eigenvalues per block (double backward).
    HessianEigen,
    /// Activation ranges per quantization point (forward sweep of the quantized model).
    ActivationRanges,
}

impl Statistic {
    pub fn describe(self) -> &'static str {
        match self {
            Statistic::Importance => "head / neuron importance (forward)",
            Statistic::Covariance => "input covariance per Linear (forward)",
            Statistic::Gradients => "gradients and Fisher diagonals (backward)",
            Statistic::HessianEigen => "Hessian eigenvalues per block (double backward)",
            Statistic::ActivationRanges => "activation ranges (forward)",
        }
    }
}

/// The collector for one model: computes statistics or takes them from the cache.
pub struct Analyses<'a> {
    pub store: &'a TensorStore,
    pub config: &'a ModelConfig,
    pub pooling: Pooling,
    pub cache: Cache,
    fingerprint: OnceLock<String>,
}

/// What [`Analyses::forward`] returns: the statistics asked for, and which came from the cache.
#[derive(Debug, Clone)]
pub struct Forward {
    pub importance: Option<Importance>,
    pub covariance: Option<Covariance>,
    pub cached: Want,
}

impl<'a> Analyses<'a> {
    pub fn new(
        store: &'a TensorStore,
        config: &'a ModelConfig,
        pooling: Pooling,
        cache: Cache,
    ) -> Self {
        Self {
            store,
            config,
            pooling,
            cache,
            fingerprint: OnceLock::new(),
        }
    }

    /// The model's fingerprint (hashed once).
    pub fn fingerprint(&self) -> Result<&str> {
        if let Some(f) = self.fingerprint.get() {
            return Ok(f);
        }
        let f = model_fingerprint(self.store, self.config, &self.pooling)?;
        Ok(self.fingerprint.get_or_init(|| f))
    }

    /// The cache key of statistic `kind` on data `data` with `settings`.
    pub fn key(&self, kind: &'static str, data: String, settings: String) -> Result<Key> {
        Ok(Key {
            kind,
            model: self.fingerprint()?.to_string(),
            data,
            settings,
        })
    }

    fn model(&self) -> Result<Bert<Cpu>> {
        Ok(Bert::<Cpu>::load(
            self.store,
            self.config,
            self.pooling,
            &Default::default(),
        )?)
    }

    /// The forward statistics `want` asks for, on `records` in length-sorted batches of `batch_size`; cached
    /// entries are reused and the rest are computed in one sweep (`progress(batches done, batches)`).
    pub fn forward(
        &self,
        records: &Records,
        batch_size: usize,
        want: Want,
        progress: &dyn Fn(usize, usize),
    ) -> Result<Forward> {
        let data = records.hash();
        let settings = format!("batch-size={batch_size}");
        let layers = self.config.bert().layers.len();
        let imp_key = self.key("importance", data.clone(), settings.clone())?;
        // Entries written before the means were kept hold second moments only.
        let cov_key = self.key("covariance", data, format!("{settings};moments=2"))?;
        let mut importance = if want.importance {
            self.cache
                .read_arrays(&imp_key)
                .and_then(|a| Importance::from_arrays(&a, layers))
        } else {
            None
        };
        let mut covariance = if want.covariance {
            self.cache
                .read_arrays(&cov_key)
                .and_then(Covariance::from_arrays)
        } else {
            None
        };
        let cached = Want {
            importance: importance.is_some(),
            covariance: covariance.is_some(),
        };
        let missing = Want {
            importance: want.importance && importance.is_none(),
            covariance: want.covariance && covariance.is_none(),
        };
        if missing.importance || missing.covariance {
            let batches = records.batches(batch_size);
            let n = batches.len();
            let (imp, cov) =
                forward::sweep(&self.model()?, &batches, missing, &|done| progress(done, n))?;
            if let Some(i) = imp {
                self.cache.write_arrays(&imp_key, &i.to_arrays())?;
                importance = Some(i);
            }
            if let Some(c) = cov {
                self.cache.write_arrays(&cov_key, &c.to_arrays())?;
                covariance = Some(c);
            }
        }
        Ok(Forward {
            importance,
            covariance,
            cached,
        })
    }

    /// Mean gradients and Fisher diagonals of `weights` over `samples` (cached; `progress(done, samples)`), with
    /// whether they came from the cache.
    pub fn gradients(
        &self,
        samples: &[Sample],
        weights: &[String],
        progress: &dyn Fn(usize, usize),
    ) -> Result<(Gradients, bool)> {
        let mut h = Hasher::default();
        for s in samples {
            s.hash_into(&mut h);
        }
        let key = self.key("gradients", h.hex(), weights.join(","))?;
        if let Some(g) = self
            .cache
            .read_arrays(&key)
            .and_then(Gradients::from_arrays)
        {
            return Ok((g, true));
        }
        let n = samples.len();
        let g = fisher::gradients(
            self.store,
            self.config,
            self.pooling,
            weights,
            samples,
            &|done| progress(done, n),
        )?;
        self.cache.write_arrays(&key, &g.to_arrays())?;
        Ok((g, false))
    }
}

/// What the loss compares the model's output with, for one batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// Class ids, one per row: cross-entropy of the classifier logits.
    Labels(Vec<usize>),
    /// The original model's pooled embeddings, `[batch, hidden]` row-major: self-distillation.
    Embeddings(Vec<f32>),
    /// Triplets: the batch holds `n` queries, then their `n` positives, then their `n` hard negatives (rows
    /// `0..n`, `n..2n`, `2n..3n`). InfoNCE over the cosine of the pooled embeddings times `scale`: every query's
    /// candidates are all positives and all negatives of the batch (in-batch and hard negatives), its label its
    /// own positive; the loss is the mean over queries (GAPrune's `HardNegativeNLLLoss`).
    Contrastive { scale: f32 },
}

/// One batch of calibration data with the target of its loss.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub batch: EncodedBatch,
    pub target: Target,
}

impl Sample {
    /// The rows sorted by length (stable), in consecutive parts of at most `rows` rows, each re-padded to its own
    /// longest row, with the fraction of the batch it holds. The loss is a mean over rows, so the loss (and its
    /// derivatives) on the whole batch is the sum of the parts' losses weighted by their fractions; short parts
    /// skip the padding a single batch would compute. A contrastive sample is not a mean over rows (every query
    /// sees every candidate): it stays whole.
    pub fn split(&self, rows: usize) -> Vec<(Sample, f64)> {
        if let Target::Contrastive { .. } = self.target {
            return vec![(self.clone(), 1.0)];
        }
        let b = &self.batch;
        let lengths = b.lengths();
        let mut order: Vec<usize> = (0..b.batch_size).collect();
        order.sort_by_key(|&r| lengths[r]);
        order
            .chunks(rows.max(1))
            .map(|chunk| {
                let target = match &self.target {
                    Target::Contrastive { scale } => Target::Contrastive { scale: *scale },
                    Target::Labels(l) => Target::Labels(chunk.iter().map(|&r| l[r]).collect()),
                    Target::Embeddings(e) => {
                        let h = e.len() / b.batch_size.max(1);
                        Target::Embeddings(
                            chunk
                                .iter()
                                .flat_map(|&r| e[r * h..(r + 1) * h].iter().copied())
                                .collect(),
                        )
                    }
                };
                let sample = Sample {
                    batch: b.select(chunk),
                    target,
                };
                (sample, chunk.len() as f64 / b.batch_size as f64)
            })
            .collect()
    }

    /// A contrastive sample of triplets `(query, positive, negative)`, each part tokenized as `(ids, type ids)`,
    /// padded with `pad` (see [`Target::Contrastive`]).
    pub fn triplets(triplets: &[[(Vec<i64>, Vec<i64>); 3]], pad: i64, scale: f32) -> Self {
        let rows: Vec<(Vec<i64>, Vec<i64>)> = (0..3)
            .flat_map(|part| triplets.iter().map(move |t| t[part].clone()))
            .collect();
        Self {
            batch: EncodedBatch::from_rows(&rows, pad),
            target: Target::Contrastive { scale },
        }
    }

    /// A self-distillation sample: the target is `model`'s own pooled embedding of `batch`.
    pub fn self_distillation(model: &Bert<Cpu>, batch: EncodedBatch) -> Result<Self> {
        let pooled = model.pool(model.encode(&batch)?, &batch);
        Ok(Self {
            target: Target::Embeddings(flat(pooled)?),
            batch,
        })
    }
}

/// The scalar loss of `model` on `sample` (see the module docs).
pub fn loss<B: Backend>(model: &Bert<B>, sample: &Sample) -> Result<Tensor<B, 1>> {
    let hidden = model.encode(&sample.batch)?;
    head_loss(model, hidden, sample)
}

/// The scalar loss of `model` on `sample` from its last hidden state `hidden`.
pub fn head_loss<B: Backend>(
    model: &Bert<B>,
    hidden: Tensor<B, 3>,
    sample: &Sample,
) -> Result<Tensor<B, 1>> {
    let batch = &sample.batch;
    let b = batch.batch_size;
    match &sample.target {
        Target::Labels(labels) => {
            let logits = model.logits(hidden)?;
            let [rows, classes] = logits.dims();
            if labels.len() != rows {
                return Err(runtime(format!(
                    "{} labels for a batch of {rows}",
                    labels.len()
                )));
            }
            let mut onehot = vec![0f32; rows * classes];
            for (r, &y) in labels.iter().enumerate() {
                if y >= classes {
                    return Err(runtime(format!(
                        "label {y} is outside the classifier's {classes} classes"
                    )));
                }
                onehot[r * classes + y] = 1.0;
            }
            let onehot =
                Tensor::<B, 2>::from_data(TensorData::new(onehot, [rows, classes]), model.device());
            let logp = burn::tensor::activation::log_softmax(logits, 1);
            Ok((logp * onehot).sum() * (-1.0 / b as f64))
        }
        Target::Embeddings(target) => {
            let pooled = model.pool(hidden, batch);
            let [rows, h] = pooled.dims();
            if target.len() != rows * h {
                return Err(runtime(format!(
                    "{} target values for pooled embeddings of {rows}x{h}",
                    target.len()
                )));
            }
            let target = Tensor::<B, 2>::from_data(
                TensorData::new(target.clone(), [rows, h]),
                model.device(),
            );
            Ok((pooled - target).powi_scalar(2).sum() * (0.5 / b as f64))
        }
        Target::Contrastive { scale } => {
            let pooled = model.pool(hidden, batch);
            let [rows, _] = pooled.dims();
            if rows % 3 != 0 || rows == 0 {
                return Err(runtime(format!(
                    "a contrastive batch holds queries, positives and negatives (3n rows), not {rows}"
                )));
            }
            let n = rows / 3;
            let norms = pooled
                .clone()
                .powi_scalar(2)
                .sum_dim(1)
                .sqrt()
                .clamp_min(1e-12);
            let unit = pooled / norms;
            let queries = unit.clone().narrow(0, 0, n);
            let candidates = unit.narrow(0, n, 2 * n);
            let logits = queries.matmul(candidates.transpose()) * f64::from(*scale);
            let mut own = vec![0f32; n * 2 * n];
            for i in 0..n {
                own[i * 2 * n + i] = 1.0;
            }
            let own = Tensor::<B, 2>::from_data(TensorData::new(own, [n, 2 * n]), model.device());
            let logp = burn::tensor::activation::log_softmax(logits, 1);
            Ok((logp * own).sum() * (-1.0 / n as f64))
        }
    }
}

impl Sample {
    /// Feed what identifies this sample (tokens, shape, targets) to a cache key.
    pub fn hash_into(&self, h: &mut Hasher) {
        let b = &self.batch;
        h.ints(&b.input_ids)
            .ints(&b.token_type_ids)
            .ints(&b.attention_mask)
            .ints(&[b.batch_size as i64, b.seq_len as i64]);
        match &self.target {
            Target::Labels(l) => h
                .part(b"labels")
                .ints(&l.iter().map(|&y| y as i64).collect::<Vec<_>>()),
            Target::Embeddings(e) => h.part(b"embeddings").floats(e),
            Target::Contrastive { scale } => h.part(b"contrastive").floats(&[*scale]),
        };
    }
}

pub(super) fn runtime(problem: String) -> Error {
    compressor_models::Error::Runtime(problem).into()
}
