//! `cast`: store selected float tensors as f16, bf16 or f32 (round to nearest even).
//!
//! The default selection is every float parameter (kinds `weight` and `bias`, all roles); buffers such as
//! `embeddings.position_ids` are never touched, and selected tensors that are not floating point are left as they
//! are (the plan says so). Casting to f16 fails when a value exceeds the f16 range (65504); bf16 keeps the f32
//! exponent range and cannot overflow.

use std::collections::BTreeMap;

use compressor_models::{DType, Form, HostTensor, Kind, Selector};
use half::{bf16, f16};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{Error, Result};
use crate::pass::{
    Pass, PassContext, PassPlan, PassReport, Phase, PlanContext, PlannedChange, TensorMeta,
};

/// The float dtype to store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CastDtype {
    F16,
    Bf16,
    F32,
}

impl CastDtype {
    pub fn dtype(self) -> DType {
        match self {
            CastDtype::F16 => DType::F16,
            CastDtype::Bf16 => DType::BF16,
            CastDtype::F32 => DType::F32,
        }
    }
}

/// Settings of a `cast` pass.
///
/// ```toml
/// [[pass]]
/// kind = "cast"
/// dtype = "f16"                                          # f16 | bf16 | f32
/// select = { roles = ["attn.*", "ffn.*"], kinds = ["weight"] }  # default: every float parameter
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Target dtype: `f16`, `bf16` or `f32`.
    pub dtype: CastDtype,
    /// Which tensors to cast. Default: `{ kinds = ["weight", "bias"] }`, every float parameter.
    #[serde(default = "default_select")]
    pub select: Selector,
}

pub fn default_select() -> Selector {
    Selector {
        kinds: Some(vec![Kind::Weight, Kind::Bias]),
        ..Selector::default()
    }
}

/// The `cast` pass.
pub struct Cast {
    config: Config,
}

impl Cast {
    pub fn new(config: Config) -> Self {
        Self { config }
    }
}

