//! The BERT encoder as an ONNX graph, operation by operation as our runtime (`runtime/bert.rs`) computes it:
//!
//! - embeddings: `Gather` of the word and token type tables, the position table `Slice`d to the sequence length,
//!   summed, `LayerNormalization` (epsilon from the config);
//! - the additive mask `(1 - mask) * f32::MIN`, `[batch, 1, 1, sequence]`;
//! - per layer, with that layer's head count and widths: query/key/value Linears, the query scaled by
//!   `1 / sqrt(original head width)`, `Reshape` `[0, 0, heads, width]` + `Transpose`, scores, mask, `Softmax`,
//!   context, the output Linear, residual, `LayerNormalization`; then the FFN (exact GELU from `Erf`, which
//!   onnxruntime fuses into its `Gelu`), residual, `LayerNormalization`. A dropped sublayer adds its output bias.
//! - a Linear is one `MatMul` per matrix (two for a low-rank `U V`: `x V^T`, then `U^T`) and an `Add` of the bias;
//!   int8 matrices run as `DynamicQuantizeLinear` + `MatMulInteger` + `Cast` + `Mul` by the product of the
//!   activation and weight scales (the pattern onnxruntime's `quantize_dynamic` writes and fuses), 4-bit ones as
//!   com.microsoft `MatMulNBits`.
//!
//! Inputs `input_ids`, `attention_mask`, `token_type_ids` (int64 `[batch, sequence]`); output `last_hidden_state`
//! (float `[batch, sequence, hidden]`), and optionally `sentence_embedding` (the declared pooling).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::proto::{
    Attribute, DataType, Dim, Graph, Model, Node, OpsetId, Tensor, ValueInfo, IR_VERSION,
};
use super::{MatrixKind, MatrixPlan, Plan, TableKind, MS_DOMAIN, MS_OPSET, OPSET};
use crate::arch::{Activation, ModelConfig, Pooling, PoolingMode};
use crate::error::{Error, Result};
use crate::family::Slot;
use crate::forms::{Factor, Stored};
use crate::quant::{Encoding, QuantTensor, Strategy};
use crate::store::TensorStore;
use crate::tensor::transposed;

/// Graph input and output names (what optimum's `ORTModelForFeatureExtraction` expects).
pub const INPUT_IDS: &str = "input_ids";
pub const ATTENTION_MASK: &str = "attention_mask";
pub const TOKEN_TYPE_IDS: &str = "token_type_ids";
pub const LAST_HIDDEN_STATE: &str = "last_hidden_state";
pub const SENTENCE_EMBEDDING: &str = "sentence_embedding";

/// Nodes and initializers under construction, with unique value names.
#[derive(Default)]
struct Builder {
    nodes: Vec<Node>,
    inits: Vec<Tensor>,
    names: BTreeMap<String, usize>,
    consts: BTreeMap<String, String>,
    uses_ms: bool,
}

impl Builder {
    fn fresh(&mut self, hint: &str) -> String {
        let n = self.names.entry(hint.to_string()).or_default();
        *n += 1;
        if *n == 1 {
            hint.to_string()
        } else {
            format!("{hint}_{}", *n - 1)
        }
    }

    /// A node with outputs named after `hint`; returns them.
    fn node_n(
        &mut self,
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: usize,
        attributes: Vec<Attribute>,
        hint: &str,
    ) -> Vec<String> {
        let name = self.fresh(hint);
        let outs: Vec<String> = if outputs == 1 {
            vec![format!("{name}_out")]
        } else {
            (0..outputs).map(|i| format!("{name}_out{i}")).collect()
        };
        if domain == MS_DOMAIN {
            self.uses_ms = true;
        }
        self.nodes.push(Node {
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outs.clone(),
            name,
            op_type: op.to_string(),
            attributes,
            domain: domain.to_string(),
        });
        outs
    }

    fn node(
        &mut self,
        op: &str,
        inputs: &[&str],
        attributes: Vec<Attribute>,
        hint: &str,
    ) -> String {
        self.node_n(op, "", inputs, 1, attributes, hint).remove(0)
    }

    fn init(&mut self, t: Tensor) -> String {
        let name = t.name.clone();
        self.inits.push(t);
        name
    }

    /// A shared int64 constant (by value).
    fn ints(&mut self, values: &[i64]) -> String {
        let key = format!("i64{values:?}");
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = format!(
            "const_i64_{}",
            values
                .iter()
                .map(|v| v.to_string().replace('-', "m"))
                .collect::<Vec<_>>()
                .join("_")
        );
        let t = Tensor::i64(&name, &[values.len()], values);
        self.consts.insert(key, name.clone());
        self.init(t)
    }

    /// A shared f32 scalar constant.
    fn scalar(&mut self, v: f32) -> String {
        let key = format!("f32{:08x}", v.to_bits());
        if let Some(n) = self.consts.get(&key) {
            return n.clone();
        }
        let name = format!("const_f32_{:08x}", v.to_bits());
        let t = Tensor::f32(&name, &[], &[v]);
        self.consts.insert(key, name.clone());
        self.init(t)
    }
}

/// The values of one planned matrix: codes (quantized in the store) or floats.
enum Source {
    Quant(Arc<QuantTensor>),
    Float(Vec<f32>),
}

