//! `fisher-prune` (GAPrune) on tiny seeded BERTs: the contrastive gradients and Fisher diagonals equal finite
//! differences of an explicit InfoNCE, the masks keep exactly the requested count (or 2 of every 4), the sparse
//! tensors round-trip bit-exactly through safetensors with the bytes the plan stated, the official code's
//! per-element alignment changes nothing, and bad settings and data are errors naming the key, file and line.

mod common;

use std::path::{Path, PathBuf};

use common::fixture;
use compressor_models::forms::{Form, SparsePattern};
use compressor_models::runtime::{Bert, Cpu};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, EncodedBatch, HostTensor, ModelConfig, TensorStore};
use compressor_passes::analyses::cache::Cache;
use compressor_passes::analyses::{Analyses, Sample};
use compressor_passes::fisher_prune::{Config, FisherPrune};
use compressor_passes::{ModelInfo, Pass, PassPlan, PassReport, PlanContext};
use serde_json::{json, Value};

const FFN: [&str; 4] = [
    "encoder.layer.0.intermediate.dense.weight",
    "encoder.layer.0.output.dense.weight",
    "encoder.layer.1.intermediate.dense.weight",
    "encoder.layer.1.output.dense.weight",
];

/// Write a paragraphs file (3 articles of 4 paragraphs) and a pairs file (8 headline / article records) into
/// `dir`.
fn data(dir: &Path) -> (PathBuf, PathBuf) {
    let words = [
        "the", "cat", "sat", "on", "mat", "a", "good", "movie", "film", "dog", "great", "bad",
    ];
    let text = |seed: usize, n: usize| -> String {
        (0..n)
            .map(|k| words[(seed * 7 + k * 5 + k * k) % words.len()])
            .collect::<Vec<_>>()
            .join(" ")
    };
    let general = dir.join("wiki.jsonl");
    let mut lines = String::new();
    for a in 0..3 {
        for p in 0..4 {
            lines += &format!(
                "{}\n",
                json!({ "title": format!("article {a}"), "paragraph": p, "text": text(a * 4 + p, 6 + p) })
            );
        }
    }
    std::fs::write(&general, lines).expect("write");
    let domain = dir.join("news.jsonl");
    let mut lines = String::new();
    for r in 0..8 {
        lines += &format!(
            "{}\n",
            json!({ "id": r, "title": text(r + 20, 3), "text": text(r + 40, 9) })
        );
    }
    std::fs::write(&domain, lines).expect("write");
    (general, domain)
}

fn settings(dir: &Path, extra: Value) -> Value {
    let (general, domain) = data(dir);
    let mut s = json!({
        "target": 0.5,
        "triplets": 4,
        "micro-batch": 2,
        "max-length": 16,
        "general": { "data": general },
        "domain": { "data": domain, "format": "pairs" },
    });
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    s
}

fn open(dir: &Path) -> (ModelConfig, TensorStore) {
    let c = Checkpoint::open(dir).expect("opens");
    (c.config, c.store)
}

fn pass(settings: Value, cache: Option<&Path>) -> FisherPrune {
    let config: Config = serde_json::from_value(settings).expect("valid settings");
    FisherPrune::with_cache(config, Cache::new(cache))
}

fn plan(dir: &Path, pass: &FisherPrune) -> compressor_passes::Result<PassPlan> {
    let (config, store) = open(dir);
    let info = ModelInfo::from_store(&config, &store);
    pass.plan(&PlanContext {
        config: &config,
        info: &info,
        store: &store,
        model_dir: dir,
        calibration: None,
        progress: &compressor_passes::NoProgress,
    })
}

/// Plan and run on the checkpoint of `dir`.
fn run(
    dir: &Path,
    pass: &FisherPrune,
) -> compressor_passes::Result<(ModelConfig, TensorStore, PassPlan, PassReport)> {
    let plan = plan(dir, pass)?;
    let (mut config, mut store) = open(dir);
    let report = common::run_planned(pass, dir, &mut config, &mut store, &plan)?;
    store.check(&config)?;
    Ok((config, store, plan, report))
}

