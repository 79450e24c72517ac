//! Evaluation metrics on plain slices, defined exactly as the reference implementations that MTEB and GLUE
//! report define them.
//!
//! | function | reference |
//! | --- | --- |
//! | [`pearson`] | `scipy.stats.pearsonr` |
//! | [`spearman`], [`rank_average`] | `scipy.stats.spearmanr`, `scipy.stats.rankdata(method="average")` |
//! | [`accuracy`] | `sklearn.metrics.accuracy_score` |
//! | [`f1_binary`] | `sklearn.metrics.f1_score(average="binary", pos_label=positive)` |
//! | [`macro_f1`] | `sklearn.metrics.f1_score(average="macro")` |
//! | [`matthews_corrcoef`] | `sklearn.metrics.matthews_corrcoef` (multiclass form) |
//! | [`average_precision`] | `sklearn.metrics.average_precision_score` (binary) |
//! | [`best_accuracy_threshold`], [`best_f1_threshold`] | MTEB pair classification (`_find_best_acc_and_threshold`, `_find_best_f1_and_threshold`, MTEB 2.x) |
//! | [`ndcg_at_k`], [`recall_at_k`], [`precision_at_k`], [`map_at_k`] | `pytrec_eval` measures `ndcg_cut.k`, `recall.k`, `P.k`, `map_cut.k` with binary relevance (as MTEB retrieval calls them) |
//! | [`mrr_at_k`] | MTEB `retrieval_metrics.mrr` |
//! | [`rank_by_score`], [`top_k_by_score`] | trec_eval's run order: score descending, ties by document id descending |
//! | [`v_measure`], [`homogeneity_completeness_v_measure`] | `sklearn.metrics.v_measure_score` (beta = 1) |
//! | [`cosine`], [`paired_scores`] | `1 - sklearn.metrics.pairwise.paired_cosine_distances`, `paired_euclidean_distances`, `paired_manhattan_distances`, dot product |
//!
//! All arithmetic is `f64`; `f32` inputs are widened exactly, so ties in `f32` scores stay ties. The agreement with
//! the references is checked by `eval/tests/metrics.rs` against numbers written by
//! `eval/scripts/make_metric_references.py`.
//!
//! Where a reference returns NaN (with a warning) because the metric is undefined, these functions return an
//! [`Error`] instead: a constant input to a correlation ([`Error::Constant`]), no positive label for average
//! precision, best F1 or a retrieval metric ([`Error::NoPositives`]). Where a reference defines a value by
//! convention, the same convention is used and documented (the Matthews coefficient of a constant prediction is 0,
//! as in scikit-learn). Empty input, mismatched lengths and NaN/infinite values are always errors.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------------------------
// Input checks

fn check_nonempty(metric: &'static str, input: &'static str, len: usize) -> Result<()> {
    if len == 0 {
        return Err(Error::Empty { metric, input });
    }
    Ok(())
}

fn check_same_len(
    metric: &'static str,
    left: &'static str,
    left_len: usize,
    right: &'static str,
    right_len: usize,
) -> Result<()> {
    if left_len != right_len {
        return Err(Error::LengthMismatch {
            metric,
            left,
            left_len,
            right,
            right_len,
        });
    }
    Ok(())
}

/// Widens to `f64`, rejecting NaN and infinities.
fn finite_f64<T: Copy + Into<f64>>(
    metric: &'static str,
    input: &'static str,
    xs: &[T],
) -> Result<Vec<f64>> {
    xs.iter()
        .enumerate()
        .map(|(index, &v)| {
            let value: f64 = v.into();
            if value.is_finite() {
                Ok(value)
            } else {
                Err(Error::NotFinite {
                    metric,
                    input,
                    index,
                    value,
                })
            }
        })
        .collect()
}