impl Source {
    fn floats(&self) -> Vec<f32> {
        match self {
            Source::Quant(q) => q.dequantize(),
            Source::Float(v) => v.clone(),
        }
    }
}

fn source(store: &TensorStore, m: &MatrixPlan) -> Result<Source> {
    let check = |rows: usize, cols: usize| -> Result<()> {
        if (rows, cols) == (m.rows, m.cols) {
            Ok(())
        } else {
            Err(Error::ShapeMismatch {
                name: m.name(),
                expected: vec![m.rows, m.cols],
                got: vec![rows, cols],
            })
        }
    };
    let Some(f) = m.factor else {
        if let Some(q) = store.get_quant(&m.weight) {
            check(q.rows, q.cols)?;
            return Ok(Source::Quant(q));
        }
        return Ok(Source::Float(store.get_f32(&m.weight, &[m.rows, m.cols])?));
    };
    let Stored::LowRank(lr) = store.stored(&m.weight)? else {
        return Err(Error::Runtime(format!(
            "tensor `{}` is not stored low-rank, as the plan says",
            m.weight
        )));
    };
    let factor = if f == "u" { lr.u() } else { lr.v() };
    let (rows, cols) = factor.shape();
    check(rows, cols)?;
    Ok(match factor {
        Factor::Quant(q) => Source::Quant(q.clone()),
        Factor::Dense(t) => Source::Float(t.to_f32(&m.name())?),
    })
}

/// Int8 codes with one scale per row: the checkpoint's (symmetric per-channel or per-tensor codes of up to 8
/// bits, copied) or a symmetric per-channel quantization of the decoded weight.
pub fn int8_codes(
    name: &str,
    q: Option<&QuantTensor>,
    values: impl FnOnce() -> Vec<f32>,
    rows: usize,
    cols: usize,
) -> Result<(Vec<i8>, Vec<f32>)> {
    if let Some(q) = q {
        let per_row = match q.encoding.strategy {
            Strategy::Channel => Some(q.scales.clone()),
            Strategy::Tensor => Some(vec![q.scales[0]; rows]),
            _ => None,
        };
        if let (Some(scales), true) = (per_row, q.encoding.symmetric) {
            return Ok((q.codes.clone(), scales));
        }
    }
    let q = QuantTensor::quantize(
        &values(),
        rows,
        cols,
        Encoding::symmetric(8, Strategy::Channel),
    )
    .map_err(|p| Error::Runtime(format!("cannot quantize `{name}` to int8: {p}")))?;
    Ok((q.codes, q.scales))
}

/// 4-bit `MatMulNBits` weights of an `[n, k]` matrix in blocks of `block` inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct NBits {
    pub n: usize,
    pub k: usize,
    pub block: usize,
    /// `[n, k_blocks, block / 2]`: per row, per block, two codes per byte, the even input in the low nibble; a
    /// code is stored as `code + 8` (uint4).
    pub packed: Vec<u8>,
    /// `[n * k_blocks]`, row-major by row then block.
    pub scales: Vec<f32>,
    /// Asymmetric codes: `[n * ceil(k_blocks / 2)]`, per row, two blocks per byte (even block in the low nibble),
    /// as `zero point + 8`; padding nibbles hold 8. `None`: symmetric, the default zero point 8.
    pub zero_points: Option<Vec<u8>>,
}

impl NBits {
    pub fn k_blocks(&self) -> usize {
        self.k.div_ceil(self.block)
    }

    /// Pack codes of at most 4 bits grouped along the input in groups of `block` (`q.cols` may be `k` padded to
    /// whole blocks; inputs past `k` are dropped, inputs past `q.cols` are padded with the zero code).
    pub fn pack(q: &QuantTensor, k: usize, block: usize) -> std::result::Result<Self, String> {
        if q.encoding.bits > 4 {
            return Err(format!("{}-bit codes do not fit 4 bits", q.encoding.bits));
        }
        if q.encoding.strategy != (Strategy::Group { size: block }) {
            return Err(format!(
                "{} scales are not groups of {block}",
                q.encoding.strategy.describe()
            ));
        }
        let (n, kb, blob) = (q.rows, k.div_ceil(block), block / 2);
        let groups = q.cols.div_ceil(block);
        if groups < kb || q.cols < k {
            return Err(format!("{} inputs do not cover K = {k}", q.cols));
        }
        let mut packed = vec![0u8; n * kb * blob];
        let mut scales = Vec::with_capacity(n * kb);
        let mut zero_points = (!q.encoding.symmetric).then(|| vec![0x88u8; n * kb.div_ceil(2)]);
        for r in 0..n {
            for b in 0..kb {
                scales.push(q.scales[r * groups + b]);
                if let Some(z) = zero_points.as_mut() {
                    let zp = (i32::from(q.zero_points[r * groups + b]) + 8) as u8;
                    let byte = &mut z[r * kb.div_ceil(2) + b / 2];
                    let shift = 4 * (b % 2);
                    *byte = (*byte & !(0xf << shift)) | (zp << shift);
                }
                for j in 0..block {
                    let c = b * block + j;
                    let code = if c < k {
                        q.codes[r * q.cols + c]
                    } else {
                        q.zero_points.get(r * groups + b).copied().unwrap_or(0)
                    };
                    let u = (i32::from(code) + 8) as u8 & 0xf;
                    packed[(r * kb + b) * blob + j / 2] |= u << (4 * (j % 2));
                }
            }
        }
        Ok(Self {
            n,
            k,
            block,
            packed,
            scales,
            zero_points,
        })
    }
}

