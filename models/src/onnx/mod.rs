//! ONNX export of the BERT encoder: a graph onnxruntime runs (opset 17, plus com.microsoft `MatMulNBits` for 4-bit
//! weights) with the per-layer shapes of the checkpoint expressed directly (pruned heads and FFN neurons, dropped
//! sublayers, low-rank Linears as two products, a narrowed residual stream).
//!
//! - [`proto`]: the protobuf encoder of the few ONNX messages written.
//! - [`TensorType`] and [`plan`]: how every encoder matrix is written (float, int8 per channel, 4-bit blocks), and
//!   whether its integer codes are copied from the checkpoint or re-quantized, from metadata alone.
//! - [`bert`]: the graph, built from the config, the store and the plan ([`bert::build`]).
//! - [`write_model`]: the file, written beside its target and renamed.

pub mod bert;
pub mod proto;

use std::path::Path;

use crate::arch::ModelConfig;
use crate::error::{Error, Result};
use crate::family::Slot;
use crate::forms::{FactorForm, Form};
use crate::quant::{Encoding, Strategy};
use crate::store::TensorStore;

/// The opset of the default domain (LayerNormalization needs 17).
pub const OPSET: i64 = 17;
/// The com.microsoft opset (`MatMulNBits`).
pub const MS_OPSET: i64 = 1;
pub const MS_DOMAIN: &str = "com.microsoft";

/// What the encoder's Linear weights are written as (`--type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorType {
    /// Per matrix, what the checkpoint stores: 4-bit (and narrower) group codes -> int4, other integer codes ->
    /// int8, float -> f32.
    Auto,
    F32,
    Int8,
    /// Int8 weights decoded in the graph (`DequantizeLinear`, then a float `MatMul`): the artifact's values
    /// exactly, with float activations, at the size of int8.
    Int8Weights,
    Int4,
}

impl TensorType {
    pub const NAMES: [&'static str; 5] = ["auto", "f32", "int8", "int8-weights", "int4"];

    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "int8" => Ok(Self::Int8),
            "int8-weights" => Ok(Self::Int8Weights),
            "int4" => Ok(Self::Int4),
            other => Err(format!(
                "unknown tensor type `{other}` for ONNX (valid: {})",
                Self::NAMES.join(", ")
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::Int8 => "int8",
            Self::Int8Weights => "int8-weights",
            Self::Int4 => "int4",
        }
    }
}

/// How one matrix is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "as")]
pub enum MatrixKind {
    /// `MatMul` with the decoded f32 weight, transposed to `[in, out]`.
    F32,
    /// `DynamicQuantizeLinear` + `MatMulInteger` with int8 codes `[in, out]`, one scale per output channel
    /// (symmetric, zero point 0), then the scale product.
    Int8,
    /// `DequantizeLinear` of int8 codes `[in, out]` (one scale per output channel, symmetric), then a float
    /// `MatMul`: weight-only, activations stay float.
    Int8Weights,
    /// com.microsoft `MatMulNBits` with 4-bit codes in blocks of `block` inputs, one scale (and zero point) per
    /// block.
    Int4 { block: usize },
}

/// The plan of one matrix: a Linear's weight, or one factor of a low-rank one.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MatrixPlan {
    /// The canonical weight name (`encoder.layer.0.attention.self.query.weight`).
    pub weight: String,
    /// `Some("u")` / `Some("v")` for the factors of a low-rank weight.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub factor: Option<&'static str>,
    pub rows: usize,
    pub cols: usize,
    pub kind: MatrixKind,
    /// Integer codes taken from the checkpoint as they are (exact); `false` for f32 and for re-quantized ones.
    pub copied: bool,
    /// Why integer codes were not copied, or what float weights were decoded from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl MatrixPlan {
    /// The matrix's name in the graph: the weight, or `weight_u` / `weight_v`.
    pub fn name(&self) -> String {
        match self.factor {
            Some(f) => format!("{}_{f}", self.weight),
            None => self.weight.clone(),
        }
    }
}