/// Checks that two paired inputs are non-empty, of equal length and finite, and widens them.
fn paired_f64<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    metric: &'static str,
    (left, xs): (&'static str, &[A]),
    (right, ys): (&'static str, &[B]),
) -> Result<(Vec<f64>, Vec<f64>)> {
    check_nonempty(metric, left, xs.len())?;
    check_nonempty(metric, right, ys.len())?;
    check_same_len(metric, left, xs.len(), right, ys.len())?;
    Ok((
        finite_f64(metric, left, xs)?,
        finite_f64(metric, right, ys)?,
    ))
}

fn check_labels(metric: &'static str, pred: &[usize], gold: &[usize]) -> Result<()> {
    check_nonempty(metric, "pred", pred.len())?;
    check_nonempty(metric, "gold", gold.len())?;
    check_same_len(metric, "pred", pred.len(), "gold", gold.len())
}

// ---------------------------------------------------------------------------------------------------------------
// Correlations

/// Pearson's correlation coefficient, as `scipy.stats.pearsonr(x, y).statistic`.
///
/// Computed on mean-centred values in `f64` and clipped to `[-1, 1]`.
///
/// # Errors
/// Empty input, different lengths, fewer than two values, a non-finite value, or a constant `x` or `y`
/// (the correlation is undefined; scipy returns NaN with a warning).
pub fn pearson<A: Copy + Into<f64>, B: Copy + Into<f64>>(x: &[A], y: &[B]) -> Result<f64> {
    let (x, y) = paired_f64("pearson", ("x", x), ("y", y))?;
    pearson_f64("pearson", &x, &y)
}

fn pearson_f64(metric: &'static str, x: &[f64], y: &[f64]) -> Result<f64> {
    if x.len() < 2 {
        return Err(Error::TooShort {
            metric,
            input: "x",
            len: x.len(),
            min: 2,
        });
    }
    for (input, v) in [("x", x), ("y", y)] {
        if v.iter().all(|&a| a == v[0]) {
            return Err(Error::Constant {
                metric,
                input,
                value: v[0],
            });
        }
    }
    let n = x.len() as f64;
    let mx = x.iter().sum::<f64>() / n;
    let my = y.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
    for (&a, &b) in x.iter().zip(y) {
        let (da, db) = (a - mx, b - my);
        sxy += da * db;
        sxx += da * da;
        syy += db * db;
    }
    Ok((sxy / (sxx.sqrt() * syy.sqrt())).clamp(-1.0, 1.0))
}

/// Ranks starting at 1, ties given the average of the ranks they span: `scipy.stats.rankdata(x, "average")`.
///
/// The input must not hold NaN (NaN has no rank; [`spearman`] checks this before ranking).
pub fn rank_average(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && x[order[end]] == x[order[start]] {
            end += 1;
        }
        // positions start..end (0-based) hold ranks start+1..=end, whose mean is (start + 1 + end) / 2
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        start = end;
    }
    ranks
}

/// Spearman's rank correlation, as `scipy.stats.spearmanr(x, y).statistic`: the Pearson correlation of the
/// average ranks ([`rank_average`]), so ties are handled as scipy handles them.
///
/// # Errors
/// As [`pearson`]; a constant `x` or `y` (all values tied) is [`Error::Constant`].
pub fn spearman<A: Copy + Into<f64>, B: Copy + Into<f64>>(x: &[A], y: &[B]) -> Result<f64> {
    let (x, y) = paired_f64("spearman", ("x", x), ("y", y))?;
    if x.len() < 2 {
        return Err(Error::TooShort {
            metric: "spearman",
            input: "x",
            len: x.len(),
            min: 2,
        });
    }
    for (input, v) in [("x", &x), ("y", &y)] {
        if v.iter().all(|&a| a == v[0]) {
            return Err(Error::Constant {
                metric: "spearman",
                input,
                value: v[0],
            });
        }
    }
    pearson_f64("spearman", &rank_average(&x), &rank_average(&y))
}

// ---------------------------------------------------------------------------------------------------------------
// Classification

/// The fraction of positions where `pred` equals `gold` (`sklearn.metrics.accuracy_score`).
///
/// # Errors
/// Empty input or different lengths.
pub fn accuracy(pred: &[usize], gold: &[usize]) -> Result<f64> {
    check_labels("accuracy", pred, gold)?;
    let correct = pred.iter().zip(gold).filter(|(p, g)| p == g).count();
    Ok(correct as f64 / pred.len() as f64)
}