/// The 4-bit codes of a planned matrix: the checkpoint's when the plan copies them, else a symmetric quantization
/// of the decoded values (zero-padded to whole blocks).
fn int4_codes(m: &MatrixPlan, src: &Source, block: usize) -> Result<NBits> {
    let fail = |p: String| Error::Runtime(format!("cannot write `{}` as int4: {p}", m.name()));
    if let (true, Source::Quant(q)) = (m.copied, src) {
        return NBits::pack(q, m.cols, block).map_err(fail);
    }
    let padded = m.cols.div_ceil(block) * block;
    let values = src.floats();
    let mut wide = vec![0f32; m.rows * padded];
    for r in 0..m.rows {
        wide[r * padded..r * padded + m.cols]
            .copy_from_slice(&values[r * m.cols..(r + 1) * m.cols]);
    }
    let q = QuantTensor::quantize(
        &wide,
        m.rows,
        padded,
        Encoding::symmetric(4, Strategy::Group { size: block }),
    )
    .map_err(fail)?;
    NBits::pack(&q, m.cols, block).map_err(fail)
}

/// `x M^T` for a planned matrix `M` (`[rows, cols]`, `x` `[..., cols]`).
fn matmul(b: &mut Builder, store: &TensorStore, m: &MatrixPlan, x: &str) -> Result<String> {
    let src = source(store, m)?;
    let name = m.name();
    let (rows, cols) = (m.rows, m.cols);
    Ok(match m.kind {
        MatrixKind::F32 => {
            let w = b.init(Tensor::f32(
                &name,
                &[cols, rows],
                &transposed(&src.floats(), rows, cols),
            ));
            b.node("MatMul", &[x, &w], vec![], &format!("{name}/MatMul"))
        }
        MatrixKind::Int8 | MatrixKind::Int8Weights => {
            let q = match &src {
                Source::Quant(q) if m.copied => Some(&**q),
                _ => None,
            };
            let (codes, scales) = int8_codes(&name, q, || src.floats(), rows, cols)?;
            let w = b.init(Tensor::i8(
                &format!("{name}_quantized"),
                &[cols, rows],
                &transposed(&codes, rows, cols),
            ));
            let ws = b.init(Tensor::f32(&format!("{name}_scale"), &[rows], &scales));
            let wz = b.init(Tensor::i8(
                &format!("{name}_zero_point"),
                &[rows],
                &vec![0i8; rows],
            ));
            if m.kind == MatrixKind::Int8Weights {
                let w = b.node(
                    "DequantizeLinear",
                    &[&w, &ws, &wz],
                    vec![Attribute::int("axis", 1)],
                    &format!("{name}/DequantizeLinear"),
                );
                return Ok(b.node("MatMul", &[x, &w], vec![], &format!("{name}/MatMul")));
            }
            let outs = b.node_n(
                "DynamicQuantizeLinear",
                "",
                &[x],
                3,
                vec![],
                &format!("{name}/DynamicQuantizeLinear"),
            );
            let (xq, xs, xz) = (&outs[0], &outs[1], &outs[2]);
            let acc = b.node(
                "MatMulInteger",
                &[xq, &w, xz, &wz],
                vec![],
                &format!("{name}/MatMulInteger"),
            );
            let acc_f = b.node(
                "Cast",
                &[&acc],
                vec![Attribute::int("to", DataType::Float as i64)],
                &format!("{name}/Cast"),
            );
            let scale = b.node("Mul", &[xs, &ws], vec![], &format!("{name}/ScaleMul"));
            b.node("Mul", &[&acc_f, &scale], vec![], &format!("{name}/Mul"))
        }
        MatrixKind::Int4 { block } => {
            let nb = int4_codes(m, &src, block)?;
            let kb = nb.k_blocks();
            let w = b.init(Tensor::u8(
                &format!("{name}_Q4"),
                &[rows, kb, block / 2],
                nb.packed,
            ));
            let s = b.init(Tensor::f32(
                &format!("{name}_scales"),
                &[rows * kb],
                &nb.scales,
            ));
            let mut inputs = vec![x.to_string(), w, s];
            if let Some(z) = nb.zero_points {
                let len = z.len();
                inputs.push(b.init(Tensor::u8(&format!("{name}_zero_points"), &[len], z)));
            }
            let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            b.node_n(
                "MatMulNBits",
                MS_DOMAIN,
                &refs,
                1,
                vec![
                    Attribute::int("K", cols as i64),
                    Attribute::int("N", rows as i64),
                    Attribute::int("bits", 4),
                    Attribute::int("block_size", block as i64),
                ],
                &format!("{name}/MatMulNBits"),
            )
            .remove(0)
        }
    })
}