/// How the word-embedding table is written (the position and token-type tables are small and stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case", tag = "as")]
pub enum TableKind {
    /// A float table, `Gather`ed.
    F32,
    /// Int8 codes `[vocab, groups, hidden / groups]` with one f32 scale per group of a row: the codes and scales
    /// of the looked-up rows are `Gather`ed, cast and multiplied (a weight-only lookup: the sum that follows is
    /// float). `copied`: the checkpoint's own symmetric codes (of up to 8 bits) and scales.
    Int8 { groups: usize, copied: bool },
    /// The checkpoint's symmetric codes of up to 4 bits, two to a byte (`code + 8`, the even column in the low
    /// nibble) `[vocab, groups, hidden / groups / 2]`, with one f32 scale per group of a row: the looked-up rows
    /// are `Gather`ed, split into nibbles, cast and multiplied. Half the bytes of `Int8`.
    Int4 { groups: usize },
}

/// The word-embedding table's form for `tensor_type`: f32 for `f32` (and for a float table under `auto`), else
/// integer codes: the checkpoint's when they are symmetric with one scale per row or per group of a row (packed
/// two to a byte under `auto` and `int4` when they have at most 4 bits), otherwise a symmetric per-row int8
/// quantization of the decoded table.
pub fn table_kind(
    tensor_type: TensorType,
    encoding: Option<&Encoding>,
    hidden: usize,
) -> TableKind {
    let copyable = encoding.and_then(|e| {
        if !e.symmetric || e.bits > 8 {
            return None;
        }
        match e.strategy {
            Strategy::Channel | Strategy::Tensor => Some(1),
            Strategy::Group { size } if size > 0 && hidden.is_multiple_of(size) => {
                Some(hidden / size)
            }
            _ => None,
        }
    });
    match (tensor_type, encoding, copyable) {
        (TensorType::F32, _, _) | (TensorType::Auto, None, _) => TableKind::F32,
        (TensorType::Auto | TensorType::Int4, Some(e), Some(groups))
            if e.bits <= 4 && (hidden / groups).is_multiple_of(2) =>
        {
            TableKind::Int4 { groups }
        }
        (_, _, Some(groups)) => TableKind::Int8 {
            groups,
            copied: true,
        },
        _ => TableKind::Int8 {
            groups: 1,
            copied: false,
        },
    }
}

/// Every encoder matrix of the export, in model order.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub tensor_type: &'static str,
    pub matrices: Vec<MatrixPlan>,
    /// The word-embedding table.
    pub word_embeddings: TableKind,
}

impl Plan {
    pub fn get(&self, weight: &str, factor: Option<&str>) -> Option<&MatrixPlan> {
        self.matrices
            .iter()
            .find(|m| m.weight == weight && m.factor == factor)
    }

    /// One line per (kind, copied) with its count: `36 int8 (codes copied)`.
    pub fn summary(&self) -> Vec<String> {
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for m in &self.matrices {
            let kind = match m.kind {
                MatrixKind::F32 => "f32".to_string(),
                MatrixKind::Int8 => "int8 per channel".to_string(),
                MatrixKind::Int8Weights => "int8 weight-only per channel".to_string(),
                MatrixKind::Int4 { block } => format!("int4 blocks of {block}"),
            };
            let how = match (m.kind, m.copied) {
                (MatrixKind::F32, _) => "",
                (_, true) => " (codes copied)",
                (_, false) => " (re-quantized)",
            };
            *counts.entry(format!("{kind}{how}")).or_default() += 1;
        }
        let mut lines: Vec<String> = counts
            .into_iter()
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        let per_row = |groups: usize| {
            if groups == 1 {
                "one scale per row".to_string()
            } else {
                format!("{groups} scales per row")
            }
        };
        lines.push(match self.word_embeddings {
            TableKind::F32 => "word embeddings f32".into(),
            TableKind::Int4 { groups } => {
                format!("word embeddings int4, {} (codes copied)", per_row(groups))
            }
            TableKind::Int8 { groups, copied } => format!(
                "word embeddings int8, {} ({})",
                per_row(groups),
                if copied {
                    "codes copied"
                } else {
                    "re-quantized"
                }
            ),
        });
        lines
    }
}

/// The block size for 4-bit codes when the checkpoint's own groups cannot be used.
pub const DEFAULT_BLOCK: usize = 32;

/// Whether `MatMulNBits` takes blocks of `size` inputs (a power of two, at least 16, at most 256).
pub fn valid_block(size: usize) -> bool {
    size.is_power_of_two() && (16..=256).contains(&size)
}

