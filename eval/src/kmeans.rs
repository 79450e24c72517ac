//! k-means clustering (MTEB's clustering tasks cluster embeddings with `sklearn.cluster.MiniBatchKMeans` and score
//! the clusters with the V-measure), and the seeded random generator used here and by
//! [`crate::logreg::undersample`].
//!
//! - [`kmeans`]: greedy k-means++ seeding, Lloyd iterations until the labels stop changing or the centres move less
//!   than `tol` times the mean feature variance (scikit-learn's `KMeans(algorithm="lloyd")` rule), a final
//!   assignment, `n_init` restarts keeping the lowest inertia.
//! - [`mini_batch_kmeans`]: scikit-learn's `MiniBatchKMeans` algorithm: k-means++ on a random `init_size` subset
//!   (best of `n_init` by inertia on a validation subset), then `max_iter * n / batch_size` steps on batches drawn
//!   with replacement, each centre moving to the running mean of the points it has been given (learning rate
//!   `1 / count`), centres with less than `reassignment_ratio` of the largest count moved to random batch points
//!   every `10 k` samples (or whenever a centre has no count), early stopping after `max_no_improvement` steps
//!   without a lower smoothed (EWA) batch inertia, and finally labels by the nearest centre over all points.
//!
//! # Differences from scikit-learn
//! The steps are scikit-learn's, but the random numbers are not numpy's (this uses xoshiro256**), so seeds, batches
//! and reassignments differ and the clusterings are not bit-identical; both are local optima of the same kind.
//! Distances are computed exactly in `f64` (scikit-learn uses `||x||^2 - 2 x.c + ||c||^2` in the data's
//! precision), and everything runs on one thread, so the result depends only on the data and the seed. What is
//! expected to agree is the quality: on MTEB clustering data the V-measure should be within about 0.01 of
//! scikit-learn's (averaged over seeds), which is checked on real embeddings elsewhere; the tests here check
//! well-separated data (identical partitions) and inertia on overlapping data.

use crate::error::{Error, Result};

// ---------------------------------------------------------------------------------------------------------------
// Random numbers

pub use compressor_models::rng::Rng;

// ---------------------------------------------------------------------------------------------------------------
// Settings and result

/// Settings of [`kmeans`] (defaults as scikit-learn's `KMeans`, with `n_init="auto"` = 1 for k-means++).
#[derive(Debug, Clone, PartialEq)]
pub struct KMeansOptions {
    /// Number of clusters `k`.
    pub n_clusters: usize,
    /// Independent seedings; the run with the lowest inertia is kept.
    pub n_init: usize,
    /// Most Lloyd iterations per run.
    pub max_iter: usize,
    /// Stop when the squared centre movement is at most `tol` times the mean per-feature variance.
    pub tol: f64,
    pub seed: u64,
}

impl KMeansOptions {
    /// scikit-learn's defaults: `n_init` 1, `max_iter` 300, `tol` 1e-4; seed 0.
    pub fn new(n_clusters: usize) -> Self {
        KMeansOptions {
            n_clusters,
            n_init: 1,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
        }
    }
}

/// Settings of [`mini_batch_kmeans`] (defaults as scikit-learn's `MiniBatchKMeans` with MTEB's batch size).
#[derive(Debug, Clone, PartialEq)]
pub struct MiniBatchOptions {
    /// Number of clusters `k`.
    pub n_clusters: usize,
    /// Points per mini-batch (MTEB uses 500 and, in its newer clustering tasks, 512; scikit-learn's default is
    /// 1024). Capped at the number of points.
    pub batch_size: usize,
    /// Passes over the data: the number of steps is `max_iter * n / batch_size`.
    pub max_iter: usize,
    /// Stop after this many steps without a lower smoothed batch inertia; `None` never stops early this way.
    pub max_no_improvement: Option<usize>,
    /// Points used for seeding (and for choosing among `n_init` seedings); `None` is `3 * batch_size` (at least
    /// `3 k`), capped at the number of points.
    pub init_size: Option<usize>,
    /// Seedings tried (`n_init="auto"` is 1 for k-means++).
    pub n_init: usize,
    /// Centres whose count is below this fraction of the largest count are moved to random batch points.
    pub reassignment_ratio: f64,
    /// Stop when the squared centre movement of a step is at most `tol` times the mean feature variance; 0 (the
    /// default) disables this test.
    pub tol: f64,
    pub seed: u64,
}

