//! The CPU inference path of `Bert` (bert.rs): the same computation, operation by operation, run on host f32
//! buffers with fused kernels instead of burn tensor ops. `Bert::embed`, `Bert::classify` and (without autodiff)
//! `Bert::trace` / `Bert::layer_inputs` take it on the CPU backends, in float, with an activation quantization
//! table, or observing calibration statistics, at the same points as `Bert::aq`; what needs tensors (gradients,
//! the CUDA backend) stays on burn. `Bert` copies its parameters into a [`HostBert`] on first use.
//!
//! What it saves over the tensor path (docs/benchmarks.md, "Forward throughput against PyTorch"): attention reads
//! each head's query, key and value in place from the projections' output and writes its context in place (no head
//! split / merge copies), softmax and GELU are vectorised loops (AVX-512 or AVX2 + FMA where the CPU has them,
//! chosen at run time), biases and residuals are folded into the matrix products' destinations, every step runs on
//! all rayon threads, and the activation buffers are reused across layers.

use rayon::prelude::*;

use crate::arch::{Activation, LayerShape, Pooling, PoolingMode};
use crate::batch::EncodedBatch;
use crate::error::{Error, Result};
use crate::family::HeadAct;
use crate::quant::act::{ActMode, Observer, Site};

/// A Linear on the host: `W^T` as `[in, out]` row-major, the bias, and the factors `(V^T [in, r], U^T [r, out])`
/// of a low-rank weight.
#[derive(Debug)]
pub(super) struct HostLinear {
    pub in_f: usize,
    pub out_f: usize,
    pub w_t: Vec<f32>,
    pub bias: Vec<f32>,
    pub factors: Option<(Vec<f32>, Vec<f32>, usize)>,
}