/// Symmetric codes of at most 8 bits with one scale per output row (or per tensor, repeated per row): the int8
/// weights of `MatMulInteger` as they are.
fn int8_copies(e: &Encoding) -> std::result::Result<(), String> {
    if !e.symmetric {
        return Err(format!(
            "its {}-bit codes are asymmetric (MatMulInteger weights here are symmetric)",
            e.bits
        ));
    }
    match e.strategy {
        Strategy::Channel | Strategy::Tensor => Ok(()),
        s => Err(format!(
            "its {}-bit codes have {} scales, not one per output channel",
            e.bits,
            s.describe()
        )),
    }
}

/// Codes of at most 4 bits in groups along the input that `MatMulNBits` blocks can hold (codes + 8 as uint4).
fn int4_copies(e: &Encoding) -> std::result::Result<usize, String> {
    if e.bits > 4 {
        return Err(format!("its codes have {} bits, more than 4", e.bits));
    }
    match e.strategy {
        Strategy::Group { size } if valid_block(size) => Ok(size),
        Strategy::Group { size } => Err(format!(
            "its group size {size} is not a MatMulNBits block size (a power of two from 16 to 256)"
        )),
        s => Err(format!(
            "its {} scales are not groups along the input",
            s.describe()
        )),
    }
}

/// How a matrix stored with `encoding` (`None`: float) is written under `tensor_type`: the kind, whether its codes
/// are copied, and a note.
pub fn choose(
    tensor_type: TensorType,
    encoding: Option<&Encoding>,
) -> (MatrixKind, bool, Option<String>) {
    if tensor_type == TensorType::Int8Weights {
        // The codes are chosen as for int8; only the product differs.
        let (kind, copied, note) = choose(TensorType::Int8, encoding);
        let kind = match kind {
            MatrixKind::Int8 => MatrixKind::Int8Weights,
            other => other,
        };
        return (kind, copied, note);
    }
    let requant_block = |e: Option<&Encoding>| match e.map(|e| e.strategy) {
        Some(Strategy::Group { size }) if valid_block(size) => size,
        _ => DEFAULT_BLOCK,
    };
    let Some(e) = encoding else {
        return match tensor_type {
            TensorType::Auto | TensorType::F32 => (MatrixKind::F32, false, None),
            TensorType::Int8 | TensorType::Int8Weights => (
                MatrixKind::Int8,
                false,
                Some("stored float: quantized to int8 per channel".into()),
            ),
            TensorType::Int4 => (
                MatrixKind::Int4 {
                    block: DEFAULT_BLOCK,
                },
                false,
                Some(format!(
                    "stored float: quantized to int4 in blocks of {DEFAULT_BLOCK}"
                )),
            ),
        };
    };
    let described = format!("{}-bit {}", e.bits, e.strategy.describe());
    match tensor_type {
        TensorType::F32 => (
            MatrixKind::F32,
            false,
            Some(format!("{described} codes decoded to f32")),
        ),
        TensorType::Int8 | TensorType::Int8Weights => match int8_copies(e) {
            Ok(()) => (MatrixKind::Int8, true, None),
            Err(why) => (
                MatrixKind::Int8,
                false,
                Some(format!("re-quantized to int8 per channel: {why}")),
            ),
        },
        TensorType::Int4 => match int4_copies(e) {
            Ok(block) => (MatrixKind::Int4 { block }, true, None),
            Err(why) => {
                let block = requant_block(Some(e));
                (
                    MatrixKind::Int4 { block },
                    false,
                    Some(format!("re-quantized to int4 in blocks of {block}: {why}")),
                )
            }
        },
        // The artifact's values exactly where its codes fit; otherwise int8 (the finer grid, closer to them).
        TensorType::Auto => {
            if e.bits <= 4 {
                if let Ok(block) = int4_copies(e) {
                    return (MatrixKind::Int4 { block }, true, None);
                }
            }
            match int8_copies(e) {
                Ok(()) => (MatrixKind::Int8, true, None),
                Err(why) => (
                    MatrixKind::Int8,
                    false,
                    Some(format!("re-quantized to int8 per channel: {why}")),
                ),
            }
        }
    }
}