fn zeros(store: &TensorStore, name: &str) -> usize {
    let (_, shape) = store.info(name).expect("tensor");
    store
        .get_f32(name, &shape)
        .expect("f32")
        .iter()
        .filter(|v| **v == 0.0)
        .count()
}

/// InfoNCE with scale 20 in f64 from pooled embeddings `[3n][h]` (queries, positives, negatives).
fn info_nce(pooled: &[Vec<f32>]) -> f64 {
    let n = pooled.len() / 3;
    let unit: Vec<Vec<f64>> = pooled
        .iter()
        .map(|r| {
            let norm = r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>().sqrt();
            r.iter().map(|v| f64::from(*v) / norm).collect()
        })
        .collect();
    let mut loss = 0.0;
    for i in 0..n {
        let logits: Vec<f64> = (n..3 * n)
            .map(|j| {
                20.0 * unit[i]
                    .iter()
                    .zip(&unit[j])
                    .map(|(a, b)| a * b)
                    .sum::<f64>()
            })
            .collect();
        let max = logits.iter().cloned().fold(f64::MIN, f64::max);
        let lse = max + logits.iter().map(|l| (l - max).exp()).sum::<f64>().ln();
        loss += lse - logits[i];
    }
    loss / n as f64
}

fn pooled(store: &TensorStore, ckpt: &Checkpoint, batch: &EncodedBatch) -> Vec<Vec<f32>> {
    let model =
        Bert::<Cpu>::load(store, &ckpt.config, ckpt.pooling, &Default::default()).expect("loads");
    let hidden = model.encode(batch).expect("encode");
    let p = model.pool(hidden, batch);
    let [rows, h] = p.dims();
    let flat = compressor_models::runtime::flat(p).expect("flat");
    (0..rows)
        .map(|r| flat[r * h..(r + 1) * h].to_vec())
        .collect()
}

#[test]
fn contrastive_gradients_and_fisher_equal_finite_differences_of_an_explicit_info_nce() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("model");
    TinyBert {
        hidden_size: 8,
        intermediate_size: 16,
        seed: 11,
        ..Default::default()
    }
    .write(&dir)
    .expect("write");
    let ckpt = Checkpoint::open(&dir).expect("open");
    let t = |ids: &[i64]| (ids.to_vec(), vec![0; ids.len()]);
    let samples = [
        Sample::triplets(
            &[
                [t(&[2, 9, 17, 3]), t(&[2, 40, 41, 3]), t(&[2, 5, 3])],
                [t(&[2, 11, 3]), t(&[2, 12, 13, 14, 3]), t(&[2, 50, 51, 3])],
            ],
            0,
            20.0,
        ),
        Sample::triplets(
            &[[t(&[2, 30, 31, 3]), t(&[2, 33, 3]), t(&[2, 55, 56, 57, 3])]],
            0,
            20.0,
        ),
    ];
    let weights = vec![
        "encoder.layer.0.intermediate.dense.weight".to_string(),
        "encoder.layer.1.output.dense.weight".to_string(),
    ];
    let analyses = Analyses::new(&ckpt.store, &ckpt.config, ckpt.pooling, Cache::new(None));
    let (g, _) = analyses
        .gradients(&samples, &weights, &|_, _| {})
        .expect("gradients");
    assert_eq!(g.samples, 2);
    for w in &weights {
        let (dtype, shape) = ckpt.store.info(w).expect("weight");
        let base = ckpt.store.get_f32(w, &shape).expect("f32");
        let (mean, fisher) = (g.mean(w).expect("mean"), g.fisher(w).expect("fisher"));
        // The 4 elements with the largest Fisher values, and one more.
        let mut order: Vec<usize> = (0..base.len()).collect();
        order.sort_by(|&a, &b| fisher[b].total_cmp(&fisher[a]));
        let mut checked: Vec<usize> = order[..4].to_vec();
        checked.push(base.len() / 3);
        for &j in &checked {
            let eps = 1e-2f32;
            let mut per = Vec::new();
            for s in &samples {
                let at = |delta: f32| {
                    let mut store = Checkpoint::open(&dir).expect("open").store;
                    let mut v = base.clone();
                    v[j] += delta;
                    store.set(
                        w,
                        HostTensor::from_f32(shape.clone(), &v, dtype).expect("t"),
                    );
                    info_nce(&pooled(&store, &ckpt, &s.batch))
                };
                per.push((at(eps) - at(-eps)) / (2.0 * f64::from(eps)));
            }
            let m = per.iter().sum::<f64>() / 2.0;
            let f = per.iter().map(|v| v * v).sum::<f64>() / 2.0;
            let tol = |x: f64| 2e-3 + 2e-2 * x.abs();
            assert!(
                (mean[j] - m).abs() <= tol(m),
                "{w}[{j}] mean {} vs {m}",
                mean[j]
            );
            assert!(
                (fisher[j] - f).abs() <= tol(f),
                "{w}[{j}] fisher {} vs {f}",
                fisher[j]
            );
        }
        assert!(fisher[order[0]] > 1e-6, "{w}: gradients reached it");
    }
}