/// Counts of one class: (true positives, false positives, false negatives).
fn class_counts(pred: &[usize], gold: &[usize], class: usize) -> (usize, usize, usize) {
    let (mut tp, mut fp, mut fn_) = (0, 0, 0);
    for (&p, &g) in pred.iter().zip(gold) {
        match (p == class, g == class) {
            (true, true) => tp += 1,
            (true, false) => fp += 1,
            (false, true) => fn_ += 1,
            (false, false) => {}
        }
    }
    (tp, fp, fn_)
}

fn f1_from_counts((tp, fp, fn_): (usize, usize, usize)) -> f64 {
    // scikit-learn's F-beta with beta = 1: (1 + b^2) tp / ((1 + b^2) tp + b^2 fn + fp)
    2.0 * tp as f64 / (2.0 * tp as f64 + fn_ as f64 + fp as f64)
}

/// F1 of the class `positive` against all others (`sklearn.metrics.f1_score(gold, pred, pos_label=positive)`):
/// `2 tp / (2 tp + fp + fn)`.
///
/// # Errors
/// Empty input, different lengths, or a `positive` label that occurs in neither `pred` nor `gold` (F1 is 0/0;
/// scikit-learn returns 0 with a warning, which usually hides a wrong label).
pub fn f1_binary(pred: &[usize], gold: &[usize], positive: usize) -> Result<f64> {
    check_labels("f1_binary", pred, gold)?;
    let counts = class_counts(pred, gold, positive);
    if counts == (0, 0, 0) {
        return Err(Error::PositiveLabelAbsent {
            metric: "f1_binary",
            positive,
        });
    }
    Ok(f1_from_counts(counts))
}

/// The unweighted mean of the per-class F1 over every label that occurs in `pred` or `gold`
/// (`sklearn.metrics.f1_score(gold, pred, average="macro")`). A label that occurs only in `pred` scores 0.
///
/// # Errors
/// Empty input or different lengths.
pub fn macro_f1(pred: &[usize], gold: &[usize]) -> Result<f64> {
    check_labels("macro_f1", pred, gold)?;
    let mut labels: Vec<usize> = pred.iter().chain(gold).copied().collect();
    labels.sort_unstable();
    labels.dedup();
    let sum: f64 = labels
        .iter()
        .map(|&c| f1_from_counts(class_counts(pred, gold, c)))
        .sum();
    Ok(sum / labels.len() as f64)
}

/// The Matthews correlation coefficient in its multiclass form (`sklearn.metrics.matthews_corrcoef`, the GLUE
/// CoLA metric): with confusion counts `C`, `t` the true and `p` the predicted class totals, `s` the sample count
/// and `c` the correct count, `(c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t))`.
///
/// When the denominator is 0 (all predictions, or all gold labels, are one class) the result is 0, scikit-learn's
/// convention, so a collapsed classifier scores 0 rather than failing the evaluation.
///
/// # Errors
/// Empty input or different lengths.
pub fn matthews_corrcoef(pred: &[usize], gold: &[usize]) -> Result<f64> {
    check_labels("matthews_corrcoef", pred, gold)?;
    let mut t_sum: HashMap<usize, i128> = HashMap::new();
    let mut p_sum: HashMap<usize, i128> = HashMap::new();
    let mut correct: i128 = 0;
    for (&p, &g) in pred.iter().zip(gold) {
        *t_sum.entry(g).or_default() += 1;
        *p_sum.entry(p).or_default() += 1;
        correct += i128::from(p == g);
    }
    let s = pred.len() as i128;
    let t_dot_p: i128 = t_sum
        .iter()
        .map(|(c, t)| t * p_sum.get(c).copied().unwrap_or(0))
        .sum();
    let p_dot_p: i128 = p_sum.values().map(|p| p * p).sum();
    let t_dot_t: i128 = t_sum.values().map(|t| t * t).sum();
    let cov_ytyp = correct * s - t_dot_p;
    let cov_ypyp = s * s - p_dot_p;
    let cov_ytyt = s * s - t_dot_t;
    if cov_ypyp == 0 || cov_ytyt == 0 {
        return Ok(0.0);
    }
    Ok(cov_ytyp as f64 / ((cov_ytyt * cov_ypyp) as f64).sqrt())
}