impl HostLinear {
    /// `dst[r, col..col + out] (+)= x[r] W^T + b` for the `rows` rows of `x` (`[rows, in]`); `dst` has row stride
    /// `dst_rs`. `accumulate`: add to what `dst` holds (the residual) instead of overwriting it.
    fn apply(
        &self,
        x: &[f32],
        rows: usize,
        dst: &mut [f32],
        dst_rs: usize,
        col: usize,
        accumulate: bool,
    ) {
        assert!(x.len() >= rows * self.in_f && col + self.out_f <= dst_rs);
        assert!(rows == 0 || dst.len() >= (rows - 1) * dst_rs + col + self.out_f);
        for r in 0..rows {
            let row = &mut dst[r * dst_rs + col..r * dst_rs + col + self.out_f];
            if accumulate {
                add_assign(row, &self.bias);
            } else {
                row.copy_from_slice(&self.bias);
            }
        }
        match &self.factors {
            None => matmul(
                rows,
                self.out_f,
                self.in_f,
                Out::new(dst, col, dst_rs),
                true,
                In::new(x, 0, self.in_f, 1),
                In::new(&self.w_t, 0, self.out_f, 1),
                1.0,
            ),
            Some((v_t, u_t, r)) => {
                let mut mid = vec![0.0f32; rows * r];
                matmul(
                    rows,
                    *r,
                    self.in_f,
                    Out::new(&mut mid, 0, *r),
                    false,
                    In::new(x, 0, self.in_f, 1),
                    In::new(v_t, 0, *r, 1),
                    1.0,
                );
                matmul(
                    rows,
                    self.out_f,
                    *r,
                    Out::new(dst, col, dst_rs),
                    true,
                    In::new(&mid, 0, *r, 1),
                    In::new(u_t, 0, self.out_f, 1),
                    1.0,
                );
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct HostNorm {
    pub gamma: Vec<f32>,
    pub beta: Vec<f32>,
    pub eps: f32,
}

impl HostNorm {
    /// LayerNorm of every row of `x` (`[rows, h]`) in place, with biased variance (as torch).
    fn apply(&self, x: &mut [f32]) {
        let h = self.gamma.len();
        x.par_chunks_mut(h * 16)
            .for_each(|rows| rows.chunks_exact_mut(h).for_each(|row| self.row(row)));
    }

    fn row(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = kernels::sum(row) / n;
        kernels::sub_scalar(row, mean);
        let var = kernels::sum_squares(row) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        kernels::scale_shift(row, inv, &self.gamma, &self.beta);
    }
}

/// A sublayer on the host: its parameters, or the output bias a dropped one leaves.
#[derive(Debug)]
pub(super) enum HostSub<T> {
    Kept(T),
    Dropped(Vec<f32>),
}

#[derive(Debug)]
pub(super) struct HostAttention {
    pub query: HostLinear,
    pub key: HostLinear,
    pub value: HostLinear,
    pub out: HostLinear,
}

#[derive(Debug)]
pub(super) struct HostLayer {
    pub shape: LayerShape,
    pub attention: HostSub<HostAttention>,
    pub attn_norm: HostNorm,
    pub ffn: HostSub<(HostLinear, HostLinear)>,
    pub out_norm: HostNorm,
}

/// A `Bert`'s parameters copied to host buffers (by `Bert` itself), for its `embed`, `classify` and `trace` on
/// the CPU.
#[derive(Debug)]
pub(super) struct HostBert {
    pub hidden: usize,
    /// The original head count (the relative bias table's width).
    pub heads: usize,
    pub word: Vec<f32>,
    pub position: Vec<f32>,
    pub token_type: Option<Vec<f32>>,
    /// MPNet's relative position bias table `[buckets, heads]`.
    pub relative: Option<Vec<f32>>,
    pub emb_norm: HostNorm,
    pub layers: Vec<HostLayer>,
    pub pooler: Option<HostLinear>,
    pub classifier: Option<HostLinear>,
}

/// What a forward reads from the model besides its parameters.
pub(super) struct Settings {
    /// The original head width, whose root scales the attention scores.
    pub head_dim: usize,
    pub act: Activation,
    pub pooling: Pooling,
    /// Where position ids count after the padding id (RoBERTa, MPNet), that id.
    pub position_padding: Option<i64>,
    /// The activation of the dense layer before the classifier.
    pub head_act: HeadAct,
}

impl HostBert {
    /// The last hidden state `[batch * seq, hidden]` of a checked batch, quantizing or observing activations as
    /// `mode` says, at the points `Bert::aq` uses.
    pub(super) fn encode(
        &self,
        cfg: &Settings,
        batch: &EncodedBatch,
        mode: Option<&ActMode>,
    ) -> Vec<f32> {
        self.run(cfg, batch, mode, None)
    }

    /// Per encoder layer, what `Bert::trace` returns (as host buffers `[batch * seq, width]`).
    pub(super) fn trace(
        &self,
        cfg: &Settings,
        batch: &EncodedBatch,
        mode: Option<&ActMode>,
    ) -> Vec<HostTrace> {
        let mut traces = Vec::with_capacity(self.layers.len());
        self.run(cfg, batch, mode, Some(&mut traces));
        traces
    }

    fn run(
        &self,
        cfg: &Settings,
        batch: &EncodedBatch,
        mode: Option<&ActMode>,
        mut keep: Option<&mut Vec<HostTrace>>,
    ) -> Vec<f32> {
        let (b, t, h) = (batch.batch_size, batch.seq_len, self.hidden);
        let n = b * t;
        let mut x = vec![0.0f32; n * h];
        let positions = batch.position_ids(cfg.position_padding);
        x.par_chunks_mut(h * t.max(1))
            .enumerate()
            .for_each(|(bi, rows)| {
                for (j, row) in rows.chunks_exact_mut(h).enumerate() {
                    let id = batch.input_ids[bi * t + j] as usize;
                    let pos = positions[bi * t + j] as usize;
                    let (w, p) = (
                        &self.word[id * h..(id + 1) * h],
                        &self.position[pos * h..(pos + 1) * h],
                    );
                    match &self.token_type {
                        Some(types) => {
                            let ty = batch.token_type_ids[bi * t + j] as usize;
                            let y = &types[ty * h..(ty + 1) * h];
                            for (((o, w), y), p) in row.iter_mut().zip(w).zip(y).zip(p) {
                                *o = (w + y) + p;
                            }
                        }
                        None => {
                            for ((o, w), p) in row.iter_mut().zip(w).zip(p) {
                                *o = w + p;
                            }
                        }
                    }
                }
            });
        let fq = |site: Site, layer: Option<usize>| point(mode, site, layer);
        fq(Site::EmbNormIn, None).apply(&mut x, h, 0, h);
        self.emb_norm.apply(&mut x);
        fq(Site::EmbNormOut, None).apply(&mut x, h, 0, h);
        // Per batch row: 0 for tokens, the most negative f32 for padding (as transformers); the padding's
        // probabilities are then zeroed exactly, and a row without tokens attends uniformly, as transformers' does.
        let additive: Vec<f32> = batch
            .attention_mask
            .iter()
            .map(|&m| if m == 0 { f32::MIN } else { 0.0 })
            .collect();
        let relative = self
            .relative
            .as_ref()
            .map(|table| super::relative_bias(table, self.heads, t));
        let run = Run {
            batch,
            additive: &additive,
            relative: relative.as_deref(),
            scale: 1.0 / (cfg.head_dim as f32).sqrt(),
            act: cfg.act,
            mode,
        };
        let mut buffers = Buffers::default();
        for (l, layer) in self.layers.iter().enumerate() {
            x = self.layer(l, layer, x, &run, &mut buffers, keep.as_deref_mut());
        }
        x
    }

    fn layer(
        &self,
        l: usize,
        layer: &HostLayer,
        x: Vec<f32>,
        run: &Run<'_>,
        buf: &mut Buffers,
        keep: Option<&mut Vec<HostTrace>>,
    ) -> Vec<f32> {
        let (b, t, h) = (run.batch.batch_size, run.batch.seq_len, self.hidden);
        let n = b * t;
        let s = &layer.shape;
        let fq = |site: Site| point(run.mode, site, Some(l));
        let mut trace = keep.is_some().then(|| HostTrace {
            input: x.clone(),
            context: None,
            ffn_input: Vec::new(),
            activation: None,
            output: Vec::new(),
        });
        let mut a = std::mem::take(&mut buf.residual);
        a.clear();
        a.extend_from_slice(&x);
        match &layer.attention {
            HostSub::Kept(att) => {
                let (nh, dq, dv) = (s.heads.len(), s.qk_head_dim, s.vo_head_dim);
                let (qk, vo) = (nh * dq, nh * dv);
                let w = 2 * qk + vo;
                let qkv = sized(&mut buf.qkv, n * w);
                att.query.apply(&x, n, qkv, w, 0, false);
                att.key.apply(&x, n, qkv, w, qk, false);
                att.value.apply(&x, n, qkv, w, 2 * qk, false);
                // The score scale goes into the product, unless the scaled query is quantized (as `Bert::aq` sees it).
                let q_point = fq(Site::Q);
                let alpha = if q_point.is_on() {
                    for row in qkv.chunks_exact_mut(w) {
                        row[..qk].iter_mut().for_each(|v| *v *= run.scale);
                    }
                    1.0
                } else {
                    run.scale
                };
                q_point.apply(qkv, w, 0, qk);
                fq(Site::K).apply(qkv, w, qk, qk);
                fq(Site::V).apply(qkv, w, 2 * qk, vo);
                let ctx = sized(&mut buf.ctx, n * vo);
                attention(
                    qkv,
                    ctx,
                    Dims { b, t, nh, dq, dv },
                    &s.heads,
                    run,
                    alpha,
                    [fq(Site::Scores), fq(Site::Probs)],
                );
                fq(Site::Context).apply(ctx, vo, 0, vo);
                if let Some(tr) = &mut trace {
                    tr.context = Some(ctx.to_vec());
                }
                att.out.apply(ctx, n, &mut a, h, 0, true);
            }
            HostSub::Dropped(bias) => a.chunks_exact_mut(h).for_each(|r| add_assign(r, bias)),
        }
        fq(Site::AttnNormIn).apply(&mut a, h, 0, h);
        layer.attn_norm.apply(&mut a);
        fq(Site::AttnNormOut).apply(&mut a, h, 0, h);
        if let Some(tr) = &mut trace {
            tr.ffn_input = a.clone();
        }
        let mut y = x;
        y.copy_from_slice(&a);
        match &layer.ffn {
            HostSub::Kept((up, down)) => {
                let i = s.intermediate_size;
                let mid = sized(&mut buf.mid, n * i);
                up.apply(&a, n, mid, i, 0, false);
                fq(Site::GeluIn).apply(mid, i, 0, i);
                mid.par_chunks_mut(1 << 14).for_each(|c| match run.act {
                    Activation::Gelu => kernels::gelu(c),
                    Activation::GeluTanh => gelu_tanh(c),
                    Activation::Relu => c.iter_mut().for_each(|v| *v = v.max(0.0)),
                });
                fq(Site::GeluOut).apply(mid, i, 0, i);
                if let Some(tr) = &mut trace {
                    tr.activation = Some(mid.to_vec());
                }
                down.apply(mid, n, &mut y, h, 0, true);
            }
            HostSub::Dropped(bias) => y.chunks_exact_mut(h).for_each(|r| add_assign(r, bias)),
        }
        fq(Site::FfnNormIn).apply(&mut y, h, 0, h);
        layer.out_norm.apply(&mut y);
        fq(Site::FfnNormOut).apply(&mut y, h, 0, h);
        buf.residual = a;
        if let (Some(mut tr), Some(keep)) = (trace, keep) {
            tr.output = y.clone();
            keep.push(tr);
        }
        y
    }

    /// The sentence embeddings the checkpoint declares, one row per input.
    pub(super) fn embed(
        &self,
        cfg: &Settings,
        batch: &EncodedBatch,
        mode: Option<&ActMode>,
    ) -> Vec<Vec<f32>> {
        let hidden = self.encode(cfg, batch, mode);
        let (t, h) = (batch.seq_len, self.hidden);
        (0..batch.batch_size)
            .map(|bi| {
                let rows = &hidden[bi * t * h..(bi + 1) * t * h];
                let mask = &batch.attention_mask[bi * t..(bi + 1) * t];
                let mut pooled = match cfg.pooling.mode {
                    PoolingMode::Cls => rows[..h].to_vec(),
                    PoolingMode::Mean => {
                        let mut sum = vec![0.0f32; h];
                        let mut count = 0.0f32;
                        for (row, &m) in rows.chunks_exact(h).zip(mask) {
                            let m = m as f32;
                            sum.iter_mut().zip(row).for_each(|(s, v)| *s += v * m);
                            count += m;
                        }
                        let count = count.max(1e-9);
                        sum.iter_mut().for_each(|s| *s /= count);
                        sum
                    }
                    PoolingMode::Max => {
                        let mut max = vec![f32::NEG_INFINITY; h];
                        for (row, &m) in rows.chunks_exact(h).zip(mask) {
                            for (mx, &v) in max.iter_mut().zip(row) {
                                *mx = mx.max(if m == 0 { -1e9 } else { v });
                            }
                        }
                        max
                    }
                };
                if cfg.pooling.normalize {
                    let norm = pooled.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                    pooled.iter_mut().for_each(|v| *v /= norm);
                }
                pooled
            })
            .collect()
    }

    /// Classifier logits, one row per input.
    pub(super) fn classify(
        &self,
        cfg: &Settings,
        batch: &EncodedBatch,
        mode: Option<&ActMode>,
    ) -> Result<Vec<Vec<f32>>> {
        // In the order `Bert::logits` checks them.
        let classifier = self.classifier.as_ref().ok_or_else(|| {
            Error::Runtime("the checkpoint has no classification head (BertModel)".into())
        })?;
        let pooler = self.pooler.as_ref().ok_or_else(|| {
            Error::Runtime("the checkpoint has no pooler (pooler.dense.*)".into())
        })?;
        let hidden = self.encode(cfg, batch, mode);
        let (b, t, h) = (batch.batch_size, batch.seq_len, self.hidden);
        let cls: Vec<f32> = (0..b)
            .flat_map(|bi| hidden[bi * t * h..bi * t * h + h].iter().copied())
            .collect();
        let mut pooled = vec![0.0f32; b * h];
        pooler.apply(&cls, b, &mut pooled, h, 0, false);
        match cfg.head_act {
            HeadAct::Tanh => pooled.iter_mut().for_each(|v| *v = v.tanh()),
            HeadAct::Relu => pooled.iter_mut().for_each(|v| *v = v.max(0.0)),
        }
        point(mode, Site::PoolerOut, None).apply(&mut pooled, h, 0, h);
        let labels = classifier.out_f;
        let mut logits = vec![0.0f32; b * labels];
        classifier.apply(&pooled, b, &mut logits, labels, 0, false);
        Ok(logits.chunks(labels.max(1)).map(<[f32]>::to_vec).collect())
    }
}

/// One layer's activations (see `Bert::trace`), `[batch * seq, width]` row-major; the inner ones are `None` for a
/// dropped sublayer.
pub(super) struct HostTrace {
    pub input: Vec<f32>,
    pub context: Option<Vec<f32>>,
    pub ffn_input: Vec<f32>,
    pub activation: Option<Vec<f32>>,
    pub output: Vec<f32>,
}

/// What every layer of one forward shares.
struct Run<'a> {
    batch: &'a EncodedBatch,
    /// Per token of the batch: 0, or the most negative f32 for padding.
    additive: &'a [f32],
    /// MPNet's relative position bias `[heads, t, t]` of the original heads.
    relative: Option<&'a [f32]>,
    /// `1 / sqrt(original head width)`, whatever width a pruned or factorized head keeps.
    scale: f32,
    act: Activation,
    mode: Option<&'a ActMode>,
}

/// What happens at one activation point: nothing, fake quantization with the table's scales (`ActMode::Quantize`),
/// or recording the values for calibration (`ActMode::Observe`), as `Bert::aq` does.
enum Hook<'a> {
    Off,
    /// A scale per block of the last dimension, or one.
    Quantize {
        scales: &'a [f32],
        block: usize,
        qmin: f32,
        qmax: f32,
    },
    Observe {
        observer: &'a std::sync::Mutex<Observer>,
        name: String,
        per_tensor: bool,
    },
}

fn point<'a>(mode: Option<&'a ActMode>, site: Site, layer: Option<usize>) -> Hook<'a> {
    match mode {
        None => Hook::Off,
        Some(ActMode::Quantize(t)) => match t.points.get(&site.name(layer)) {
            None => Hook::Off,
            Some(p) => {
                let (qmin, qmax) = t.range(p.unsigned);
                Hook::Quantize {
                    scales: &p.scales,
                    block: t.block_size.max(1),
                    qmin,
                    qmax,
                }
            }
        },
        Some(ActMode::Observe(observer)) => Hook::Observe {
            observer,
            name: site.name(layer),
            per_tensor: site.per_tensor(),
        },
    }
}