#[test]
fn the_mask_prunes_exactly_the_target_and_storage_round_trips_with_the_planned_bytes() {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tempdir");
    for extra in [
        json!({}),
        json!({ "allocation": "per-tensor", "target": 0.3 }),
        json!({ "allocation": "per-layer", "target": 0.3 }),
        json!({ "score": "magnitude", "target": 0.37 }),
        json!({ "score": "fisher-domain" }),
    ] {
        let s = settings(tmp.path(), extra.clone());
        let target = s["target"].as_f64().expect("target");
        let p = pass(s, Some(&tmp.path().join("cache")));
        let (config, store, plan, report) = run(&dir, &p).expect("runs");
        let (_, original) = open(&dir);
        let total: usize = FFN
            .iter()
            .map(|n| original.info(n).expect("t").1.iter().product::<usize>())
            .sum();
        let pruned: usize = FFN.iter().map(|n| zeros(&store, n)).sum();
        let before: usize = FFN.iter().map(|n| zeros(&original, n)).sum();
        assert_eq!(before, 0, "the fixture has no zero FFN weight");
        let expected = if extra["allocation"] == "per-tensor" {
            FFN.iter()
                .map(|n| {
                    let numel: usize = original.info(n).expect("t").1.iter().product();
                    (target * numel as f64).round() as usize
                })
                .sum()
        } else {
            (target * total as f64).round() as usize
        };
        assert_eq!(pruned, expected, "{extra}");
        if extra["allocation"] == "per-layer" {
            // Two layers of equal size: each loses half of the pruned count (the odd one to layer 0).
            let layer = |l: usize| -> usize {
                FFN[2 * l..2 * l + 2].iter().map(|n| zeros(&store, n)).sum()
            };
            assert_eq!(layer(0), expected.div_ceil(2), "{extra}");
            assert_eq!(layer(1), expected / 2, "{extra}");
        }
        if extra["allocation"] == "per-tensor" {
            for n in FFN {
                let numel: usize = original.info(n).expect("t").1.iter().product();
                assert_eq!(zeros(&store, n), (0.3 * numel as f64).round() as usize);
            }
        }
        // Every FFN weight is stored with a bitmask; the plan said its bytes.
        for n in FFN {
            assert!(
                matches!(
                    store.form(n),
                    Some(Form::Sparse {
                        pattern: SparsePattern::Bitmask,
                        ..
                    })
                ),
                "{n}"
            );
            let change = plan.changes.iter().find(|c| c.name == n).expect("planned");
            assert_eq!(change.bytes_after, store.stored_bytes(n), "{n}");
            assert!(change.bytes_after < change.bytes_before);
        }
        assert_eq!(report.changed.len(), 4);
        // Kept weights are the original values, bit for bit.
        for n in FFN {
            let (_, shape) = store.info(n).expect("t");
            let got = store.get_f32(n, &shape).expect("f32");
            let want = original.get_f32(n, &shape).expect("f32");
            for (g, w) in got.iter().zip(&want) {
                assert!(*g == 0.0 || g.to_bits() == w.to_bits());
            }
        }
        // Written and read back: the same forms, values and bytes.
        let out = tmp.path().join("artifact");
        std::fs::create_dir_all(&out).expect("dir");
        std::fs::copy(dir.join("config.json"), out.join("config.json")).expect("config");
        compressor_models::st::write(
            &out.join("model.safetensors"),
            &store.disk_tensors(&config).expect("tensors"),
            &store.disk_metadata(&config),
        )
        .expect("write");
        let back = TensorStore::open(&out, &config).expect("reads back");
        for n in FFN {
            assert_eq!(back.form(n), store.form(n), "{n}");
            assert_eq!(back.stored_bytes(n), store.stored_bytes(n), "{n}");
            let (_, shape) = store.info(n).expect("t");
            let a = store.get_f32(n, &shape).expect("f32");
            let b = back.get_f32(n, &shape).expect("f32");
            assert!(
                a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
                "{n}"
            );
        }
    }
}