/// `x W^T + b` for the Linear `module` (`encoder.layer.0.attention.self.query`).
fn linear(
    b: &mut Builder,
    store: &TensorStore,
    plan: &Plan,
    module: &str,
    out_f: usize,
    x: &str,
) -> Result<String> {
    let weight = format!("{module}.weight");
    let missing = || Error::Runtime(format!("the export plan has no entry for `{weight}`"));
    let y = match plan.get(&weight, None) {
        Some(m) => matmul(b, store, m, x)?,
        None => {
            let v = plan.get(&weight, Some("v")).ok_or_else(missing)?;
            let u = plan.get(&weight, Some("u")).ok_or_else(missing)?;
            let t = matmul(b, store, v, x)?;
            matmul(b, store, u, &t)?
        }
    };
    let bias = bias(b, store, module, out_f)?;
    Ok(b.node("Add", &[&y, &bias], vec![], &format!("{module}/Add")))
}

fn bias(b: &mut Builder, store: &TensorStore, module: &str, n: usize) -> Result<String> {
    let name = format!("{module}.bias");
    let v = store.get_f32(&name, &[n])?;
    Ok(b.init(Tensor::f32(&name, &[n], &v)))
}

fn layer_norm(
    b: &mut Builder,
    store: &TensorStore,
    module: &str,
    h: usize,
    eps: f64,
    x: &str,
) -> Result<String> {
    let g = format!("{module}.weight");
    let gamma = store.get_f32(&g, &[h])?;
    let g = b.init(Tensor::f32(&g, &[h], &gamma));
    let beta = bias(b, store, module, h)?;
    Ok(b.node(
        "LayerNormalization",
        &[x, &g, &beta],
        vec![
            Attribute::int("axis", -1),
            Attribute::float("epsilon", eps as f32),
        ],
        &format!("{module}/LayerNormalization"),
    ))
}

fn activation(b: &mut Builder, act: Activation, x: &str, hint: &str) -> String {
    match act {
        Activation::Gelu => {
            let sqrt2 = b.scalar(std::f32::consts::SQRT_2);
            let one = b.scalar(1.0);
            let half = b.scalar(0.5);
            let d = b.node("Div", &[x, &sqrt2], vec![], &format!("{hint}/Div"));
            let e = b.node("Erf", &[&d], vec![], &format!("{hint}/Erf"));
            let a = b.node("Add", &[&e, &one], vec![], &format!("{hint}/Add"));
            let m = b.node("Mul", &[x, &a], vec![], &format!("{hint}/Mul"));
            b.node("Mul", &[&m, &half], vec![], &format!("{hint}/Mul"))
        }
        Activation::GeluTanh => {
            let c = b.scalar((2.0 / std::f64::consts::PI).sqrt() as f32);
            let k = b.scalar(0.044715);
            let three = b.scalar(3.0);
            let one = b.scalar(1.0);
            let half = b.scalar(0.5);
            let cube = b.node("Pow", &[x, &three], vec![], &format!("{hint}/Pow"));
            let kc = b.node("Mul", &[&cube, &k], vec![], &format!("{hint}/Mul"));
            let inner = b.node("Add", &[x, &kc], vec![], &format!("{hint}/Add"));
            let scaled = b.node("Mul", &[&inner, &c], vec![], &format!("{hint}/Mul"));
            let t = b.node("Tanh", &[&scaled], vec![], &format!("{hint}/Tanh"));
            let a = b.node("Add", &[&t, &one], vec![], &format!("{hint}/Add"));
            let m = b.node("Mul", &[x, &a], vec![], &format!("{hint}/Mul"));
            b.node("Mul", &[&m, &half], vec![], &format!("{hint}/Mul"))
        }
        Activation::Relu => b.node("Relu", &[x], vec![], &format!("{hint}/Relu")),
    }
}

