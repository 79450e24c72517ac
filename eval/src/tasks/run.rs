//! The protocols: from a spec and an encoder to a [`TaskResult`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::time::Instant;

use compressor_calibration::TextInput;
use compressor_models::Head;

use super::data::{load_rows, Row};
use super::{Result, TaskError, TaskKind, TaskResult, TaskSpec};
use crate::cache::EmbeddingCache;
use crate::encoder::Encoder;
use crate::{kmeans, logreg, metrics};

fn metric<T, E: std::fmt::Display>(name: &str, r: std::result::Result<T, E>) -> Result<T> {
    r.map_err(|e| TaskError::Metric {
        metric: name.to_string(),
        problem: e.to_string(),
    })
}

/// Reports progress in inputs queued and embedded / scored.
pub type OnBatch<'a> = &'a mut dyn FnMut(crate::encoder::Batch);

/// Run one task on one model.
pub fn run_task(
    encoder: &Encoder,
    spec: &TaskSpec,
    cache: Option<&EmbeddingCache>,
    on_batch: OnBatch,
) -> Result<TaskResult> {
    if spec.data.is_empty() {
        return Err(spec.spec_err("no data file given"));
    }
    let start = Instant::now();
    let before = encoder.throughput();
    let tokens_before = encoder.token_stats();
    let mut ctx = Ctx {
        encoder,
        cache,
        on_batch,
        cached: false,
    };
    let (examples, main, mut metrics) = match spec.task {
        TaskKind::Sts => sts(&mut ctx, spec)?,
        TaskKind::PairClassification => pair_classification(&mut ctx, spec)?,
        TaskKind::Classification => classification(&mut ctx, spec)?,
        TaskKind::Clustering => clustering(&mut ctx, spec)?,
        TaskKind::Retrieval => retrieval(&mut ctx, spec)?,
        TaskKind::Glue => glue(&mut ctx, spec)?,
    };
    let tokens = encoder.token_stats().since(&tokens_before);
    if tokens.tokens > 0 {
        metrics.insert("unk_fraction".into(), tokens.unknown_fraction());
    }
    let after = encoder.throughput();
    let (inputs, secs) = (after.inputs - before.inputs, after.seconds - before.seconds);
    Ok(TaskResult {
        task: spec.task,
        name: spec.display_name(),
        examples,
        main_score: metrics[main],
        main_metric: main.to_string(),
        metrics,
        inputs_per_s: if secs > 0.0 {
            inputs as f64 / secs
        } else {
            0.0
        },
        elapsed_s: start.elapsed().as_secs_f64(),
        cached: ctx.cached,
        peak_rss_mib: super::peak_rss_mib(),
        tokens: tokens.tokens,
        unk_tokens: tokens.unknown,
    })
}