impl MiniBatchOptions {
    /// scikit-learn's defaults with MTEB's `batch_size` of 500: `max_iter` 100, `max_no_improvement` 10,
    /// `init_size` automatic, `n_init` 1, `reassignment_ratio` 0.01, `tol` 0; seed 0.
    pub fn new(n_clusters: usize) -> Self {
        MiniBatchOptions {
            n_clusters,
            batch_size: 500,
            max_iter: 100,
            max_no_improvement: Some(10),
            init_size: None,
            n_init: 1,
            reassignment_ratio: 0.01,
            tol: 0.0,
            seed: 0,
        }
    }
}

/// A clustering: a label per point, the centres, and the inertia (sum of squared distances to the own centre).
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// Cluster of each point, in `0..k`.
    pub labels: Vec<usize>,
    /// `k` centres.
    pub centers: Vec<Vec<f64>>,
    /// Sum over points of the squared distance to their centre.
    pub inertia: f64,
    /// Lloyd iterations (of the kept run) or mini-batch steps.
    pub n_iter: usize,
}

// ---------------------------------------------------------------------------------------------------------------
// Data

/// Points in one row-major `f64` buffer.
struct Points {
    data: Vec<f64>,
    n: usize,
    d: usize,
}

impl Points {
    fn new(metric: &'static str, x: &[Vec<f32>]) -> Result<Self> {
        let (data, d) = crate::logreg::flatten(metric, x, None)?;
        Ok(Points {
            data,
            n: x.len(),
            d,
        })
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.data[i * self.d..(i + 1) * self.d]
    }