// ---------------------------------------------------------------------------------------------------------------
// Scores against binary labels

/// Average precision of `scores` (higher means more likely positive) against binary `labels`, as
/// `sklearn.metrics.average_precision_score`: `sum_n (R_n - R_{n-1}) P_n` over the distinct score values taken as
/// thresholds in decreasing order, tied scores entering together.
///
/// For distances (lower is more similar), pass the negated distances, as MTEB does.
///
/// # Errors
/// Empty input, different lengths, a non-finite score, or no positive label (scikit-learn warns and returns a
/// meaningless value).
pub fn average_precision<A: Copy + Into<f64>>(scores: &[A], labels: &[bool]) -> Result<f64> {
    const M: &str = "average_precision";
    check_nonempty(M, "scores", scores.len())?;
    check_same_len(M, "scores", scores.len(), "labels", labels.len())?;
    let scores = finite_f64(M, "scores", scores)?;
    let n_pos = labels.iter().filter(|&&l| l).count();
    if n_pos == 0 {
        return Err(Error::NoPositives {
            metric: M,
            input: "labels",
        });
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let (mut ap, mut recall_prev) = (0.0, 0.0);
    for (pos, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let group_ends = order.get(pos + 1).is_none_or(|&j| scores[j] != scores[i]);
        if group_ends {
            let precision = tp as f64 / (tp + fp) as f64;
            let recall = tp as f64 / n_pos as f64;
            ap += (recall - recall_prev) * precision;
            recall_prev = recall;
        }
    }
    Ok(ap)
}

/// The best accuracy of a threshold classifier and its threshold (MTEB pair classification).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AccuracyThreshold {
    /// Fraction of pairs classified correctly at `threshold`.
    pub accuracy: f64,
    /// Midpoint between the two adjacent distinct scores where the best accuracy is reached (-1 if none was).
    pub threshold: f64,
}

/// The best F1 of a threshold classifier, its precision and recall, and its threshold (MTEB pair classification).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct F1Threshold {
    pub f1: f64,
    pub precision: f64,
    pub recall: f64,
    /// Midpoint between the two adjacent distinct scores where the best F1 is reached (0 if none was).
    pub threshold: f64,
}