impl Hook<'_> {
    fn is_on(&self) -> bool {
        !matches!(self, Hook::Off)
    }

    /// On columns `col..col + width` of every row of `x` (row stride `rs`); blocks count from `col`. Fake
    /// quantization is `round_ties_even(x / s)` clamped to the code range, times `s`; observation records the
    /// columns as one `[rows, width]` tensor.
    fn apply(&self, x: &mut [f32], rs: usize, col: usize, width: usize) {
        match self {
            Hook::Off => {}
            Hook::Quantize {
                scales,
                block,
                qmin,
                qmax,
            } => {
                let rows_per_task = (1usize << 14).div_ceil(rs.max(1));
                x.par_chunks_mut(rs * rows_per_task).for_each(|rows| {
                    for row in rows.chunks_exact_mut(rs) {
                        let row = &mut row[col..col + width];
                        if let [s] = scales {
                            kernels::fake_quant(row, *s, *qmin, *qmax);
                            continue;
                        }
                        for (j, part) in row.chunks_mut(*block).enumerate() {
                            let s = scales[j.min(scales.len() - 1)];
                            kernels::fake_quant(part, s, *qmin, *qmax);
                        }
                    }
                });
            }
            Hook::Observe {
                observer,
                name,
                per_tensor,
            } => {
                let gathered;
                let values: &[f32] = if col == 0 && rs == width {
                    x
                } else {
                    gathered = x
                        .chunks_exact(rs)
                        .flat_map(|row| row[col..col + width].iter().copied())
                        .collect::<Vec<f32>>();
                    &gathered
                };
                if let Ok(mut o) = observer.lock() {
                    o.observe(name, values, width, *per_tensor);
                }
            }
        }
    }
}