#[test]
fn two_four_keeps_the_two_largest_scores_of_every_group_of_four() {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = settings(
        tmp.path(),
        json!({ "pattern": "2:4", "score": "magnitude" }),
    );
    s.as_object_mut().expect("object").remove("target");
    let (_, store, planned, _) = run(&dir, &pass(s, None)).expect("runs");
    let (_, original) = open(&dir);
    for n in FFN {
        assert!(matches!(
            store.form(n),
            Some(Form::Sparse {
                pattern: SparsePattern::TwoFour,
                ..
            })
        ));
        let change = planned
            .changes
            .iter()
            .find(|c| c.name == n)
            .expect("planned");
        assert_eq!(change.bytes_after, store.stored_bytes(n), "{n}");
        let (_, shape) = store.info(n).expect("t");
        let got = store.get_f32(n, &shape).expect("f32");
        let want = original.get_f32(n, &shape).expect("f32");
        for (g, w) in got.chunks(4).zip(want.chunks(4)) {
            let kept: Vec<usize> = (0..4).filter(|&i| g[i] != 0.0).collect();
            assert_eq!(kept.len(), 2, "{n}: {g:?}");
            let smallest_kept = kept.iter().map(|&i| w[i].abs()).fold(f32::MAX, f32::min);
            let largest_pruned = (0..4)
                .filter(|i| !kept.contains(i))
                .map(|i| w[i].abs())
                .fold(0.0, f32::max);
            assert!(smallest_kept >= largest_pruned, "{n}: {w:?} -> {g:?}");
        }
    }
    // A target other than 0.5 is refused with 2:4.
    let s = settings(tmp.path(), json!({ "pattern": "2:4", "target": 0.4 }));
    let err = plan(&dir, &pass(s, None)).expect_err("refused");
    assert!(
        err.to_string()
            .contains("`target`: is 0.4; pattern = \"2:4\" prunes exactly 0.5"),
        "{err}"
    );
}