/// Rows sorted most-similar first; a stable sort, as Python's `sorted(reverse=...)`.
fn sorted_rows(scores: &[f64], labels: &[bool], higher_is_similar: bool) -> Vec<(f64, bool)> {
    let mut rows: Vec<(f64, bool)> = scores.iter().copied().zip(labels.iter().copied()).collect();
    if higher_is_similar {
        rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    } else {
        rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    rows
}

/// The threshold that maximises accuracy, found as MTEB's pair classification does (`_find_best_acc_and_threshold`,
/// MTEB 2.x): sort the pairs most-similar first, cut between each two adjacent *distinct* scores (pairs before the
/// cut are predicted similar), keep the first cut with the strictly highest accuracy. The threshold is the
/// midpoint of the two scores at the cut.
///
/// `higher_is_similar` is true for similarities (cosine, dot) and false for distances (Euclidean, Manhattan).
/// Quirks kept from MTEB: the cuts "all dissimilar" and "all similar" are not considered, so with fewer than two
/// distinct scores the result is accuracy 0 and threshold -1. Older MTEB (1.x) also cut between tied scores, which
/// made the result depend on the input order of ties; this follows the current, order-independent rule. MTEB
/// computes the midpoint in the scores' own precision (`f32` for `f32` embeddings); this computes it in `f64`.
///
/// # Errors
/// Empty input, different lengths, or a non-finite score.
pub fn best_accuracy_threshold<A: Copy + Into<f64>>(
    scores: &[A],
    labels: &[bool],
    higher_is_similar: bool,
) -> Result<AccuracyThreshold> {
    const M: &str = "best_accuracy_threshold";
    check_nonempty(M, "scores", scores.len())?;
    check_same_len(M, "scores", scores.len(), "labels", labels.len())?;
    let scores = finite_f64(M, "scores", scores)?;
    let rows = sorted_rows(&scores, labels, higher_is_similar);
    let n = rows.len() as f64;
    let mut best = AccuracyThreshold {
        accuracy: 0.0,
        threshold: -1.0,
    };
    let mut positives_so_far = 0usize;
    let mut remaining_negatives = labels.iter().filter(|&&l| !l).count();
    for pair in rows.windows(2) {
        let ((score, label), (next, _)) = (pair[0], pair[1]);
        if label {
            positives_so_far += 1;
        } else {
            remaining_negatives -= 1;
        }
        if score == next {
            continue;
        }
        let acc = (positives_so_far + remaining_negatives) as f64 / n;
        if acc > best.accuracy {
            best = AccuracyThreshold {
                accuracy: acc,
                threshold: (score + next) / 2.0,
            };
        }
    }
    Ok(best)
}

/// The threshold that maximises F1, found as MTEB's pair classification does (`_find_best_f1_and_threshold`,
/// MTEB 2.x): the same cuts as [`best_accuracy_threshold`], keeping the first with the strictly highest F1 (with
/// precision and recall at that cut). If no cut has a true positive, everything is 0.
///
/// # Errors
/// Empty input, different lengths, a non-finite score, or no positive label (MTEB would divide by zero).
pub fn best_f1_threshold<A: Copy + Into<f64>>(
    scores: &[A],
    labels: &[bool],
    higher_is_similar: bool,
) -> Result<F1Threshold> {
    const M: &str = "best_f1_threshold";
    check_nonempty(M, "scores", scores.len())?;
    check_same_len(M, "scores", scores.len(), "labels", labels.len())?;
    let scores = finite_f64(M, "scores", scores)?;
    let total_positives = labels.iter().filter(|&&l| l).count();
    if total_positives == 0 {
        return Err(Error::NoPositives {
            metric: M,
            input: "labels",
        });
    }
    let rows = sorted_rows(&scores, labels, higher_is_similar);
    let mut best = F1Threshold {
        f1: 0.0,
        precision: 0.0,
        recall: 0.0,
        threshold: 0.0,
    };
    let mut correct = 0usize;
    for (i, pair) in rows.windows(2).enumerate() {
        let ((score, label), (next, _)) = (pair[0], pair[1]);
        if label {
            correct += 1;
        }
        if score == next || correct == 0 {
            continue;
        }
        let precision = correct as f64 / (i + 1) as f64;
        let recall = correct as f64 / total_positives as f64;
        let f1 = 2.0 * precision * recall / (precision + recall);
        if f1 > best.f1 {
            best = F1Threshold {
                f1,
                precision,
                recall,
                threshold: (score + next) / 2.0,
            };
        }
    }
    Ok(best)
}

// ---------------------------------------------------------------------------------------------------------------
// Retrieval (one query at a time; average over queries yourself)

/// Checks `k`, `relevant` and duplicates in `ranked`; returns how many of the first `k` ranked documents are
/// relevant, marked per position.
fn retrieval_hits<T: Eq + Hash>(
    metric: &'static str,
    ranked: &[T],
    relevant: &HashSet<T>,
    k: usize,
) -> Result<Vec<bool>> {
    if k == 0 {
        return Err(Error::InvalidParameter {
            metric,
            name: "k",
            value: "0".into(),
            expected: "the cutoff must be at least 1".into(),
        });
    }
    if relevant.is_empty() {
        return Err(Error::NoPositives {
            metric,
            input: "relevant",
        });
    }
    let mut seen: HashMap<&T, usize> = HashMap::with_capacity(ranked.len());
    for (pos, doc) in ranked.iter().enumerate() {
        if let Some(first) = seen.insert(doc, pos) {
            return Err(Error::DuplicateDocument {
                metric,
                input: "ranked",
                first,
                second: pos,
            });
        }
    }
    Ok(ranked
        .iter()
        .take(k)
        .map(|d| relevant.contains(d))
        .collect())
}

/// nDCG@k with binary relevance and a `log2(rank + 1)` discount (pytrec_eval `ndcg_cut.k`, MTEB's main retrieval
/// score): `DCG = sum over the first k ranked documents of rel / log2(rank + 1)` (ranks from 1), divided by the DCG
/// of the ideal ranking of all `relevant` documents (also cut at k), so relevant documents that were not retrieved
/// still count in the ideal.
///
/// # Errors
/// `k` = 0, an empty `relevant` set (nDCG is undefined; trec_eval reports 0 for such a query, MTEB's datasets have
/// none), or a document listed twice in `ranked`.
pub fn ndcg_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> Result<f64> {
    let hits = retrieval_hits("ndcg_at_k", ranked, relevant, k)?;
    let discount = |pos: usize| 1.0 / ((pos + 2) as f64).log2();
    let dcg: f64 = hits
        .iter()
        .enumerate()
        .filter(|(_, &h)| h)
        .map(|(pos, _)| discount(pos))
        .sum();
    let ideal: f64 = (0..relevant.len().min(k)).map(discount).sum();
    Ok(dcg / ideal)
}

/// Recall@k: the fraction of `relevant` documents among the first `k` ranked ones (pytrec_eval `recall.k`).
///
/// # Errors
/// As [`ndcg_at_k`].
pub fn recall_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> Result<f64> {
    let hits = retrieval_hits("recall_at_k", ranked, relevant, k)?;
    Ok(hits.iter().filter(|&&h| h).count() as f64 / relevant.len() as f64)
}

/// Precision@k: relevant documents among the first `k` ranked ones, divided by `k` even when fewer than `k` were
/// ranked (pytrec_eval `P.k`).
///
/// # Errors
/// As [`ndcg_at_k`].
pub fn precision_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> Result<f64> {
    let hits = retrieval_hits("precision_at_k", ranked, relevant, k)?;
    Ok(hits.iter().filter(|&&h| h).count() as f64 / k as f64)
}

/// MAP@k: the precision at each relevant document among the first `k`, summed and divided by the number of
/// `relevant` documents (pytrec_eval `map_cut.k`).
///
/// # Errors
/// As [`ndcg_at_k`].
pub fn map_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> Result<f64> {
    let hits = retrieval_hits("map_at_k", ranked, relevant, k)?;
    let mut found = 0usize;
    let mut sum = 0.0;
    for (pos, &h) in hits.iter().enumerate() {
        if h {
            found += 1;
            sum += found as f64 / (pos + 1) as f64;
        }
    }
    Ok(sum / relevant.len() as f64)
}

/// MRR@k: `1 / rank` of the first relevant document among the first `k` (ranks from 1), 0 if there is none
/// (MTEB `retrieval_metrics.mrr`).
///
/// # Errors
/// As [`ndcg_at_k`].
pub fn mrr_at_k<T: Eq + Hash>(ranked: &[T], relevant: &HashSet<T>, k: usize) -> Result<f64> {
    let hits = retrieval_hits("mrr_at_k", ranked, relevant, k)?;
    Ok(hits
        .iter()
        .position(|&h| h)
        .map_or(0.0, |pos| 1.0 / (pos + 1) as f64))
}

/// Indices of the `k` best documents, best first, in trec_eval's run order: score descending, ties broken by
/// document id *descending* (trec_eval compares docnos with `strcmp`; pass `String`/`&str` ids to match it, as
/// MTEB's string ids are compared). MTEB's own MRR uses the same order.
///
/// `k` larger than the number of documents returns all of them.
///
/// # Errors
/// Empty input, different lengths, or a non-finite score.
pub fn top_k_by_score<A: Copy + Into<f64>, T: Ord>(
    scores: &[A],
    ids: &[T],
    k: usize,
) -> Result<Vec<usize>> {
    const M: &str = "top_k_by_score";
    check_nonempty(M, "scores", scores.len())?;
    check_same_len(M, "scores", scores.len(), "ids", ids.len())?;
    let scores = finite_f64(M, "scores", scores)?;
    let cmp = |&a: &usize, &b: &usize| -> Ordering {
        scores[b]
            .total_cmp(&scores[a])
            .then_with(|| ids[b].cmp(&ids[a]))
    };
    let mut order: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(order.len());
    if k == 0 {
        return Ok(Vec::new());
    }
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    // With distinct ids the order is total, so the unstable sort is deterministic.
    order.sort_unstable_by(cmp);
    Ok(order)
}

/// Every index, best first, in trec_eval's run order ([`top_k_by_score`] with `k` = all).
///
/// # Errors
/// As [`top_k_by_score`].
pub fn rank_by_score<A: Copy + Into<f64>, T: Ord>(scores: &[A], ids: &[T]) -> Result<Vec<usize>> {
    top_k_by_score(scores, ids, scores.len())
}

// ---------------------------------------------------------------------------------------------------------------
// Clustering

/// Homogeneity, completeness and their harmonic mean, the V-measure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VMeasure {
    pub homogeneity: f64,
    pub completeness: f64,
    pub v_measure: f64,
}