/// Activation buffers reused from layer to layer.
#[derive(Default)]
struct Buffers {
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    mid: Vec<f32>,
    residual: Vec<f32>,
}

/// `v` resized to `len` (its old values are overwritten by the caller).
fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    v.resize(len, 0.0);
    &mut v[..len]
}

fn add_assign(dst: &mut [f32], src: &[f32]) {
    dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
}

/// `x * 0.5 * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3)))`, as the tensor path composes it.
fn gelu_tanh(xs: &mut [f32]) {
    let c = (2.0 / std::f64::consts::PI).sqrt() as f32;
    for v in xs {
        let x = *v;
        *v = x * (((x + x * x * x * 0.044715) * c).tanh() + 1.0) * 0.5;
    }
}

#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    nh: usize,
    dq: usize,
    dv: usize,
}

/// Scaled dot-product attention of every (batch row, head) pair in parallel. `qkv` is `[b * t, 2 qk + vo]` (the
/// query, key and value projections side by side, head-major within each); the context goes to `ctx`
/// (`[b * t, vo]`, head-major) without any copy of the heads.
fn attention(
    qkv: &[f32],
    ctx: &mut [f32],
    d: Dims,
    heads: &[usize],
    run: &Run<'_>,
    alpha: f32,
    [scores_hook, probs_hook]: [Hook<'_>; 2],
) {
    let Dims { b, t, nh, dq, dv } = d;
    let (additive, mask) = (run.additive, &run.batch.attention_mask);
    let (qk, vo) = (nh * dq, nh * dv);
    let w = 2 * qk + vo;
    assert!(qkv.len() >= b * t * w && ctx.len() >= b * t * vo && additive.len() >= b * t);
    let out = SharedOut(ctx.as_mut_ptr());
    // Observed scores and probabilities are gathered for the whole batch (`[b, heads, t, t]`, as the tensor path
    // observes them) and recorded once after the loop; quantization happens per pair.
    let gather = |h: &Hook| matches!(h, Hook::Observe { .. }).then(|| vec![0.0f32; b * nh * t * t]);
    let (mut scores_all, mut probs_all) = (gather(&scores_hook), gather(&probs_hook));
    let scores_to = scores_all.as_mut().map(|v| SharedOut(v.as_mut_ptr()));
    let probs_to = probs_all.as_mut().map(|v| SharedOut(v.as_mut_ptr()));
    // SAFETY (both): pair `p` copies its t*t values to elements p*t*t..(p+1)*t*t of a b*nh*t*t buffer; no two
    // pairs share an element, and the buffers outlive the loop.
    let record = |to: &Option<SharedOut>, hook: &Hook, values: &mut [f32], pair: usize| match to {
        Some(all) => unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), all.at(pair * t * t), t * t);
        },
        None => hook.apply(values, t, 0, t),
    };
    (0..b * nh).into_par_iter().for_each_init(
        || vec![0.0f32; t * t],
        |scores, pair| {
            let (bi, head) = (pair / nh, pair % nh);
            let base = bi * t * w;
            // scores = scale * Q K^T, reading Q and K in place (K^T: row stride 1, column stride w).
            matmul(
                t,
                t,
                dq,
                Out::new(scores, 0, t),
                false,
                In::new(qkv, base + head * dq, w, 1),
                In::new(qkv, base + qk + head * dq, 1, w),
                alpha,
            );
            if let Some(relative) = run.relative {
                let bias = &relative[heads[head] * t * t..(heads[head] + 1) * t * t];
                add_assign(scores, bias);
            }
            let add = &additive[bi * t..(bi + 1) * t];
            let keep = &mask[bi * t..(bi + 1) * t];
            let any = keep.iter().any(|&m| m != 0);
            // Scores are quantized before the mask is added, so padding stays masked (as `Bert::aq`).
            record(&scores_to, &scores_hook, scores, pair);
            for row in scores.chunks_exact_mut(t) {
                if any {
                    kernels::masked_softmax(row, add, keep);
                } else {
                    row.fill(1.0 / t as f32);
                }
            }
            record(&probs_to, &probs_hook, scores, pair);
            // ctx[:, head] = P V, written in place into this head's columns of this batch row's tokens. Pairs write
            // disjoint (row, column) ranges of `ctx`.
            // SAFETY: the destination of pair (bi, head) is rows bi*t..(bi+1)*t, columns head*dv..(head+1)*dv of a
            // [b*t, vo] buffer whose bounds were checked above; no two pairs share an element.
            unsafe {
                gemm_raw(
                    t,
                    dv,
                    t,
                    out.at(bi * t * vo + head * dv),
                    vo as isize,
                    false,
                    scores.as_ptr(),
                    t as isize,
                    1,
                    qkv.as_ptr().add(base + 2 * qk + head * dv),
                    w as isize,
                    1,
                    1.0,
                    gemm::Parallelism::None,
                );
            }
        },
    );
    for (all, hook) in [(scores_all, scores_hook), (probs_all, probs_hook)] {
        if let Some(mut all) = all {
            hook.apply(&mut all, t, 0, t);
        }
    }
}