/// The encoder graph of `config` with the weights of `store`, its matrices written as `plan` says; with
/// `pooling`, also the `sentence_embedding` output.
pub fn build(
    config: &ModelConfig,
    store: &TensorStore,
    plan: &Plan,
    pooling: Option<Pooling>,
) -> Result<Model> {
    let c = config.bert();
    let h = c.hidden_size;
    let eps = c.layer_norm_eps;
    let mut b = Builder::default();

    // Embeddings.
    let table = |b: &mut Builder, name: &str, rows: usize| -> Result<String> {
        let v = store.get_f32(name, &[rows, h])?;
        Ok(b.init(Tensor::f32(name, &[rows, h], &v)))
    };
    let n = c.naming();
    let word_name = format!("{}.weight", n.word);
    let word_name = word_name.as_str();
    let word = match plan.word_embeddings {
        TableKind::F32 => Some(table(&mut b, word_name, c.vocab_size)?),
        TableKind::Int8 { .. } | TableKind::Int4 { .. } => None,
    };
    let pos = table(
        &mut b,
        &format!("{}.weight", n.position),
        c.max_position_embeddings,
    )?;
    let words = match (&word, plan.word_embeddings) {
        (Some(word), _) => b.node(
            "Gather",
            &[word, INPUT_IDS],
            vec![Attribute::int("axis", 0)],
            "embeddings/word/Gather",
        ),
        (None, TableKind::Int8 { groups, copied }) => {
            int8_table(&mut b, store, word_name, c.vocab_size, h, groups, copied)?
        }
        (None, TableKind::Int4 { groups }) => {
            int4_table(&mut b, store, word_name, c.vocab_size, h, groups)?
        }
        (None, TableKind::F32) => unreachable!("a float table is initialised above"),
    };
    let seq = b.node(
        "Shape",
        &[INPUT_IDS],
        vec![Attribute::int("start", 1), Attribute::int("end", 2)],
        "embeddings/Shape",
    );
    let zero = b.ints(&[0]);
    let pos_rows = match c.position_padding() {
        // Positions 0..t for every row.
        None => b.node(
            "Slice",
            &[&pos, &zero, &seq, &zero],
            vec![],
            "embeddings/position/Slice",
        ),
        // RoBERTa's scheme: pad + (index among the row's non-padding ids), pad for padding ids.
        Some(pad) => {
            let pad_id = b.init(Tensor::i64("embeddings_position_pad", &[], &[pad]));
            let is_pad = b.node(
                "Equal",
                &[INPUT_IDS, &pad_id],
                vec![],
                "embeddings/position/Equal",
            );
            let kept = b.node("Not", &[&is_pad], vec![], "embeddings/position/Not");
            let kept = b.node(
                "Cast",
                &[&kept],
                vec![Attribute::int("to", DataType::Int64 as i64)],
                "embeddings/position/Cast",
            );
            let axis = b.init(Tensor::i64("embeddings_position_axis", &[], &[1]));
            let count = b.node(
                "CumSum",
                &[&kept, &axis],
                vec![],
                "embeddings/position/CumSum",
            );
            let count = b.node("Mul", &[&count, &kept], vec![], "embeddings/position/Mul");
            let ids = b.node("Add", &[&count, &pad_id], vec![], "embeddings/position/Add");
            b.node(
                "Gather",
                &[&pos, &ids],
                vec![Attribute::int("axis", 0)],
                "embeddings/position/Gather",
            )
        }
    };
    let mut sum = b.node("Add", &[&words, &pos_rows], vec![], "embeddings/Add");
    // Token types: looked up when the family has more than one; a single type (RoBERTa's) is added as its row.
    let takes_types = n.token_type.is_some() && c.type_vocab_size > 1;
    if let Some(t) = n.token_type {
        let name = format!("{t}.weight");
        let rows = if takes_types {
            let types = table(&mut b, &name, c.type_vocab_size)?;
            b.node(
                "Gather",
                &[&types, TOKEN_TYPE_IDS],
                vec![Attribute::int("axis", 0)],
                "embeddings/token_type/Gather",
            )
        } else {
            let v = store.get_f32(&name, &[1, h])?;
            b.init(Tensor::f32(&name, &[h], &v))
        };
        sum = b.node("Add", &[&sum, &rows], vec![], "embeddings/Add");
    }
    let mut x = layer_norm(&mut b, store, n.emb_norm, h, eps, &sum)?;

    // The additive mask [b, 1, 1, t].
    let mask_f = b.node(
        "Cast",
        &[ATTENTION_MASK],
        vec![Attribute::int("to", DataType::Float as i64)],
        "mask/Cast",
    );
    let one = b.scalar(1.0);
    let inverted = b.node("Sub", &[&one, &mask_f], vec![], "mask/Sub");
    let min = b.scalar(f32::MIN);
    let additive = b.node("Mul", &[&inverted, &min], vec![], "mask/Mul");
    let axes12 = b.ints(&[1, 2]);
    let additive = b.node("Unsqueeze", &[&additive, &axes12], vec![], "mask/Unsqueeze");

    // MPNet's relative position bias [heads, t, t]: the bucket of every relative position key - query comes from a
    // table over -(T - 1)..(T - 1) (T: the longest sequence), exactly as our runtime buckets them.
    let relative = match n.relative_bias {
        Some(r) => {
            let longest = c.max_sequence_length().max(1) as i64;
            let buckets: Vec<i64> = (-(longest - 1)..longest)
                .map(|rel| crate::family::relative_bucket(rel) as i64)
                .collect();
            let buckets = b.init(Tensor::i64(
                "relative_bucket_of_position",
                &[buckets.len()],
                &buckets,
            ));
            let name = format!("{r}.weight");
            let weights = store.get_f32(&name, &[c.relative_buckets, c.num_attention_heads])?;
            let weights = b.init(Tensor::f32(
                &name,
                &[c.relative_buckets, c.num_attention_heads],
                &weights,
            ));
            let scalar0 = b.ints(&[0]);
            let t = b.node("Squeeze", &[&seq, &scalar0], vec![], "relative/Squeeze");
            let start = b.init(Tensor::i64("relative_start", &[], &[0]));
            let step = b.init(Tensor::i64("relative_step", &[], &[1]));
            let r = b.node("Range", &[&start, &t, &step], vec![], "relative/Range");
            let rows = b.node("Unsqueeze", &[&r, &zero], vec![], "relative/keys");
            let one = b.ints(&[1]);
            let cols = b.node("Unsqueeze", &[&r, &one], vec![], "relative/queries");
            let rel = b.node("Sub", &[&rows, &cols], vec![], "relative/Sub");
            let offset = b.init(Tensor::i64("relative_offset", &[], &[longest - 1]));
            let idx = b.node("Add", &[&rel, &offset], vec![], "relative/Add");
            let bucket = b.node(
                "Gather",
                &[&buckets, &idx],
                vec![Attribute::int("axis", 0)],
                "relative/bucket",
            );
            let bias = b.node(
                "Gather",
                &[&weights, &bucket],
                vec![Attribute::int("axis", 0)],
                "relative/Gather",
            );
            Some(b.node(
                "Transpose",
                &[&bias],
                vec![Attribute::ints("perm", &[2, 0, 1])],
                "relative/Transpose",
            ))
        }
        None => None,
    };

    let scale = 1.0 / (c.head_dim() as f32).sqrt();
    for (l, s) in c.layers.iter().enumerate() {
        let p = n.layer(l);
        let m = |slot: Slot| n.linear(l, slot);
        let attended = if s.has_attention() {
            let nh = s.heads.len() as i64;
            let (dq, dv) = (s.qk_head_dim as i64, s.vo_head_dim as i64);
            let q = linear(&mut b, store, plan, &m(Slot::Query), s.qk_width(), &x)?;
            let k = linear(&mut b, store, plan, &m(Slot::Key), s.qk_width(), &x)?;
            let v = linear(&mut b, store, plan, &m(Slot::Value), s.vo_width(), &x)?;
            let sc = b.scalar(scale);
            let q = b.node("Mul", &[&q, &sc], vec![], &format!("{p}.attention/Scale"));
            let split_qk = b.ints(&[0, 0, nh, dq]);
            let split_v = b.ints(&[0, 0, nh, dv]);
            let heads = |b: &mut Builder, y: &str, shape: &str, perm: &[i64], what: &str| {
                let r = b.node(
                    "Reshape",
                    &[y, shape],
                    vec![],
                    &format!("{p}.attention/{what}/Reshape"),
                );
                b.node(
                    "Transpose",
                    &[&r],
                    vec![Attribute::ints("perm", perm)],
                    &format!("{p}.attention/{what}/Transpose"),
                )
            };
            let q = heads(&mut b, &q, &split_qk, &[0, 2, 1, 3], "query");
            let k = heads(&mut b, &k, &split_qk, &[0, 2, 3, 1], "key");
            let v = heads(&mut b, &v, &split_v, &[0, 2, 1, 3], "value");
            let scores = b.node(
                "MatMul",
                &[&q, &k],
                vec![],
                &format!("{p}.attention/scores/MatMul"),
            );
            let scores = match &relative {
                Some(bias) => {
                    let heads: Vec<i64> = s.heads.iter().map(|&h| h as i64).collect();
                    let heads = b.ints(&heads);
                    let kept = b.node(
                        "Gather",
                        &[bias, &heads],
                        vec![Attribute::int("axis", 0)],
                        &format!("{p}.attention/relative/Gather"),
                    );
                    b.node(
                        "Add",
                        &[&scores, &kept],
                        vec![],
                        &format!("{p}.attention/relative/Add"),
                    )
                }
                None => scores,
            };
            let scores = b.node(
                "Add",
                &[&scores, &additive],
                vec![],
                &format!("{p}.attention/mask/Add"),
            );
            let probs = b.node(
                "Softmax",
                &[&scores],
                vec![Attribute::int("axis", -1)],
                &format!("{p}.attention/Softmax"),
            );
            let ctx = b.node(
                "MatMul",
                &[&probs, &v],
                vec![],
                &format!("{p}.attention/context/MatMul"),
            );
            let ctx = b.node(
                "Transpose",
                &[&ctx],
                vec![Attribute::ints("perm", &[0, 2, 1, 3])],
                &format!("{p}.attention/context/Transpose"),
            );
            let merge = b.ints(&[0, 0, nh * dv]);
            let ctx = b.node(
                "Reshape",
                &[&ctx, &merge],
                vec![],
                &format!("{p}.attention/context/Reshape"),
            );
            let out = linear(&mut b, store, plan, &m(Slot::AttnOut), h, &ctx)?;
            b.node(
                "Add",
                &[&out, &x],
                vec![],
                &format!("{p}.attention/residual/Add"),
            )
        } else {
            let bias = bias(&mut b, store, &m(Slot::AttnOut), h)?;
            b.node(
                "Add",
                &[&x, &bias],
                vec![],
                &format!("{p}.attention/dropped/Add"),
            )
        };
        let a = layer_norm(
            &mut b,
            store,
            &format!("{p}.{}", n.attn_norm),
            h,
            eps,
            &attended,
        )?;
        let y = if s.has_ffn() {
            let up = linear(&mut b, store, plan, &m(Slot::Up), s.intermediate_size, &a)?;
            let act = activation(&mut b, c.hidden_act, &up, &format!("{p}.intermediate/act"));
            let down = linear(&mut b, store, plan, &m(Slot::Down), h, &act)?;
            b.node(
                "Add",
                &[&down, &a],
                vec![],
                &format!("{p}.output/residual/Add"),
            )
        } else {
            let bias = bias(&mut b, store, &m(Slot::Down), h)?;
            b.node(
                "Add",
                &[&a, &bias],
                vec![],
                &format!("{p}.output/dropped/Add"),
            )
        };
        x = layer_norm(&mut b, store, &format!("{p}.{}", n.out_norm), h, eps, &y)?;
    }
    rename_output(&mut b, &x, LAST_HIDDEN_STATE);

    let dims = |names: &[&str]| -> Vec<Dim> {
        names
            .iter()
            .map(|n| match n.parse::<i64>() {
                Ok(v) => Dim::Value(v),
                Err(_) => Dim::Param(n.to_string()),
            })
            .collect()
    };
    let hs = h.to_string();
    let mut outputs = vec![ValueInfo {
        name: LAST_HIDDEN_STATE.into(),
        elem_type: DataType::Float,
        shape: dims(&["batch", "sequence", &hs]),
    }];
    if let Some(p) = pooling {
        let pooled = pool(&mut b, p, LAST_HIDDEN_STATE, &mask_f);
        rename_output(&mut b, &pooled, SENTENCE_EMBEDDING);
        outputs.push(ValueInfo {
            name: SENTENCE_EMBEDDING.into(),
            elem_type: DataType::Float,
            shape: dims(&["batch", &hs]),
        });
    }
    let inputs = [INPUT_IDS, ATTENTION_MASK, TOKEN_TYPE_IDS][..if takes_types { 3 } else { 2 }]
        .iter()
        .map(|n| ValueInfo {
            name: n.to_string(),
            elem_type: DataType::Int64,
            shape: dims(&["batch", "sequence"]),
        })
        .collect();
    let mut opset_import = vec![OpsetId {
        domain: String::new(),
        version: OPSET,
    }];
    if b.uses_ms {
        opset_import.push(OpsetId {
            domain: MS_DOMAIN.into(),
            version: MS_OPSET,
        });
    }
    Ok(Model {
        ir_version: IR_VERSION,
        producer_name: "compressor".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        graph: Graph {
            nodes: b.nodes,
            name: "bert".into(),
            initializers: b.inits,
            inputs,
            outputs,
        },
        opset_import,
    })
}