/// Plan every encoder matrix from metadata alone (stored forms and encodings); refuses, naming the layer, what the
/// graph cannot express.
pub fn plan(config: &ModelConfig, store: &TensorStore, tensor_type: TensorType) -> Result<Plan> {
    let c = config.bert();
    if !c.elastic.is_empty() {
        return Err(Error::Runtime(format!(
            "the model is elastic (rates {}): cut it at one rate first\nhint: pass `--rate R`",
            c.elastic
                .iter()
                .map(|e| e.rate.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let h = c.hidden_size;
    let mut matrices = Vec::new();
    for (l, shape) in c.layers.iter().enumerate() {
        if shape.has_attention() && (shape.qk_head_dim == 0 || shape.vo_head_dim == 0) {
            return Err(Error::Runtime(format!(
                "layer {l} keeps {} attention heads with query/key width {} and value width {}: a head of width 0 has no ONNX form\nhint: prune the heads instead (`prune`), which drops them",
                shape.heads.len(),
                shape.qk_head_dim,
                shape.vo_head_dim
            )));
        }
        for slot in Slot::ALL {
            let Some((out_f, in_f)) = shape.linear_shape(h, slot) else {
                continue;
            };
            let weight = format!("{}.weight", c.naming().linear(l, slot));
            let form = store.form(&weight).ok_or_else(|| Error::TensorNotFound {
                name: weight.clone(),
            })?;
            let mut push = |factor, rows, cols, encoding: Option<Encoding>| {
                let (kind, copied, note) = choose(tensor_type, encoding.as_ref());
                matrices.push(MatrixPlan {
                    weight: weight.clone(),
                    factor,
                    rows,
                    cols,
                    kind,
                    copied,
                    note,
                });
            };
            match form {
                Form::LowRank { rank, u, v } => {
                    if rank == 0 {
                        return Err(Error::Runtime(format!(
                            "tensor `{weight}` is stored low-rank with rank 0\nhint: the checkpoint is damaged; `compressor inspect` shows its forms"
                        )));
                    }
                    let enc = |f: FactorForm| match f {
                        FactorForm::Quant { encoding } => Some(encoding),
                        FactorForm::Dense { .. } => None,
                    };
                    // x V^T first, then U^T.
                    push(Some("v"), rank, in_f, enc(v));
                    push(Some("u"), out_f, rank, enc(u));
                }
                other => push(None, out_f, in_f, other.encoding()),
            }
        }
    }
    let word = "embeddings.word_embeddings.weight";
    let word_embeddings = table_kind(tensor_type, store.encoding(word).as_ref(), h);
    Ok(Plan {
        tensor_type: tensor_type.as_str(),
        matrices,
        word_embeddings,
    })
}

/// Write `model` to `path`: into a temporary file beside it, synced, then renamed. Returns the bytes written.
pub fn write_model(model: &proto::Model, path: &Path) -> Result<u64> {
    use proto::Message as _;
    crate::fsio::write_replacing(
        path,
        |p: &Path, e| Error::io(p, e),
        |w| model.write_to(w).map_err(|e| Error::io(path, e)),
    )?;
    Ok(model.encoded_len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn word_tables_of_4_bit_codes_are_packed_and_others_stay_int8() {
        let w4 = Encoding::symmetric(4, Strategy::Group { size: 16 });
        let w8 = Encoding::symmetric(8, Strategy::Channel);
        let asym = Encoding {
            symmetric: false,
            ..w4
        };
        assert_eq!(
            table_kind(TensorType::Auto, Some(&w4), 32),
            TableKind::Int4 { groups: 2 }
        );
        assert_eq!(
            table_kind(TensorType::Int4, Some(&w4), 32),
            TableKind::Int4 { groups: 2 }
        );
        // `int8` asks for int8: the 4-bit codes are copied into int8 bytes.
        assert_eq!(
            table_kind(TensorType::Int8, Some(&w4), 32),
            TableKind::Int8 {
                groups: 2,
                copied: true
            }
        );
        assert_eq!(
            table_kind(TensorType::Auto, Some(&w8), 32),
            TableKind::Int8 {
                groups: 1,
                copied: true
            }
        );
        // Asymmetric codes have no symmetric int form: re-quantized per row.
        assert_eq!(
            table_kind(TensorType::Auto, Some(&asym), 32),
            TableKind::Int8 {
                groups: 1,
                copied: false
            }
        );
        assert_eq!(table_kind(TensorType::Auto, None, 32), TableKind::F32);
        assert_eq!(table_kind(TensorType::F32, Some(&w4), 32), TableKind::F32);
    }
}