/// A raw destination shared by the attention's parallel tasks, which write disjoint parts of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);
// SAFETY: see `attention`: tasks write disjoint elements and the buffer outlives the parallel loop.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The element `offset` elements in.
    ///
    /// # Safety
    /// `offset` must lie within the buffer.
    unsafe fn at(&self, offset: usize) -> *mut f32 {
        unsafe { self.0.add(offset) }
    }
}

/// A strided matrix operand: element (i, j) at `data[offset + i * rs + j * cs]`.
struct In<'a> {
    data: &'a [f32],
    offset: usize,
    rs: usize,
    cs: usize,
}

impl<'a> In<'a> {
    fn new(data: &'a [f32], offset: usize, rs: usize, cs: usize) -> Self {
        Self {
            data,
            offset,
            rs,
            cs,
        }
    }

    fn check(&self, rows: usize, cols: usize) {
        if rows > 0 && cols > 0 {
            assert!(self.offset + (rows - 1) * self.rs + (cols - 1) * self.cs < self.data.len());
        }
    }
}

/// A row-major destination with row stride `rs` starting at `offset`.
struct Out<'a> {
    data: &'a mut [f32],
    offset: usize,
    rs: usize,
}

impl<'a> Out<'a> {
    fn new(data: &'a mut [f32], offset: usize, rs: usize) -> Self {
        Self { data, offset, rs }
    }
}