/// Entropy (natural log) of a labelling given its class counts.
fn entropy_of_counts(counts: impl Iterator<Item = usize>, n: usize) -> f64 {
    let log_n = (n as f64).ln();
    -counts
        .filter(|&c| c > 0)
        .map(|c| {
            let c = c as f64;
            (c / n as f64) * (c.ln() - log_n)
        })
        .sum::<f64>()
}

/// Homogeneity `1 - H(C|K)/H(C)`, completeness `1 - H(K|C)/H(K)` and V-measure `2hc/(h+c)`, as
/// `sklearn.metrics.homogeneity_completeness_v_measure(labels_true, labels_pred)` (beta = 1): computed from the
/// mutual information, a labelling with one class has homogeneity (or completeness) 1, and `h + c = 0` gives a
/// V-measure of 0. Label values are arbitrary (only equality matters).
///
/// # Errors
/// Empty input or different lengths.
pub fn homogeneity_completeness_v_measure(
    labels_true: &[usize],
    labels_pred: &[usize],
) -> Result<VMeasure> {
    const M: &str = "v_measure";
    check_nonempty(M, "labels_true", labels_true.len())?;
    check_nonempty(M, "labels_pred", labels_pred.len())?;
    check_same_len(
        M,
        "labels_true",
        labels_true.len(),
        "labels_pred",
        labels_pred.len(),
    )?;
    let n = labels_true.len();
    let mut true_counts: HashMap<usize, usize> = HashMap::new();
    let mut pred_counts: HashMap<usize, usize> = HashMap::new();
    let mut joint: HashMap<(usize, usize), usize> = HashMap::new();
    for (&t, &p) in labels_true.iter().zip(labels_pred) {
        *true_counts.entry(t).or_default() += 1;
        *pred_counts.entry(p).or_default() += 1;
        *joint.entry((t, p)).or_default() += 1;
    }
    let h_true = entropy_of_counts(true_counts.values().copied(), n);
    let h_pred = entropy_of_counts(pred_counts.values().copied(), n);
    let mutual_info = if true_counts.len() == 1 || pred_counts.len() == 1 {
        0.0
    } else {
        // sum over non-empty cells of (n_tp / n) log(n n_tp / (n_t n_p)), in a fixed order for determinism
        let mut cells: Vec<(&(usize, usize), &usize)> = joint.iter().collect();
        cells.sort_unstable();
        let nf = n as f64;
        let mi: f64 = cells
            .into_iter()
            .map(|(&(t, p), &c)| {
                let (c, nt, np) = (c as f64, true_counts[&t] as f64, pred_counts[&p] as f64);
                let p = c / nf;
                let term = p * (c.ln() - nf.ln()) + p * (-(nt * np).ln() + nf.ln() + nf.ln());
                if term.abs() < f64::EPSILON {
                    0.0
                } else {
                    term
                }
            })
            .sum();
        mi.max(0.0)
    };
    let homogeneity = if h_true == 0.0 {
        1.0
    } else {
        mutual_info / h_true
    };
    let completeness = if h_pred == 0.0 {
        1.0
    } else {
        mutual_info / h_pred
    };
    let v_measure = if homogeneity + completeness == 0.0 {
        0.0
    } else {
        2.0 * homogeneity * completeness / (homogeneity + completeness)
    };
    Ok(VMeasure {
        homogeneity,
        completeness,
        v_measure,
    })
}