#[test]
fn the_official_per_element_alignment_changes_at_most_a_tie_and_the_plan_is_deterministic() {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let mask = |extra: Value| {
        let p = pass(settings(tmp.path(), extra), Some(&cache));
        plan(&dir, &p).expect("plans");
        p.decision().expect("decided")
    };
    let none = mask(json!({ "alpha": 0.0 }));
    let degenerate = mask(json!({ "alignment": "normalized-product" }));
    let keeps = |d: &compressor_passes::fisher_prune::Decision| {
        d.tensors.iter().map(|t| t.keep.clone()).collect::<Vec<_>>()
    };
    let differ = |a: &compressor_passes::fisher_prune::Decision,
                  b: &compressor_passes::fisher_prune::Decision| {
        a.tensors
            .iter()
            .zip(&b.tensors)
            .map(|(x, y)| x.keep.iter().zip(&y.keep).filter(|(p, q)| p != q).count())
            .sum::<usize>()
    };
    // The official array's elements sum to the tensor cosine, so each is ~1/numel (here numel = 2048): the factor
    // 1 + 0.2 s moves a score by ~1e-4 of itself, enough to swap at most a near-tie at the threshold, where the
    // tensor cosine (the default) or the sign reading move hundreds of weights. On MiniLM (numel 589,824) the
    // factor is within ~3e-7 of 1.
    let total: usize = none.tensors.iter().map(|t| t.keep.len()).sum();
    let cosine0 = mask(json!({}));
    let sign0 = mask(json!({ "alignment": "sign" }));
    let (d, c, g) = (
        differ(&degenerate, &none),
        differ(&cosine0, &none),
        differ(&sign0, &none),
    );
    assert!(
        d <= 2,
        "the degenerate alignment moved {d} of {total} weights"
    );
    assert!(
        c >= 50 * d.max(1) && g >= 50 * d.max(1),
        "cosine moved {c}, sign {g}, degenerate {d}"
    );
    // The gradients were computed once and then read from the cache.
    assert_eq!(degenerate.cached, Some((true, true)));
    // Same inputs, same decision.
    let again = mask(json!({ "alignment": "normalized-product" }));
    assert_eq!(again, degenerate);
    // The default (tensor cosine) and sign readings are real alignments: |s| up to 1 per tensor or weight.
    let cosine = mask(json!({}));
    for t in &cosine.tensors {
        let s = t.alignment.expect("alignment");
        assert!(s.abs() <= 1.0 && s != 0.0, "{}: {s}", t.name);
    }
    let sign = mask(json!({ "alignment": "sign", "alpha": 0.9 }));
    assert_ne!(
        keeps(&sign),
        keeps(&none),
        "a strong per-weight alignment moves the mask"
    );
}

fn plan_error(extra: Value, edit: impl Fn(&Path, &mut Value)) -> String {
    let dir = fixture("tiny-bert");
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut s = settings(tmp.path(), extra);
    edit(tmp.path(), &mut s);
    plan(&dir, &pass(s, None))
        .expect_err("must fail")
        .to_string()
}