    /// `tol` scaled by the mean per-feature variance (scikit-learn's `_tolerance`).
    fn tolerance(&self, tol: f64) -> f64 {
        if tol == 0.0 {
            return 0.0;
        }
        let n = self.n as f64;
        let mut total = 0.0;
        for j in 0..self.d {
            let mean = (0..self.n).map(|i| self.data[i * self.d + j]).sum::<f64>() / n;
            total += (0..self.n)
                .map(|i| (self.data[i * self.d + j] - mean).powi(2))
                .sum::<f64>()
                / n;
        }
        total / self.d as f64 * tol
    }
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Nearest centre (the first on a tie) and the squared distance to it.
fn nearest(point: &[f64], centers: &[f64], d: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (c, center) in centers.chunks_exact(d).enumerate() {
        let dist = sq_dist(point, center);
        if dist < best.1 {
            best = (c, dist);
        }
    }
    best
}

/// Labels and inertia of the points `idx` (all points if `None`) against flat `centers`.
fn assign(points: &Points, idx: Option<&[usize]>, centers: &[f64]) -> (Vec<usize>, f64) {
    let mut labels = Vec::new();
    let mut inertia = 0.0;
    let mut visit = |i: usize| {
        let (c, dist) = nearest(points.row(i), centers, points.d);
        labels.push(c);
        inertia += dist;
    };
    match idx {
        Some(idx) => idx.iter().copied().for_each(&mut visit),
        None => (0..points.n).for_each(&mut visit),
    }
    (labels, inertia)
}

fn check_common(
    metric: &'static str,
    points: &Points,
    k: usize,
    n_init: usize,
    tol: f64,
) -> Result<()> {
    if k == 0 || k > points.n {
        return Err(Error::InvalidParameter {
            metric,
            name: "n_clusters",
            value: k.to_string(),
            expected: format!("must be between 1 and the number of points ({})", points.n),
        });
    }
    if n_init == 0 {
        return Err(Error::InvalidParameter {
            metric,
            name: "n_init",
            value: "0".into(),
            expected: "at least one seeding is needed".into(),
        });
    }
    if !(tol.is_finite() && tol >= 0.0) {
        return Err(Error::InvalidParameter {
            metric,
            name: "tol",
            value: tol.to_string(),
            expected: "must be a non-negative finite number".into(),
        });
    }
    Ok(())
}

fn to_rows(flat: &[f64], d: usize) -> Vec<Vec<f64>> {
    flat.chunks_exact(d).map(<[f64]>::to_vec).collect()
}

// ---------------------------------------------------------------------------------------------------------------
// k-means++

/// Indices (into `subset`) of `k` seeds chosen by greedy k-means++ (scikit-learn's `_kmeans_plusplus`): the first
/// uniformly, each next one the best of `2 + ln k` candidates drawn with probability proportional to the squared
/// distance to the nearest seed so far, "best" meaning the lowest resulting potential.
fn plusplus(points: &Points, subset: &[usize], k: usize, rng: &mut Rng) -> Vec<usize> {
    let m = subset.len();
    let trials = 2 + (k as f64).ln() as usize;
    let first = rng.below(m);
    let mut seeds = vec![first];
    let mut closest: Vec<f64> = subset
        .iter()
        .map(|&i| sq_dist(points.row(i), points.row(subset[first])))
        .collect();
    let mut potential: f64 = closest.iter().sum();
    let mut cumulative = vec![0.0; m];
    let mut candidate_dist = vec![0.0; m];
    let mut best_dist = vec![0.0; m];
    while seeds.len() < k {
        let mut acc = 0.0;
        for (c, &v) in cumulative.iter_mut().zip(&closest) {
            acc += v;
            *c = acc;
        }
        let mut best: Option<(usize, f64)> = None;
        for _ in 0..trials {
            let target = rng.next_f64() * potential;
            // first index whose cumulative sum reaches the target (numpy searchsorted, side="left"), clipped
            let candidate = cumulative.partition_point(|&c| c < target).min(m - 1);
            let row = points.row(subset[candidate]);
            let mut pot = 0.0;
            for ((cd, &old), &i) in candidate_dist.iter_mut().zip(&closest).zip(subset) {
                *cd = old.min(sq_dist(points.row(i), row));
                pot += *cd;
            }
            if best.is_none_or(|(_, p)| pot < p) {
                best = Some((candidate, pot));
                best_dist.copy_from_slice(&candidate_dist);
            }
        }
        if let Some((candidate, pot)) = best {
            seeds.push(candidate);
            potential = pot;
            closest.copy_from_slice(&best_dist);
        }
    }
    seeds
}

/// Indices of `n_clusters` points chosen as k-means++ seeds (greedy variant, as scikit-learn's `kmeans_plusplus`).
///
/// # Errors
/// Empty or ragged `x`, a non-finite value, or `n_clusters` not in `1..=x.len()`.
pub fn kmeans_plusplus(x: &[Vec<f32>], n_clusters: usize, rng: &mut Rng) -> Result<Vec<usize>> {
    let points = Points::new("kmeans_plusplus", x)?;
    check_common("kmeans_plusplus", &points, n_clusters, 1, 0.0)?;
    let all: Vec<usize> = (0..points.n).collect();
    Ok(plusplus(&points, &all, n_clusters, rng))
}

fn seed_centers(points: &Points, subset: &[usize], k: usize, rng: &mut Rng) -> Vec<f64> {
    plusplus(points, subset, k, rng)
        .into_iter()
        .flat_map(|s| points.row(subset[s]).to_vec())
        .collect()
}

// ---------------------------------------------------------------------------------------------------------------
// Lloyd

/// k-means by Lloyd iterations from k-means++ seeds, `n_init` times, keeping the lowest inertia.
///
/// Empty clusters are moved to the points farthest from their centres, as scikit-learn does.
///
/// # Errors
/// Empty or ragged `x`, a non-finite value, `n_clusters` not in `1..=x.len()`, `n_init` = 0, or a negative `tol`.
pub fn kmeans(x: &[Vec<f32>], options: &KMeansOptions) -> Result<Clustering> {
    const M: &str = "kmeans";
    let points = Points::new(M, x)?;
    let k = options.n_clusters;
    check_common(M, &points, k, options.n_init, options.tol)?;
    let tol = points.tolerance(options.tol);
    let all: Vec<usize> = (0..points.n).collect();
    let mut rng = Rng::new(options.seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..options.n_init {
        let centers = seed_centers(&points, &all, k, &mut rng);
        let run = lloyd(&points, centers, k, options.max_iter, tol);
        if best.as_ref().is_none_or(|b| run.inertia < b.inertia) {
            best = Some(run);
        }
    }
    best.ok_or(Error::InvalidParameter {
        metric: M,
        name: "n_init",
        value: "0".into(),
        expected: "at least one seeding is needed".into(),
    })
}

fn lloyd(
    points: &Points,
    mut centers: Vec<f64>,
    k: usize,
    max_iter: usize,
    tol: f64,
) -> Clustering {
    let d = points.d;
    let mut labels: Vec<usize> = Vec::new();
    let mut n_iter = 0;
    let mut strict = false;
    for _ in 0..max_iter {
        n_iter += 1;
        let mut new_labels = Vec::with_capacity(points.n);
        let mut dists = Vec::with_capacity(points.n);
        for i in 0..points.n {
            let (c, dist) = nearest(points.row(i), &centers, d);
            new_labels.push(c);
            dists.push(dist);
        }
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0usize; k];
        for (i, &c) in new_labels.iter().enumerate() {
            counts[c] += 1;
            for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(points.row(i)) {
                *s += v;
            }
        }
        relocate_empty(points, &mut new_labels, &dists, &mut sums, &mut counts);
        let mut shift = 0.0;
        for c in 0..k {
            let count = counts[c] as f64;
            for j in 0..d {
                let new = sums[c * d + j] / count;
                shift += (new - centers[c * d + j]).powi(2);
                centers[c * d + j] = new;
            }
        }
        if new_labels == labels {
            strict = true;
            break;
        }
        labels = new_labels;
        if shift <= tol {
            break;
        }
    }
    // the labels of the last iteration belong to the previous centres: assign once more (unless nothing moved)
    let (labels, inertia) = if strict && !labels.is_empty() {
        let inertia = (0..points.n)
            .map(|i| sq_dist(points.row(i), &centers[labels[i] * d..(labels[i] + 1) * d]))
            .sum();
        (labels, inertia)
    } else {
        assign(points, None, &centers)
    };
    Clustering {
        labels,
        centers: to_rows(&centers, d),
        inertia,
        n_iter,
    }
}

/// Gives each empty cluster one of the points farthest from their current centre (scikit-learn's
/// `_relocate_empty_clusters`), updating the sums and counts.
fn relocate_empty(
    points: &Points,
    labels: &mut [usize],
    dists: &[f64],
    sums: &mut [f64],
    counts: &mut [usize],
) {
    let empty: Vec<usize> = (0..counts.len()).filter(|&c| counts[c] == 0).collect();
    if empty.is_empty() {
        return;
    }
    let d = points.d;
    let mut far: Vec<usize> = (0..points.n).collect();
    far.sort_by(|&a, &b| dists[b].total_cmp(&dists[a]).then(a.cmp(&b)));
    // never empty another cluster: skip points that are alone in theirs (k <= n, so enough points remain)
    let mut candidates = far.into_iter();
    for &c in &empty {
        let Some(i) = candidates.find(|&i| counts[labels[i]] > 1) else {
            return;
        };
        let old = labels[i];
        let row = points.row(i);
        for (s, &v) in sums[old * d..(old + 1) * d].iter_mut().zip(row) {
            *s -= v;
        }
        counts[old] -= 1;
        sums[c * d..(c + 1) * d].copy_from_slice(row);
        counts[c] = 1;
        labels[i] = c;
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Mini-batch

/// Mini-batch k-means as scikit-learn's `MiniBatchKMeans` runs it (see the module documentation), with labels by
/// the nearest final centre over all points (`labels_` with `compute_labels=True`).
///
/// # Errors
/// Empty or ragged `x`, a non-finite value, `n_clusters` not in `1..=x.len()`, `n_init`, `batch_size` or
/// `max_iter` = 0, a negative `tol` or `reassignment_ratio`.
pub fn mini_batch_kmeans(x: &[Vec<f32>], options: &MiniBatchOptions) -> Result<Clustering> {
    const M: &str = "mini_batch_kmeans";
    let points = Points::new(M, x)?;
    let k = options.n_clusters;
    check_common(M, &points, k, options.n_init, options.tol)?;
    for (name, value) in [
        ("batch_size", options.batch_size),
        ("max_iter", options.max_iter),
    ] {
        if value == 0 {
            return Err(Error::InvalidParameter {
                metric: M,
                name,
                value: "0".into(),
                expected: "must be at least 1".into(),
            });
        }
    }
    if !(options.reassignment_ratio.is_finite() && options.reassignment_ratio >= 0.0) {
        return Err(Error::InvalidParameter {
            metric: M,
            name: "reassignment_ratio",
            value: options.reassignment_ratio.to_string(),
            expected: "must be a non-negative finite number".into(),
        });
    }
    let (n, d) = (points.n, points.d);
    let batch_size = options.batch_size.min(n);
    let init_size = match options.init_size {
        Some(s) if s >= k => s,
        Some(_) => 3 * k,
        None if 3 * batch_size < k => 3 * k,
        None => 3 * batch_size,
    }
    .min(n);
    let tol = points.tolerance(options.tol);
    let mut rng = Rng::new(options.seed);

    // seeding: best of n_init k-means++ runs on random subsets, judged on a random validation subset
    let validation: Vec<usize> = (0..init_size).map(|_| rng.below(n)).collect();
    let mut centers: Vec<f64> = Vec::new();
    let mut best_inertia = f64::INFINITY;
    for _ in 0..options.n_init {
        let subset: Vec<usize> = if init_size < n {
            (0..init_size).map(|_| rng.below(n)).collect()
        } else {
            (0..n).collect()
        };
        let candidate = seed_centers(&points, &subset, k, &mut rng);
        let (_, inertia) = assign(&points, Some(&validation), &candidate);
        if centers.is_empty() || inertia < best_inertia {
            centers = candidate;
            best_inertia = inertia;
        }
    }

    let mut counts = vec![0.0f64; k];
    let mut ewa: Option<f64> = None;
    let mut ewa_min: Option<f64> = None;
    let mut no_improvement = 0usize;
    let mut since_reassign = 0usize;
    let n_steps = options.max_iter.saturating_mul(n) / batch_size;
    let mut steps_run = 0;
    let mut batch = vec![0usize; batch_size];
    let mut sums = vec![0.0; k * d];
    let mut batch_counts = vec![0.0f64; k];
    for step in 0..n_steps {
        steps_run = step + 1;
        batch.iter_mut().for_each(|b| *b = rng.below(n));
        since_reassign += batch_size;
        let reassign = if counts.contains(&0.0) || since_reassign >= 10 * k {
            since_reassign = 0;
            true
        } else {
            false
        };

        // assign with the current centres, then move each centre to the running mean of its points
        let (labels, batch_inertia) = assign(&points, Some(&batch), &centers);
        sums.iter_mut().for_each(|s| *s = 0.0);
        batch_counts.iter_mut().for_each(|c| *c = 0.0);
        for (&i, &c) in batch.iter().zip(&labels) {
            batch_counts[c] += 1.0;
            for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(points.row(i)) {
                *s += v;
            }
        }
        let old_centers = if tol > 0.0 {
            Some(centers.clone())
        } else {
            None
        };
        for c in 0..k {
            if batch_counts[c] > 0.0 {
                let total = counts[c] + batch_counts[c];
                for j in 0..d {
                    let idx = c * d + j;
                    centers[idx] = (centers[idx] * counts[c] + sums[idx]) / total;
                }
                counts[c] = total;
            }
        }
        if reassign && options.reassignment_ratio > 0.0 {
            reassign_small(
                &points,
                &batch,
                &mut centers,
                &mut counts,
                options.reassignment_ratio,
                &mut rng,
            );
        }
        let shift = old_centers.map_or(0.0, |old| sq_dist(&old, &centers));

        // early stopping (scikit-learn's `_mini_batch_convergence`)
        let batch_inertia = batch_inertia / batch_size as f64;
        if step == 0 {
            continue;
        }
        let alpha = (batch_size as f64 * 2.0 / (n as f64 + 1.0)).min(1.0);
        let smoothed = ewa.map_or(batch_inertia, |e| e * (1.0 - alpha) + batch_inertia * alpha);
        ewa = Some(smoothed);
        if tol > 0.0 && shift <= tol {
            break;
        }
        if ewa_min.is_none_or(|m| smoothed < m) {
            no_improvement = 0;
            ewa_min = Some(smoothed);
        } else {
            no_improvement += 1;
        }
        if options
            .max_no_improvement
            .is_some_and(|limit| no_improvement >= limit)
        {
            break;
        }
    }
    let (labels, inertia) = assign(&points, None, &centers);
    Ok(Clustering {
        labels,
        centers: to_rows(&centers, d),
        inertia,
        n_iter: steps_run,
    })
}

/// Moves centres whose count is below `ratio` times the largest to random distinct points of the batch, at most
/// half a batch of them (the lowest counts), and sets their counts to the smallest count kept (scikit-learn's
/// `_mini_batch_step` with `random_reassign`).
fn reassign_small(
    points: &Points,
    batch: &[usize],
    centers: &mut [f64],
    counts: &mut [f64],
    ratio: f64,
    rng: &mut Rng,
) {
    let d = points.d;
    let max = counts.iter().copied().fold(0.0, f64::max);
    let mut to_reassign: Vec<bool> = counts.iter().map(|&c| c < ratio * max).collect();
    let limit = batch.len() / 2;
    if to_reassign.iter().filter(|&&r| r).count() > limit {
        // keep only the `limit` lowest counts (a stable sort, as numpy's argsort on ties is close enough)
        let mut order: Vec<usize> = (0..counts.len()).collect();
        order.sort_by(|&a, &b| counts[a].total_cmp(&counts[b]));
        for &c in &order[limit..] {
            to_reassign[c] = false;
        }
    }
    let chosen: Vec<usize> = (0..counts.len()).filter(|&c| to_reassign[c]).collect();
    if chosen.is_empty() {
        return;
    }
    // distinct batch positions, uniformly (partial Fisher-Yates)
    let mut positions: Vec<usize> = (0..batch.len()).collect();
    for (t, &c) in chosen.iter().enumerate() {
        let j = t + rng.below(positions.len() - t);
        positions.swap(t, j);
        centers[c * d..(c + 1) * d].copy_from_slice(points.row(batch[positions[t]]));
    }
    let min_kept = (0..counts.len())
        .filter(|&c| !to_reassign[c])
        .map(|c| counts[c])
        .fold(f64::INFINITY, f64::min);
    for &c in &chosen {
        counts[c] = min_kept;
    }
}