/// The `[vocab, groups, 1]` scales of a quantized word table, one per group of a row.
fn table_scales(q: &QuantTensor, vocab: usize, groups: usize, size: usize) -> Vec<f32> {
    (0..vocab)
        .flat_map(|r| (0..groups).map(move |g| (r, g)))
        .map(|(r, g)| q.scales[q.scale_index(r, g * size)])
        .collect()
}

/// The looked-up rows `[b, t, h]` of a word table stored as `codes` (`[vocab, groups, ..]`) and per-group `scales`
/// (`[vocab, groups]`): `Gather` of both, `decode` of the gathered codes to float `[b, t, groups, size]`, `Mul`,
/// `Reshape`.
fn scaled_table(
    b: &mut Builder,
    codes: Tensor,
    scales: Tensor,
    h: usize,
    decode: impl FnOnce(&mut Builder, String) -> String,
) -> String {
    let codes = b.init(codes);
    let scales = b.init(scales);
    let rows = b.node(
        "Gather",
        &[&codes, INPUT_IDS],
        vec![Attribute::int("axis", 0)],
        "embeddings/word/Gather",
    );
    let rows = decode(b, rows);
    let row_scales = b.node(
        "Gather",
        &[&scales, INPUT_IDS],
        vec![Attribute::int("axis", 0)],
        "embeddings/word/scales/Gather",
    );
    let rows = b.node("Mul", &[&rows, &row_scales], vec![], "embeddings/word/Mul");
    let shape = b.ints(&[0, 0, h as i64]);
    b.node(
        "Reshape",
        &[&rows, &shape],
        vec![],
        "embeddings/word/Reshape",
    )
}