type Outcome = (usize, &'static str, BTreeMap<String, f64>);

struct Ctx<'a, 'b> {
    encoder: &'a Encoder,
    cache: Option<&'a EmbeddingCache>,
    on_batch: OnBatch<'b>,
    cached: bool,
}

impl Ctx<'_, '_> {
    /// Embeddings of unique texts (through the cache when one is given), returned per text in input order.
    fn embed_texts(&mut self, texts: &[String]) -> Result<Vec<Vec<f32>>> {
        let mut unique: Vec<&String> = texts.iter().collect::<BTreeSet<_>>().into_iter().collect();
        unique.sort();
        let inputs: Vec<TextInput> = unique
            .iter()
            .map(|t| TextInput::Single((*t).clone()))
            .collect();
        let embeddings = match self.cache {
            Some(cache) => {
                let mut found = cache.lookup(self.encoder, &inputs)?;
                let missing: Vec<usize> =
                    (0..inputs.len()).filter(|&i| found[i].is_none()).collect();
                let hits: Vec<TextInput> = (0..inputs.len())
                    .filter(|&i| found[i].is_some())
                    .map(|i| inputs[i].clone())
                    .collect();
                self.encoder.count_tokens(&hits)?;
                self.cached = missing.is_empty();
                if !missing.is_empty() {
                    let todo: Vec<TextInput> = missing.iter().map(|&i| inputs[i].clone()).collect();
                    let fresh = self.encoder.embed(&todo, self.on_batch)?;
                    cache.store(self.encoder, &todo, &fresh)?;
                    for (i, e) in missing.into_iter().zip(fresh) {
                        found[i] = Some(e);
                    }
                }
                found.into_iter().map(Option::unwrap_or_default).collect()
            }
            None => self.encoder.embed(&inputs, self.on_batch)?,
        };
        let index: HashMap<&String, usize> =
            unique.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        Ok(texts.iter().map(|t| embeddings[index[t]].clone()).collect())
    }
}

fn text_fields(spec: &TaskSpec, want: usize) -> Result<Vec<&str>> {
    let fields: Vec<&str> = match &spec.text_fields {
        Some(f) => f.iter().map(String::as_str).collect(),
        None => spec.task.default_text_fields().to_vec(),
    };
    if fields.len() != want {
        return Err(spec.spec_err(format!(
            "needs {want} text field(s), got {}: {:?}",
            fields.len(),
            fields
        )));
    }
    Ok(fields)
}

fn rows(spec: &TaskSpec, fields: &[&str]) -> Result<Vec<Row>> {
    let mut out = Vec::new();
    for path in &spec.data {
        out.extend(load_rows(path, fields, spec.limit)?);
    }
    Ok(match spec.sample {
        Some(n) => compressor_calibration::sample(out, n, spec.seed),
        None => out,
    })
}

/// One embedding per text.
type Embeddings = Vec<Vec<f32>>;

/// Embeddings of two text fields of every row: (first field's, second field's), row order.
fn embed_two_fields(ctx: &mut Ctx, rows: &[Row], f: &[&str]) -> Result<(Embeddings, Embeddings)> {
    let mut all: Vec<String> = rows
        .iter()
        .map(|r| r.text(0, f[0]))
        .collect::<Result<_>>()?;
    for r in rows {
        all.push(r.text(1, f[1])?);
    }
    let mut first = ctx.embed_texts(&all)?;
    let second = first.split_off(rows.len());
    Ok((first, second))
}

/// The cosine of the embeddings of two text fields, per row.
fn pair_cosines(ctx: &mut Ctx, rows: &[Row], f: &[&str]) -> Result<Vec<f64>> {
    let (a, b) = embed_two_fields(ctx, rows, f)?;
    metric(
        "cosine",
        metrics::paired_scores(&a, &b, metrics::Similarity::Cosine),
    )
}

fn sts(ctx: &mut Ctx, spec: &TaskSpec) -> Result<Outcome> {
    let f = text_fields(spec, 2)?;
    let fields = [f[0], f[1], spec.score_field.as_str()];
    let rows = rows(spec, &fields)?;
    let gold: Vec<f64> = rows
        .iter()
        .map(|r| r.number(2, &spec.score_field))
        .collect::<Result<_>>()?;
    let cos = pair_cosines(ctx, &rows, &f)?;
    let mut m = BTreeMap::new();
    m.insert(
        "spearman".into(),
        metric("spearman", metrics::spearman(&cos, &gold))?,
    );
    m.insert(
        "pearson".into(),
        metric("pearson", metrics::pearson(&cos, &gold))?,
    );
    Ok((rows.len(), "spearman", m))
}

/// Map label keys to class indices (sorted keys; integer-like keys sorted numerically).
fn class_indices(labels: &[String]) -> (Vec<usize>, Vec<String>) {
    let mut names: Vec<String> = labels
        .iter()
        .cloned()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    names.sort_by(|a, b| match (a.parse::<i64>(), b.parse::<i64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    });
    let index: HashMap<&String, usize> = names.iter().enumerate().map(|(i, n)| (n, i)).collect();
    (labels.iter().map(|l| index[l]).collect(), names)
}

fn pair_classification(ctx: &mut Ctx, spec: &TaskSpec) -> Result<Outcome> {
    let f = text_fields(spec, 2)?;
    let fields = [f[0], f[1], spec.label_field.as_str()];
    let rows = rows(spec, &fields)?;
    let mut labels = Vec::with_capacity(rows.len());
    for r in &rows {
        let l = r.label(2, &spec.label_field)?;
        labels.push(match l.as_str() {
            "0" => false,
            "1" => true,
            other => {
                return Err(TaskError::Field {
                    path: r.path.clone(),
                    line: r.line,
                    field: spec.label_field.clone(),
                    problem: format!("must be 0 or 1 for pair classification, found {other}"),
                })
            }
        });
    }
    let cos = pair_cosines(ctx, &rows, &f)?;
    let mut m = BTreeMap::new();
    m.insert(
        "ap".into(),
        metric("ap", metrics::average_precision(&cos, &labels))?,
    );
    let best_f1 = metric("f1", metrics::best_f1_threshold(&cos, &labels, true))?;
    m.insert("f1".into(), best_f1.f1);
    m.insert("precision".into(), best_f1.precision);
    m.insert("recall".into(), best_f1.recall);
    m.insert("f1_threshold".into(), best_f1.threshold);
    let best_acc = metric(
        "accuracy",
        metrics::best_accuracy_threshold(&cos, &labels, true),
    )?;
    m.insert("accuracy".into(), best_acc.accuracy);
    m.insert("accuracy_threshold".into(), best_acc.threshold);
    Ok((rows.len(), "ap", m))
}

fn labelled_texts(
    ctx: &mut Ctx,
    spec: &TaskSpec,
    paths: &[std::path::PathBuf],
) -> Result<(Vec<Vec<f32>>, Vec<String>)> {
    let f = text_fields(spec, 1)?;
    let fields = [f[0], spec.label_field.as_str()];
    let mut rows = Vec::new();
    for p in paths {
        rows.extend(load_rows(p, &fields, spec.limit)?);
    }
    if paths == spec.data.as_slice() {
        if let Some(n) = spec.sample {
            rows = compressor_calibration::sample(rows, n, spec.seed);
        }
    }
    let texts: Vec<String> = rows
        .iter()
        .map(|r| r.text(0, f[0]))
        .collect::<Result<_>>()?;
    let labels: Vec<String> = rows
        .iter()
        .map(|r| r.label(1, &spec.label_field))
        .collect::<Result<_>>()?;
    Ok((ctx.embed_texts(&texts)?, labels))
}

fn classification(ctx: &mut Ctx, spec: &TaskSpec) -> Result<Outcome> {
    let (x, labels) = labelled_texts(ctx, spec, &spec.data)?;
    let mut accs = Vec::new();
    let mut f1s = Vec::new();
    let examples;
    if let Some(test) = &spec.test {
        let (xt, lt) = labelled_texts(ctx, spec, std::slice::from_ref(test))?;
        let all: Vec<String> = labels.iter().chain(&lt).cloned().collect();
        let (idx, names) = class_indices(&all);
        let (ytr, yte) = idx.split_at(labels.len());
        let model = metric(
            "logistic regression",
            logreg::fit(&x, ytr, names.len(), 1.0, 100),
        )?;
        let pred = metric("logistic regression", model.predict(&xt))?;
        accs.push(metric("accuracy", metrics::accuracy(&pred, yte))?);
        f1s.push(metric("macro_f1", metrics::macro_f1(&pred, yte))?);
        examples = xt.len();
    } else {
        let (y, names) = class_indices(&labels);
        let k = spec.folds;
        if k < 2 || k > x.len() {
            return Err(spec.spec_err(format!(
                "folds must be between 2 and the number of rows ({}), got {k}",
                x.len()
            )));
        }
        // Seeded shuffle, then fold i takes every k-th example of the shuffled order.
        let mut order: Vec<usize> = (0..x.len()).collect();
        kmeans::Rng::new(spec.seed).shuffle(&mut order);
        for fold in 0..k {
            let (mut xtr, mut ytr, mut xte, mut yte) =
                (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            for (pos, &i) in order.iter().enumerate() {
                if pos % k == fold {
                    xte.push(x[i].clone());
                    yte.push(y[i]);
                } else {
                    xtr.push(x[i].clone());
                    ytr.push(y[i]);
                }
            }
            let model = metric(
                "logistic regression",
                logreg::fit(&xtr, &ytr, names.len(), 1.0, 100),
            )?;
            let pred = metric("logistic regression", model.predict(&xte))?;
            accs.push(metric("accuracy", metrics::accuracy(&pred, &yte))?);
            f1s.push(metric("macro_f1", metrics::macro_f1(&pred, &yte))?);
        }
        examples = x.len();
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut m = BTreeMap::new();
    m.insert("accuracy".into(), mean(&accs));
    m.insert("macro_f1".into(), mean(&f1s));
    Ok((examples, "accuracy", m))
}

fn clustering(ctx: &mut Ctx, spec: &TaskSpec) -> Result<Outcome> {
    let (x, labels) = labelled_texts(ctx, spec, &spec.data)?;
    let (y, names) = class_indices(&labels);
    // Full k-means with 10 k-means++ seedings rather than MTEB's MiniBatchKMeans: the mini-batch V-measure on
    // bbc-news swings by 0.3 with the seed (eval/tests/fixtures/task_references.json), too unstable to compare.
    let mut options = kmeans::KMeansOptions::new(names.len());
    options.n_init = 10;
    options.seed = spec.seed;
    let clusters = metric("k-means", kmeans::kmeans(&x, &options))?;
    let mut m = BTreeMap::new();
    m.insert(
        "v_measure".into(),
        metric("v_measure", metrics::v_measure(&y, &clusters.labels))?,
    );
    Ok((x.len(), "v_measure", m))
}

fn retrieval(ctx: &mut Ctx, spec: &TaskSpec) -> Result<Outcome> {
    let f = text_fields(spec, 2)?;
    let rows = rows(spec, &f)?;
    let (queries, docs) = embed_two_fields(ctx, &rows, &f)?;
    let n = rows.len();
    let norm = |v: &Vec<f32>| {
        let l = v
            .iter()
            .map(|x| (*x as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-12);
        v.iter().map(|x| *x as f64 / l).collect::<Vec<f64>>()
    };
    let q: Vec<Vec<f64>> = queries.iter().map(norm).collect();
    let d: Vec<Vec<f64>> = docs.iter().map(norm).collect();
    let k = 10.min(n);
    let mut rankings = Vec::with_capacity(n);
    for qi in &q {
        let mut scores: Vec<(f64, usize)> = d
            .iter()
            .enumerate()
            .map(|(j, dj)| (qi.iter().zip(dj).map(|(a, b)| a * b).sum(), j))
            .collect();
        // Highest score first; ties by document index so the ranking is deterministic.
        scores.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        rankings.push(
            scores
                .into_iter()
                .take(k)
                .map(|(_, j)| j)
                .collect::<Vec<usize>>(),
        );
    }
    type AtK = fn(&[usize], &HashSet<usize>, usize) -> std::result::Result<f64, crate::Error>;
    let mean_over_queries = |name: &str, f: AtK, k: usize| -> Result<f64> {
        let mut total = 0.0;
        for (i, ranked) in rankings.iter().enumerate() {
            total += metric(name, f(ranked, &HashSet::from([i]), k))?;
        }
        Ok(total / n as f64)
    };
    let mut m = BTreeMap::new();
    m.insert(
        "ndcg_at_10".into(),
        mean_over_queries("ndcg@10", metrics::ndcg_at_k, 10)?,
    );
    m.insert(
        "mrr_at_10".into(),
        mean_over_queries("mrr@10", metrics::mrr_at_k, 10)?,
    );
    m.insert(
        "recall_at_1".into(),
        mean_over_queries("recall@1", metrics::recall_at_k, 1)?,
    );
    m.insert(
        "recall_at_10".into(),
        mean_over_queries("recall@10", metrics::recall_at_k, 10)?,
    );
    Ok((n, "ndcg_at_10", m))
}

fn glue(ctx: &mut Ctx, spec: &TaskSpec) -> Result<Outcome> {
    let Head::SequenceClassification {
        num_labels,
        id2label,
        regression,
    } = ctx.encoder.checkpoint.config.bert().head.clone()
    else {
        return Err(TaskError::NoHead {
            dir: ctx.encoder.checkpoint.dir.clone(),
        });
    };
    let fields: Vec<String> = match &spec.text_fields {
        Some(f) => f.clone(),
        None => guess_glue_fields(&spec.data[0])?,
    };
    if fields.is_empty() || fields.len() > 2 {
        return Err(spec.spec_err(format!("needs 1 or 2 text fields, got {fields:?}")));
    }
    let target = if regression {
        spec.score_field.as_str()
    } else {
        spec.label_field.as_str()
    };
    let mut all_fields: Vec<&str> = fields.iter().map(String::as_str).collect();
    all_fields.push(target);
    let rows = rows(spec, &all_fields)?;
    let t = fields.len();
    let inputs: Vec<TextInput> = rows
        .iter()
        .map(|r| {
            Ok(if t == 2 {
                TextInput::Pair(r.text(0, &fields[0])?, r.text(1, &fields[1])?)
            } else {
                TextInput::Single(r.text(0, &fields[0])?)
            })
        })
        .collect::<Result<_>>()?;
    let mut m = BTreeMap::new();
    if regression {
        let gold: Vec<f64> = rows
            .iter()
            .map(|r| r.number(t, target))
            .collect::<Result<_>>()?;
        let logits = ctx.encoder.logits(&inputs, ctx.on_batch)?;
        let pred: Vec<f64> = logits.iter().map(|l| l[0] as f64).collect();
        m.insert(
            "pearson".into(),
            metric("pearson", metrics::pearson(&pred, &gold))?,
        );
        m.insert(
            "spearman".into(),
            metric("spearman", metrics::spearman(&pred, &gold))?,
        );
        return Ok((rows.len(), "pearson", m));
    }
    let mut gold = Vec::with_capacity(rows.len());
    for r in &rows {
        let key = r.label(t, target)?;
        let id = match key.parse::<usize>() {
            Ok(i) if i < num_labels => i,
            _ => id2label
                .iter()
                .position(|n| *n == key)
                .ok_or_else(|| TaskError::Field {
                    path: r.path.clone(),
                    line: r.line,
                    field: target.to_string(),
                    problem: format!(
                        "label `{key}` is not one of the model's labels ({})",
                        id2label
                            .iter()
                            .enumerate()
                            .map(|(i, n)| format!("{i}: {n}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                })?,
        };
        gold.push(id);
    }
    let logits = ctx.encoder.logits(&inputs, ctx.on_batch)?;
    let pred: Vec<usize> = logits
        .iter()
        .map(|l| {
            l.iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > l[best] { i } else { best })
        })
        .collect();
    m.insert(
        "accuracy".into(),
        metric("accuracy", metrics::accuracy(&pred, &gold))?,
    );
    m.insert(
        "correct".into(),
        pred.iter().zip(&gold).filter(|(p, g)| p == g).count() as f64,
    );
    m.insert(
        "mcc".into(),
        metric("mcc", metrics::matthews_corrcoef(&pred, &gold))?,
    );
    if num_labels == 2 {
        m.insert(
            "f1".into(),
            metric("f1", metrics::f1_binary(&pred, &gold, 1))?,
        );
    } else {
        m.insert(
            "macro_f1".into(),
            metric("macro_f1", metrics::macro_f1(&pred, &gold))?,
        );
    }
    Ok((rows.len(), "accuracy", m))
}

/// `sentence1` + `sentence2` when the first row has both, else `sentence`, else `text`.
fn guess_glue_fields(path: &std::path::Path) -> Result<Vec<String>> {
    for candidate in [&["sentence1", "sentence2"][..], &["sentence"], &["text"]] {
        if load_rows(path, candidate, Some(1)).is_ok() {
            return Ok(candidate.iter().map(|s| s.to_string()).collect());
        }
    }
    Err(TaskError::Dataset {
        path: path.to_path_buf(),
        problem: "has none of the fields sentence1+sentence2, sentence or text\nhint: name them with `text-fields`".into(),
    })
}