impl Pass for Cast {
    fn kind(&self) -> &'static str {
        "cast"
    }

    fn phase(&self) -> Phase {
        Phase::Quantize
    }

    fn plan(&self, ctx: &PlanContext) -> Result<PassPlan> {
        let matched = crate::targets::selected(ctx, &self.config.select)?;
        let (quantized, matched): (Vec<&TensorMeta>, Vec<&TensorMeta>) =
            matched.into_iter().partition(|t| t.encoding.is_some());
        let (float, other): (Vec<&TensorMeta>, Vec<&TensorMeta>) =
            matched.into_iter().partition(|t| t.dtype.is_float());
        if float.is_empty() {
            return Err(Error::NothingToChange {
                key: "select".into(),
                names: other
                    .iter()
                    .map(|t| format!("`{}`", t.name))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        let target = self.config.dtype.dtype();
        let mut plan = PassPlan::default();
        let mut already = 0usize;
        let mut codes = quantized.len();
        for t in float {
            // Sparse and low-rank tensors keep their form: their float parts (values, factors) are cast.
            let after = t.form.with_float_dtype(target);
            if after == t.form {
                match t.form {
                    Form::Dense { .. } => already += 1,
                    _ => codes += 1,
                }
                continue;
            }
            let (dtype_after, form_after) = match after {
                Form::Dense { dtype } => (dtype, None),
                Form::Sparse { dtype, .. } => (dtype, Some(after)),
                _ => (t.dtype, Some(after)),
            };
            plan.changes.push(PlannedChange {
                name: t.name.clone(),
                dtype_before: t.dtype,
                dtype_after,
                shape_before: t.shape.clone(),
                shape_after: t.shape.clone(),
                bytes_before: t.bytes(),
                bytes_after: after.bytes(&t.shape),
                encoding_after: None,
                form_after,
            });
        }
        if codes > 0 {
            plan.notes.push(format!(
                "{codes} selected tensor(s) are stored as integer codes and stay as they are"
            ));
        }
        if already > 0 {
            plan.notes
                .push(format!("{already} selected tensor(s) are already {target}"));
        }
        if !other.is_empty() {
            plan.notes.push(format!(
                "{} selected tensor(s) are not floating point and stay as they are: {}",
                other.len(),
                other
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        Ok(plan)
    }

    fn run(&self, ctx: &mut PassContext) -> Result<PassReport> {
        let target = self.config.dtype.dtype();
        let mut total = Stats::default();
        let mut per_tensor = BTreeMap::new();
        let mut changed = Vec::with_capacity(ctx.plan.changes.len());
        for change in &ctx.plan.changes {
            ctx.progress.on_unit(&change.name);
            let stored = ctx.store.stored(&change.name)?;
            if stored.dtype() != change.dtype_before {
                return Err(Error::Config {
                    key: "select".into(),
                    problem: format!(
                        "tensor `{}` is {} but was planned as {}",
                        change.name,
                        stored.dtype(),
                        change.dtype_before
                    ),
                });
            }
            // Every float part (the tensor, sparse values, low-rank factors) is rounded; masks and codes stay.
            let mut stats = Stats::default();
            let mut failure = None;
            let cast = stored.map_float_parts(|part| {
                let values = part.to_f32(&change.name)?;
                match encode(&change.name, &values, target) {
                    Ok((bytes, s)) => {
                        stats.merge(&s);
                        HostTensor::from_bytes(target, part.shape.clone(), bytes)
                    }
                    Err(e) => {
                        let text = e.to_string();
                        failure = Some(e);
                        Err(compressor_models::Error::Runtime(text))
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            ctx.store.set_stored(&change.name, cast?);
            per_tensor.insert(
                change.name.clone(),
                json!({
                    "max_abs_error": stats.max_abs_error,
                    "relative_rms_error": stats.relative_rms_error(),
                }),
            );
            total.merge(&stats);
            changed.push(change.name.clone());
        }
        let mut report = PassReport {
            kind: "cast".into(),
            changed,
            ..PassReport::default()
        };
        report
            .decisions
            .insert("dtype".into(), json!(target.as_str()));
        let m = &mut report.metrics;
        m.insert("tensors".into(), json!(ctx.plan.changes.len()));
        m.insert("values".into(), json!(total.values));
        m.insert("bytes_before".into(), json!(ctx.plan.bytes_before()));
        m.insert("bytes_after".into(), json!(ctx.plan.bytes_after()));
        m.insert("max_abs_error".into(), json!(total.max_abs_error));
        m.insert(
            "relative_rms_error".into(),
            json!(total.relative_rms_error()),
        );
        m.insert("flushed_to_zero".into(), json!(total.flushed));
        m.insert("per_tensor".into(), json!(per_tensor));
        if total.flushed as f64 > 1e-4 * total.values as f64 {
            report.warnings.push(format!(
                "{} of {} nonzero values became zero in {target} (below its smallest subnormal)",
                total.flushed, total.values
            ));
        }
        Ok(report)
    }
}

/// Error statistics of one cast.
#[derive(Debug, Clone, Default, PartialEq)]
struct Stats {
    values: usize,
    max_abs_error: f64,
    sum_sq_error: f64,
    sum_sq: f64,
    /// Nonzero values that became zero.
    flushed: usize,
}

impl Stats {
    fn relative_rms_error(&self) -> f64 {
        if self.sum_sq > 0.0 {
            (self.sum_sq_error / self.sum_sq).sqrt()
        } else {
            0.0
        }
    }

    fn merge(&mut self, o: &Stats) {
        self.values += o.values;
        self.max_abs_error = self.max_abs_error.max(o.max_abs_error);
        self.sum_sq_error += o.sum_sq_error;
        self.sum_sq += o.sum_sq;
        self.flushed += o.flushed;
    }

    fn add(&mut self, v: f32, back: f32) {
        let err = (f64::from(v) - f64::from(back)).abs();
        if err > self.max_abs_error {
            self.max_abs_error = err;
        }
        self.sum_sq_error += err * err;
        self.sum_sq += f64::from(v) * f64::from(v);
        if v != 0.0 && back == 0.0 {
            self.flushed += 1;
        }
    }
}

/// Encode `values` as `dtype` (little-endian, round to nearest even), measuring the error. Finite values that
/// overflow to infinity are an error naming the tensor.
fn encode(name: &str, values: &[f32], dtype: DType) -> Result<(Vec<u8>, Stats)> {
    let mut stats = Stats {
        values: values.len(),
        ..Stats::default()
    };
    let mut out = Vec::with_capacity(values.len() * dtype.size());
    let mut overflow: Option<(usize, f32, usize)> = None; // (count, max magnitude, first index)
    let mut note_overflow = |i: usize, v: f32| {
        let o = overflow.get_or_insert((0, 0.0, i));
        o.0 += 1;
        o.1 = o.1.max(v.abs());
    };
    match dtype {
        DType::F16 => {
            for (i, &v) in values.iter().enumerate() {
                let h = f16::from_f32(v);
                let back = h.to_f32();
                if v.is_finite() && back.is_infinite() {
                    note_overflow(i, v);
                }
                stats.add(v, back);
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        DType::BF16 => {
            for (i, &v) in values.iter().enumerate() {
                let h = bf16::from_f32(v);
                let back = h.to_f32();
                if v.is_finite() && back.is_infinite() {
                    note_overflow(i, v);
                }
                stats.add(v, back);
                out.extend_from_slice(&h.to_le_bytes());
            }
        }
        DType::F32 => {
            for &v in values {
                stats.add(v, v);
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        other => {
            return Err(Error::Config {
                key: "dtype".into(),
                problem: format!("cannot cast to {other}"),
            })
        }
    }
    if let Some((count, max, index)) = overflow {
        return Err(Error::OutOfRange {
            name: name.to_string(),
            dtype: dtype.to_string(),
            count,
            max,
            index,
        });
    }
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_encoding_measures_error_and_flushes() -> Result<()> {
        let (bytes, stats) = encode("t", &[1.0, 0.1, 1e-9, 0.0], DType::F16)?;
        assert_eq!(bytes.len(), 8);
        assert_eq!(stats.values, 4);
        assert_eq!(stats.flushed, 1);
        assert!(
            stats.max_abs_error > 0.0 && stats.max_abs_error < 1e-4,
            "{stats:?}"
        );
        Ok(())
    }

    #[test]
    fn f16_overflow_names_the_tensor() {
        let err = encode(
            "encoder.layer.0.output.dense.weight",
            &[1.0, 7e4, -1e5],
            DType::F16,
        )
        .expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "tensor `encoder.layer.0.output.dense.weight` holds 2 value(s) outside the F16 range (largest magnitude 100000 at flat index 1)\nhint: use dtype = \"bf16\", which keeps the f32 exponent range, or leave the tensor out with `select.exclude`"
        );
    }

    #[test]
    fn bf16_and_f32_targets_do_not_overflow() -> Result<()> {
        let (_, s) = encode("t", &[7e4, -1e30], DType::BF16)?;
        assert_eq!(s.flushed, 0);
        let (b, s) = encode("t", &[7e4, -1e30], DType::F32)?;
        assert_eq!((b.len(), s.max_abs_error), (8, 0.0));
        Ok(())
    }
}