/// `Cast` of a word-table value to `to`.
fn cast(b: &mut Builder, x: &str, to: DataType) -> String {
    b.node(
        "Cast",
        &[x],
        vec![Attribute::int("to", to as i64)],
        "embeddings/word/Cast",
    )
}

/// The looked-up rows of a word table stored as int8 codes (see `TableKind::Int8`).
fn int8_table(
    b: &mut Builder,
    store: &TensorStore,
    name: &str,
    vocab: usize,
    h: usize,
    groups: usize,
    copied: bool,
) -> Result<String> {
    let size = h / groups;
    let (codes, scales) = match store.get_quant(name).filter(|_| copied) {
        Some(q) => (q.codes.clone(), table_scales(&q, vocab, groups, size)),
        None => {
            let values = store.get_f32(name, &[vocab, h])?;
            let q =
                QuantTensor::quantize(&values, vocab, h, Encoding::symmetric(8, Strategy::Channel))
                    .map_err(|p| {
                        Error::Runtime(format!("cannot quantize `{name}` to int8: {p}"))
                    })?;
            (q.codes, q.scales)
        }
    };
    Ok(scaled_table(
        b,
        Tensor::i8(&format!("{name}_codes"), &[vocab, groups, size], &codes),
        Tensor::f32(&format!("{name}_scales"), &[vocab, groups, 1], &scales),
        h,
        |b, rows| cast(b, &rows, DataType::Float),
    ))
}