#[test]
fn bad_settings_and_data_name_the_key_file_and_line() {
    for (target, shown) in [(1.5, "1.5"), (0.0, "0"), (1.0, "1")] {
        let err = plan_error(json!({ "target": target }), |_, _| {});
        assert_eq!(
            err,
            format!("`target`: is {shown}, expected a fraction in (0, 1) (0.5 = 50% of the selected weights)")
        );
    }
    let err = plan_error(
        json!({ "target": 0.97, "allocation": "per-layer" }),
        |_, _| {},
    );
    assert_eq!(
        err,
        "`target`: is 0.97; allocation = \"per-layer\" keeps every layer's pruned fraction within [0.05, 0.95]\nhint: use allocation = \"global\" or \"per-tensor\" for this target"
    );
    let err = plan_error(json!({}), |_, s| {
        s.as_object_mut().expect("object").remove("target");
    });
    assert!(err.starts_with("`target`: is missing"), "{err}");

    let err = plan_error(
        json!({ "select": { "roles": ["ffn.up"], "layers": [7] } }),
        |_, _| {},
    );
    assert!(
        err.starts_with("`select` matches no tensor of this model"),
        "{err}"
    );

    // A domain record without its headline.
    let err = plan_error(json!({}), |dir, s| {
        let path = dir.join("broken.jsonl");
        std::fs::write(
            &path,
            "{\"title\": \"a\", \"text\": \"b c\"}\n{\"text\": \"no title here\"}\n",
        )
        .expect("write");
        s["domain"]["data"] = json!(path);
    });
    assert!(err.contains("broken.jsonl"), "{err}");
    assert!(
        err.contains("broken.jsonl:2: missing field `title`"),
        "{err}"
    );

    // Fewer triplets than asked for.
    let err = plan_error(json!({ "triplets": 50 }), |_, _| {});
    assert!(
        err.starts_with("`general.data`: `")
            && err.contains("wiki.jsonl` gives 9 pairs of adjacent paragraphs"),
        "{err}"
    );
    assert!(err.contains("`triplets` asks for 50"), "{err}");
    let err = plan_error(json!({}), |_, s| {
        s["domain"]["skip"] = json!(6);
    });
    assert!(
        err.contains("`domain.data`")
            && err.contains("gives 2 records")
            && err.contains("after skipping 6"),
        "{err}"
    );

    // A field the format does not use; a missing set.
    let err = plan_error(json!({}), |_, s| {
        s["general"]["negative-field"] = json!("neg");
    });
    assert_eq!(
        err,
        "`general.negative-field`: is not used by format = \"paragraphs\""
    );
    let err = plan_error(json!({}), |_, s| {
        s.as_object_mut().expect("object").remove("domain");
    });
    assert!(
        err.starts_with("`domain`: is missing: score = \"gaprune\" needs both"),
        "{err}"
    );

    // 2:4 on tensors whose input width is not a multiple of 4 would be refused; unknown keys are refused by serde.
    let unknown: Result<Config, _> = serde_json::from_value(json!({ "target": 0.5, "alfa": 0.1 }));
    assert!(unknown
        .expect_err("unknown")
        .to_string()
        .contains("unknown field `alfa`"));
}

#[test]
fn kmeans_sampling_keeps_one_candidate_per_cluster_of_queries() {
    use compressor_passes::fisher_prune::{representative, Triplet};
    let dir = fixture("tiny-bert");
    let ckpt = Checkpoint::open(&dir).expect("opens");
    let analyses = Analyses::new(&ckpt.store, &ckpt.config, ckpt.pooling, Cache::new(None));
    let tokenizer =
        compressor_calibration::TextTokenizer::from_model_dir(&dir, Some(16)).expect("tokenizer");
    // Four distinct queries, three candidates each (different positives): four clusters of identical points.
    let queries = [
        "the cat sat",
        "a good movie",
        "i hate this film",
        "the dog and the mat",
    ];
    let candidates: Vec<Triplet> = (0..12)
        .map(|i| {
            [
                queries[i % 4].to_string(),
                format!("positive {i}"),
                format!("negative {i}"),
            ]
        })
        .collect();
    let picked = representative(&analyses, &tokenizer, candidates.clone(), 4, 0).expect("picks");
    assert_eq!(picked.len(), 4);
    let mut seen: Vec<&str> = picked.iter().map(|t| t[0].as_str()).collect();
    seen.sort_unstable();
    let mut want = queries.to_vec();
    want.sort_unstable();
    assert_eq!(seen, want, "one candidate of every query");
    // The first candidate of each cluster (ties by position), in candidate order.
    assert_eq!(picked, candidates[..4].to_vec());
    // Through the pass: the same gradients twice (deterministic), other than uniform sampling's.
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache = tmp.path().join("cache");
    let decide = |extra: Value| {
        let p = pass(settings(tmp.path(), extra), Some(&cache));
        plan(&dir, &p).expect("plans");
        p.decision().expect("decided")
    };
    let k1 = decide(json!({ "sampling": "kmeans" }));
    assert_eq!(k1.cached, Some((false, false)));
    let k2 = decide(json!({ "sampling": "kmeans" }));
    assert_eq!(k2.cached, Some((true, true)), "the same triplets again");
    assert_eq!(k1.tensors, k2.tensors);
    let uniform = decide(json!({}));
    assert_eq!(
        uniform.cached,
        Some((false, false)),
        "other triplets, other gradients"
    );
}