/// V-measure (beta = 1) of a clustering against gold labels: `sklearn.metrics.v_measure_score`, the MTEB
/// clustering score. See [`homogeneity_completeness_v_measure`].
///
/// # Errors
/// Empty input or different lengths.
pub fn v_measure(labels_true: &[usize], labels_pred: &[usize]) -> Result<f64> {
    Ok(homogeneity_completeness_v_measure(labels_true, labels_pred)?.v_measure)
}

// ---------------------------------------------------------------------------------------------------------------
// Vector similarities

/// How a pair of embeddings is scored (the four scores of MTEB pair classification).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Similarity {
    /// Cosine similarity; 0 when either vector is zero (scikit-learn normalises a zero vector to zero).
    Cosine,
    /// Dot product.
    Dot,
    /// Euclidean distance (lower is more similar).
    Euclidean,
    /// Manhattan (L1) distance (lower is more similar).
    Manhattan,
}

impl Similarity {
    /// Whether a higher score means more similar (the `higher_is_similar` argument of the threshold metrics).
    pub fn higher_is_similar(self) -> bool {
        matches!(self, Similarity::Cosine | Similarity::Dot)
    }

    /// The snake_case name MTEB reports the scores under (`cosine`, `dot`, `euclidean`, `manhattan`).
    pub fn name(self) -> &'static str {
        match self {
            Similarity::Cosine => "cosine",
            Similarity::Dot => "dot",
            Similarity::Euclidean => "euclidean",
            Similarity::Manhattan => "manhattan",
        }
    }

    fn score(self, a: &[f32], b: &[f32]) -> f64 {
        let pairs = a.iter().zip(b).map(|(&x, &y)| (f64::from(x), f64::from(y)));
        match self {
            Similarity::Dot => pairs.map(|(x, y)| x * y).sum(),
            Similarity::Euclidean => pairs.map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt(),
            Similarity::Manhattan => pairs.map(|(x, y)| (x - y).abs()).sum(),
            Similarity::Cosine => {
                let (mut dot, mut na, mut nb) = (0.0, 0.0, 0.0);
                for (x, y) in pairs {
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
                if na == 0.0 || nb == 0.0 {
                    0.0
                } else {
                    dot / (na.sqrt() * nb.sqrt())
                }
            }
        }
    }
}