/// The looked-up rows of a word table stored as 4-bit codes two to a byte (see `TableKind::Int4`).
fn int4_table(
    b: &mut Builder,
    store: &TensorStore,
    name: &str,
    vocab: usize,
    h: usize,
    groups: usize,
) -> Result<String> {
    let size = h / groups;
    let q = store.get_quant(name).ok_or_else(|| {
        Error::Runtime(format!(
            "`{name}` is not stored as integer codes: it has no int4 form"
        ))
    })?;
    let packed: Vec<u8> = q
        .codes
        .chunks(2)
        .map(|p| ((p[0] + 8) as u8) | (((p[1] + 8) as u8) << 4))
        .collect();
    Ok(scaled_table(
        b,
        Tensor::u8(
            &format!("{name}_packed"),
            &[vocab, groups, size / 2],
            packed,
        ),
        Tensor::f32(
            &format!("{name}_scales"),
            &[vocab, groups, 1],
            &table_scales(&q, vocab, groups, size),
        ),
        h,
        |b, rows| {
            // Nibbles as int32: high = byte / 16, low = byte - 16 high; interleaved back (low first), cast, - 8.
            let rows = cast(b, &rows, DataType::Int32);
            let sixteen = b.init(Tensor::i32("embeddings_word_sixteen", &[], &[16]));
            let high = b.node("Div", &[&rows, &sixteen], vec![], "embeddings/word/high");
            let shifted = b.node("Mul", &[&high, &sixteen], vec![], "embeddings/word/shift");
            let low = b.node("Sub", &[&rows, &shifted], vec![], "embeddings/word/low");
            let last = b.ints(&[-1]);
            let low = b.node("Unsqueeze", &[&low, &last], vec![], "embeddings/word/low");
            let high = b.node("Unsqueeze", &[&high, &last], vec![], "embeddings/word/high");
            let pairs = b.node(
                "Concat",
                &[&low, &high],
                vec![Attribute::int("axis", -1)],
                "embeddings/word/Concat",
            );
            let pairs = cast(b, &pairs, DataType::Float);
            let eight = b.init(Tensor::f32("embeddings_word_eight", &[], &[8.0]));
            let codes = b.node("Sub", &[&pairs, &eight], vec![], "embeddings/word/Sub");
            let shape = b.ints(&[0, 0, groups as i64, size as i64]);
            b.node(
                "Reshape",
                &[&codes, &shape],
                vec![],
                "embeddings/word/Reshape",
            )
        },
    ))
}

/// Give the node producing `value` the graph output name `name`.
fn rename_output(b: &mut Builder, value: &str, name: &str) {
    for n in &mut b.nodes {
        for o in &mut n.outputs {
            if o == value {
                *o = name.to_string();
            }
        }
    }
}

/// The declared pooling of `hidden` `[b, t, h]` (mask `[b, t]` as float), as our runtime's `Bert::pool`.
fn pool(b: &mut Builder, p: Pooling, hidden: &str, mask_f: &str) -> String {
    let pooled = match p.mode {
        PoolingMode::Cls => {
            let zero = b.init(Tensor::i64("pool_cls_index", &[], &[0]));
            b.node(
                "Gather",
                &[hidden, &zero],
                vec![Attribute::int("axis", 1)],
                "pool/cls/Gather",
            )
        }
        PoolingMode::Mean => {
            let axis1 = b.ints(&[1]);
            let axis2 = b.ints(&[2]);
            let m = b.node(
                "Unsqueeze",
                &[mask_f, &axis2],
                vec![],
                "pool/mask/Unsqueeze",
            );
            let masked = b.node("Mul", &[hidden, &m], vec![], "pool/mean/Mul");
            let keep0 = vec![Attribute::int("keepdims", 0)];
            let summed = b.node(
                "ReduceSum",
                &[&masked, &axis1],
                keep0.clone(),
                "pool/mean/ReduceSum",
            );
            let counts = b.node(
                "ReduceSum",
                &[&m, &axis1],
                keep0,
                "pool/mean/count/ReduceSum",
            );
            let floor = b.scalar(1e-9);
            let counts = b.node("Max", &[&counts, &floor], vec![], "pool/mean/count/Max");
            b.node("Div", &[&summed, &counts], vec![], "pool/mean/Div")
        }
        PoolingMode::Max => {
            let axis2 = b.ints(&[2]);
            let m = b.node(
                "Unsqueeze",
                &[mask_f, &axis2],
                vec![],
                "pool/mask/Unsqueeze",
            );
            let zero = b.scalar(0.0);
            let pad = b.node("Equal", &[&m, &zero], vec![], "pool/max/Equal");
            let low = b.scalar(-1e9);
            let filled = b.node("Where", &[&pad, &low, hidden], vec![], "pool/max/Where");
            b.node(
                "ReduceMax",
                &[&filled],
                vec![Attribute::ints("axes", &[1]), Attribute::int("keepdims", 0)],
                "pool/max/ReduceMax",
            )
        }
    };
    if !p.normalize {
        return pooled;
    }
    let norm = b.node(
        "ReduceL2",
        &[&pooled],
        vec![Attribute::ints("axes", &[1]), Attribute::int("keepdims", 1)],
        "pool/normalize/ReduceL2",
    );
    let floor = b.scalar(1e-12);
    let norm = b.node("Max", &[&norm, &floor], vec![], "pool/normalize/Max");
    b.node("Div", &[&pooled, &norm], vec![], "pool/normalize/Div")
}