/// `dst = alpha * lhs rhs` (`lhs` `[m, k]`, `rhs` `[k, n]`), added to what `dst` holds when `read_dst`; bounds
/// checked; large products use every rayon thread.
#[allow(clippy::too_many_arguments)]
fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: Out<'_>,
    read_dst: bool,
    lhs: In<'_>,
    rhs: In<'_>,
    alpha: f32,
) {
    if m == 0 || n == 0 {
        return;
    }
    lhs.check(m, k);
    rhs.check(k, n);
    assert!(dst.offset + (m - 1) * dst.rs + n <= dst.data.len());
    let parallelism = if m * n * k >= 1 << 21 && rayon::current_num_threads() > 1 {
        gemm::Parallelism::Rayon(rayon::current_num_threads())
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element the product reads or writes was bounds-checked above; `dst` is borrowed mutably and
    // does not alias the inputs.
    unsafe {
        gemm_raw(
            m,
            n,
            k,
            dst.data.as_mut_ptr().add(dst.offset),
            dst.rs as isize,
            read_dst,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.rs as isize,
            lhs.cs as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.rs as isize,
            rhs.cs as isize,
            alpha,
            parallelism,
        );
    }
}

/// `dst = (read_dst ? dst : 0) + alpha * lhs rhs` through the `gemm` crate (the kernel burn's CPU backend uses).
///
/// # Safety
/// The pointers must be valid for the given shapes and strides, and `dst` must not alias `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_rs: isize,
    lhs_cs: isize,
    rhs: *const f32,
    rhs_rs: isize,
    rhs_cs: isize,
    alpha: f32,
    parallelism: gemm::Parallelism,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            1.0,
            alpha,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Element-wise kernels written as plain loops that the compiler vectorises, compiled three times: for the
/// baseline target, for AVX2 + FMA and for AVX-512, picked at run time.
mod kernels {
    /// `exp(x)` by Cody-Waite range reduction and a degree-6 polynomial (Cephes `expf`, under 2 ulp on the
    /// range softmax uses); inputs below -87.3 give about 1e-38.
    #[inline(always)]
    fn exp(x: f32) -> f32 {
        let x = x.clamp(-87.3, 88.3);
        // Round to nearest by the 1.5 * 2^23 trick (vectorises without a rounding instruction).
        let magic = 12_582_912.0f32;
        let shifted = x * std::f32::consts::LOG2_E + magic;
        let n = shifted - magic;
        let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
        let z = r * r;
        let p = (((((1.987_569_2e-4 * r + 1.398_2e-3) * r + 8.333_452e-3) * r + 4.166_579_6e-2)
            * r
            + 0.166_666_65)
            * r
            + 0.5)
            * z
            + r
            + 1.0;
        // 2^n from the integer the shift left in the low mantissa bits (`shifted` = 0x4B40_0000 + n as bits): bit
        // operations only, where `n as i32` would not vectorise.
        let bits = shifted
            .to_bits()
            .wrapping_sub(0x4B40_0000)
            .wrapping_add(127)
            << 23;
        p * f32::from_bits(bits)
    }

    /// `erf(x)` by Abramowitz and Stegun 7.1.26 (absolute error under 1.5e-7 in exact arithmetic, 5e-7 in f32), the formula PyTorch's
    /// vectorised CPU GELU uses.
    #[inline(always)]
    fn erf(x: f32) -> f32 {
        let a = x.abs();
        let t = 1.0 / (1.0 + 0.327_591_1 * a);
        let poly = ((((1.061_405_4 * t - 1.453_152) * t + 1.421_413_8) * t - 0.284_496_74) * t
            + 0.254_829_6)
            * t;
        (1.0 - poly * exp(-a * a)).copysign(x)
    }

    #[inline(always)]
    fn gelu_body(xs: &mut [f32]) {
        for v in xs {
            let x = *v;
            *v = x * 0.5 * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2));
        }
    }

    /// The sum of `f(x)` over `xs` with eight independent partial sums (vectorisable; the order is fixed, so results
    /// are reproducible).
    #[inline(always)]
    fn lane_sum(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
        let mut acc = [0.0f32; 8];
        let chunks = xs.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for (a, &v) in acc.iter_mut().zip(c) {
                *a += f(v);
            }
        }
        let mut s =
            ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
        for &v in rest {
            s += f(v);
        }
        s
    }

    #[inline(always)]
    fn sum_body(xs: &[f32]) -> f32 {
        lane_sum(xs, |v| v)
    }

    #[inline(always)]
    fn sum_squares_body(xs: &[f32]) -> f32 {
        lane_sum(xs, |v| v * v)
    }

    #[inline(always)]
    fn sub_scalar_body(xs: &mut [f32], c: f32) {
        xs.iter_mut().for_each(|v| *v -= c);
    }

    #[inline(always)]
    fn scale_shift_body(xs: &mut [f32], inv: f32, gamma: &[f32], beta: &[f32]) {
        for ((v, g), b) in xs.iter_mut().zip(gamma).zip(beta) {
            *v = *v * inv * g + b;
        }
    }

    /// Softmax of one score row after adding the mask (0 or the most negative f32); keys with `keep == 0` get
    /// probability exactly 0.
    #[inline(always)]
    fn masked_softmax_body(row: &mut [f32], add: &[f32], keep: &[i64]) {
        let mut max = [f32::MIN; 8];
        for (v, a) in row.iter_mut().zip(add) {
            *v += a;
        }
        let chunks = row.chunks_exact(8);
        let rest = chunks.remainder();
        for c in chunks {
            for i in 0..8 {
                max[i] = max[i].max(c[i]);
            }
        }
        let mut m = max.iter().fold(f32::MIN, |a, &b| a.max(b));
        for &v in rest {
            m = m.max(v);
        }
        for (v, &k) in row.iter_mut().zip(keep) {
            let e = exp(*v - m);
            *v = if k == 0 { 0.0 } else { e };
        }
        let inv = 1.0 / sum_body(row);
        row.iter_mut().for_each(|v| *v *= inv);
    }

    #[inline(always)]
    fn fake_quant_body(xs: &mut [f32], s: f32, qmin: f32, qmax: f32) {
        xs.iter_mut()
            .for_each(|v| *v = (*v / s).round_ties_even().clamp(qmin, qmax) * s);
    }

    macro_rules! dispatch {
        ($(#[$doc:meta])* $name:ident => $body:ident ($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
            $(#[$doc])*
            pub fn $name($($arg: $ty),*) $(-> $ret)? {
                #[cfg(target_arch = "x86_64")]
                {
                    #[target_feature(enable = "avx512f,avx2,fma")]
                    unsafe fn widest($($arg: $ty),*) $(-> $ret)? {
                        $body($($arg),*)
                    }
                    #[target_feature(enable = "avx2,fma")]
                    unsafe fn wide($($arg: $ty),*) $(-> $ret)? {
                        $body($($arg),*)
                    }
                    if std::arch::is_x86_feature_detected!("avx512f") {
                        // SAFETY: the CPU has the features `widest` was compiled for.
                        return unsafe { widest($($arg),*) };
                    }
                    if std::arch::is_x86_feature_detected!("avx2")
                        && std::arch::is_x86_feature_detected!("fma")
                    {
                        // SAFETY: the CPU has the features `wide` was compiled for.
                        return unsafe { wide($($arg),*) };
                    }
                }
                $body($($arg),*)
            }
        };
    }

    dispatch!(
        /// Exact GELU, `x * 0.5 * (1 + erf(x / sqrt 2))`, in place.
        gelu => gelu_body(xs: &mut [f32])
    );
    dispatch!(sum => sum_body(xs: &[f32]) -> f32);
    dispatch!(fake_quant => fake_quant_body(xs: &mut [f32], s: f32, qmin: f32, qmax: f32));
    dispatch!(sum_squares => sum_squares_body(xs: &[f32]) -> f32);
    dispatch!(sub_scalar => sub_scalar_body(xs: &mut [f32], c: f32));
    dispatch!(scale_shift => scale_shift_body(xs: &mut [f32], inv: f32, gamma: &[f32], beta: &[f32]));
    dispatch!(masked_softmax => masked_softmax_body(row: &mut [f32], add: &[f32], keep: &[i64]));

    #[cfg(test)]
    mod tests {
        #[test]
        fn exp_and_erf_match_the_standard_library() {
            for i in -2000..=2000 {
                let x = i as f32 * 0.01;
                let (e, want) = (super::exp(x), x.exp());
                assert!(
                    ((e - want) / want).abs() < 3e-7,
                    "exp({x}) = {e}, want {want}"
                );
                let (f, want) = (super::erf(x), libm_erf(f64::from(x)));
                assert!(
                    (f64::from(f) - want).abs() < 5e-7,
                    "erf({x}) = {f}, want {want}"
                );
            }
            assert_eq!(super::exp(f32::MIN), super::exp(-87.3));
            assert!(super::exp(-87.3) < 1e-37);
        }

        /// erf by its Maclaurin series (|x| < 3) or its asymptotic complement, in f64: a reference independent of
        /// the approximation under test.
        fn libm_erf(x: f64) -> f64 {
            let a = x.abs();
            let v = if a < 3.0 {
                let (mut term, mut sum, mut k) = (a, a, 0.0f64);
                while term.abs() > 1e-17 {
                    k += 1.0;
                    term *= -a * a / k;
                    sum += term / (2.0 * k + 1.0);
                }
                sum * 2.0 / std::f64::consts::PI.sqrt()
            } else {
                // erfc(a) ~ exp(-a^2) / (a sqrt(pi)) (1 - 1/(2a^2) + 3/(4a^4) - 15/(8a^6)); below 1e-4 here.
                let a2 = a * a;
                let series =
                    1.0 - 1.0 / (2.0 * a2) + 3.0 / (4.0 * a2 * a2) - 15.0 / (8.0 * a2 * a2 * a2);
                1.0 - (-a2).exp() / (a * std::f64::consts::PI.sqrt()) * series
            };
            v.copysign(x)
        }

        #[test]
        fn softmax_zeroes_masked_keys_and_sums_to_one() {
            let mut row = vec![1.0f32, 2.0, 3.0, 4.0, 0.5, 0.25, 7.0, 1.0, 2.0, 3.0];
            let keep = [1i64, 1, 1, 1, 1, 1, 0, 1, 1, 0];
            let add: Vec<f32> = keep
                .iter()
                .map(|&k| if k == 0 { f32::MIN } else { 0.0 })
                .collect();
            let want: Vec<f64> = {
                let e: Vec<f64> = row
                    .iter()
                    .zip(&keep)
                    .map(|(&v, &k)| if k == 0 { 0.0 } else { f64::from(v).exp() })
                    .collect();
                let s: f64 = e.iter().sum();
                e.iter().map(|v| v / s).collect()
            };
            super::masked_softmax(&mut row, &add, &keep);
            for (got, want) in row.iter().zip(&want) {
                assert!((f64::from(*got) - want).abs() < 1e-7, "{got} vs {want}");
            }
            assert_eq!(row[6], 0.0);
        }
    }
}