fn check_vector(metric: &'static str, input: &'static str, v: &[f32]) -> Result<()> {
    check_nonempty(metric, input, v.len())?;
    if let Some(index) = v.iter().position(|x| !x.is_finite()) {
        return Err(Error::NotFinite {
            metric,
            input,
            index,
            value: f64::from(v[index]),
        });
    }
    Ok(())
}

/// Cosine similarity of two vectors, in `f64`; 0 when either is the zero vector (as scikit-learn and
/// `torch.nn.functional.normalize` treat it).
///
/// # Errors
/// Empty vectors, different lengths, or a non-finite value.
pub fn cosine(a: &[f32], b: &[f32]) -> Result<f64> {
    check_vector("cosine", "a", a)?;
    check_vector("cosine", "b", b)?;
    check_same_len("cosine", "a", a.len(), "b", b.len())?;
    Ok(Similarity::Cosine.score(a, b))
}

/// Scores of row `i` of `a` against row `i` of `b` (`1 - paired_cosine_distances`, `paired_euclidean_distances`,
/// ... in scikit-learn), as MTEB STS and pair classification compute them.
///
/// # Errors
/// Empty input, different numbers of rows, rows of different lengths, or a non-finite value.
pub fn paired_scores(a: &[Vec<f32>], b: &[Vec<f32>], similarity: Similarity) -> Result<Vec<f64>> {
    const M: &str = "paired_scores";
    check_nonempty(M, "a", a.len())?;
    check_same_len(M, "a", a.len(), "b", b.len())?;
    let dim = a[0].len();
    for (input, rows) in [("a", a), ("b", b)] {
        for (row, v) in rows.iter().enumerate() {
            if v.len() != dim {
                return Err(Error::RaggedRows {
                    metric: M,
                    input,
                    row,
                    expected: dim,
                    found: v.len(),
                });
            }
            check_vector(M, input, v)?;
        }
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| similarity.score(x, y))
        .collect())
}
