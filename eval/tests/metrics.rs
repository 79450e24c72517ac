//! Agreement of `compressor_eval`'s metrics, logistic regression and k-means with the reference implementations
//! (scipy, scikit-learn, pytrec_eval, MTEB), on the numbers in `tests/fixtures/metric_references.json` written by
//! `eval/scripts/make_metric_references.py`; plus hand-computed cases and the exact error messages.
//!
//! Run with `-- --nocapture` to see the largest deviation measured for each metric.

use std::collections::HashSet;
use std::sync::OnceLock;

use compressor_eval::kmeans::{self, KMeansOptions, MiniBatchOptions, Rng};
use compressor_eval::logreg::{self, Options};
use compressor_eval::metrics::{self, Similarity};
use serde_json::Value;

/// Exact metrics (counts, ranks, sums of a few terms) must agree to this.
const EXACT: f64 = 1e-9;

fn refs() -> &'static Value {
    static REFS: OnceLock<Value> = OnceLock::new();
    REFS.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/metric_references.json"
        );
        let text = std::fs::read_to_string(path).expect("read metric_references.json");
        serde_json::from_str(&text).expect("parse metric_references.json")
    })
}

fn cases(section: &str) -> &'static [Value] {
    refs()[section].as_array().expect("section is an array")
}

fn num(v: &Value) -> f64 {
    v.as_f64().expect("a number")
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array().expect("an array").iter().map(num).collect()
}

fn usizes(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| usize::try_from(x.as_u64().expect("a label")).expect("fits usize"))
        .collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_bool().expect("a bool"))
        .collect()
}

/// Rows as `f32`, exactly as the script handed them to the references (`np.float32(x)`).
fn rows_f32(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .expect("an array of rows")
        .iter()
        .map(|row| f64s(row).into_iter().map(|x| x as f32).collect())
        .collect()
}

fn name(case: &Value) -> &str {
    case["name"].as_str().unwrap_or("?")
}

/// Asserts `|got - want| <= tol` and returns the deviation.
fn close(what: &str, got: f64, want: f64, tol: f64) -> f64 {
    let diff = (got - want).abs();
    assert!(
        diff <= tol,
        "{what}: got {got}, reference {want} (|diff| = {diff:e} > {tol:e})"
    );
    diff
}

fn report(metric: &str, max_diff: f64) {
    eprintln!("reference agreement: {metric:<40} max |diff| = {max_diff:.3e}");
}

// ---------------------------------------------------------------------------------------------------------------
// Against the references

#[test]
fn correlations_match_scipy() {
    let (mut dp, mut ds) = (0.0f64, 0.0f64);
    for case in cases("correlations") {
        let (x, y) = (f64s(&case["x"]), f64s(&case["y"]));
        let (p, s) = if case["x_is_f32"].as_bool() == Some(true) {
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            (metrics::pearson(&x32, &y), metrics::spearman(&x32, &y))
        } else {
            (metrics::pearson(&x, &y), metrics::spearman(&x, &y))
        };
        let n = name(case);
        dp = dp.max(close(
            &format!("pearson {n}"),
            p.expect("pearson"),
            num(&case["pearson"]),
            EXACT,
        ));
        ds = ds.max(close(
            &format!("spearman {n}"),
            s.expect("spearman"),
            num(&case["spearman"]),
            EXACT,
        ));
    }
    report("pearson (scipy.stats.pearsonr)", dp);
    report("spearman (scipy.stats.spearmanr)", ds);
}

#[test]
fn classification_matches_sklearn() {
    let mut max = [0.0f64; 4];
    for case in cases("classification") {
        let (gold, pred) = (usizes(&case["gold"]), usizes(&case["pred"]));
        let positive =
            usize::try_from(case["positive"].as_u64().expect("positive")).expect("usize");
        let n = name(case);
        let got = [
            metrics::accuracy(&pred, &gold).expect("accuracy"),
            metrics::macro_f1(&pred, &gold).expect("macro_f1"),
            metrics::matthews_corrcoef(&pred, &gold).expect("mcc"),
            metrics::f1_binary(&pred, &gold, positive).expect("f1_binary"),
        ];
        for (i, key) in ["accuracy", "macro_f1", "matthews_corrcoef", "f1_binary"]
            .iter()
            .enumerate()
        {
            max[i] = max[i].max(close(&format!("{key} {n}"), got[i], num(&case[key]), EXACT));
        }
    }
    report("accuracy (accuracy_score)", max[0]);
    report("macro_f1 (f1_score macro)", max[1]);
    report("matthews_corrcoef (matthews_corrcoef)", max[2]);
    report("f1_binary (f1_score binary)", max[3]);
}

#[test]
fn average_precision_matches_sklearn() {
    let mut max = 0.0f64;
    for case in cases("average_precision") {
        let got = metrics::average_precision(&f64s(&case["scores"]), &bools(&case["labels"]))
            .expect("ap");
        max = max.max(close(
            name(case),
            got,
            num(&case["average_precision"]),
            EXACT,
        ));
    }
    // and on the pair-classification cases, with distances negated as MTEB does
    for case in cases("thresholds") {
        let sign = if case["higher_is_similar"].as_bool() == Some(true) {
            1.0
        } else {
            -1.0
        };
        let scores: Vec<f64> = f64s(&case["scores"]).iter().map(|s| s * sign).collect();
        let got = metrics::average_precision(&scores, &bools(&case["labels"])).expect("ap");
        max = max.max(close(
            name(case),
            got,
            num(&case["average_precision"]),
            EXACT,
        ));
    }
    report("average_precision (average_precision_score)", max);
}

#[test]
fn thresholds_match_mteb() {
    let (mut da, mut df) = (0.0f64, 0.0f64);
    for case in cases("thresholds") {
        let (scores, labels) = (f64s(&case["scores"]), bools(&case["labels"]));
        let higher = case["higher_is_similar"].as_bool().expect("bool");
        let n = name(case);
        let acc = metrics::best_accuracy_threshold(&scores, &labels, higher).expect("acc");
        da = da.max(close(
            &format!("accuracy {n}"),
            acc.accuracy,
            num(&case["accuracy"]),
            EXACT,
        ));
        da = da.max(close(
            &format!("acc threshold {n}"),
            acc.threshold,
            num(&case["accuracy_threshold"]),
            EXACT,
        ));
        let f1 = metrics::best_f1_threshold(&scores, &labels, higher).expect("f1");
        df = df.max(close(&format!("f1 {n}"), f1.f1, num(&case["f1"]), EXACT));
        df = df.max(close(
            &format!("precision {n}"),
            f1.precision,
            num(&case["precision"]),
            EXACT,
        ));
        df = df.max(close(
            &format!("recall {n}"),
            f1.recall,
            num(&case["recall"]),
            EXACT,
        ));
        df = df.max(close(
            &format!("f1 threshold {n}"),
            f1.threshold,
            num(&case["f1_threshold"]),
            EXACT,
        ));
    }
    report("best_accuracy_threshold (MTEB)", da);
    report("best_f1_threshold (MTEB)", df);
}

#[test]
fn retrieval_matches_pytrec_eval_and_mteb() {
    let section = &refs()["retrieval"];
    let ks = usizes(&section["ks"]);
    let mut max = [0.0f64; 5];
    let names = ["ndcg_at", "recall_at", "precision_at", "map_at", "mrr_at"];
    for query in section["queries"].as_array().expect("queries") {
        let ids: Vec<String> = query["doc_ids"]
            .as_array()
            .expect("ids")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect();
        let order = metrics::rank_by_score(&f64s(&query["scores"]), &ids).expect("rank");
        let ranked: Vec<String> = order.iter().map(|&i| ids[i].clone()).collect();
        let expected: Vec<String> = query["ranking"]
            .as_array()
            .expect("ranking")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect();
        assert_eq!(ranked, expected, "trec_eval order (score desc, id desc)");
        let top = metrics::top_k_by_score(&f64s(&query["scores"]), &ids, 7).expect("top k");
        assert_eq!(top, order[..7], "top_k_by_score agrees with rank_by_score");
        let relevant: HashSet<String> = query["relevant"]
            .as_array()
            .expect("relevant")
            .iter()
            .map(|v| v.as_str().expect("id").to_owned())
            .collect();
        for &k in &ks {
            let got = [
                metrics::ndcg_at_k(&ranked, &relevant, k),
                metrics::recall_at_k(&ranked, &relevant, k),
                metrics::precision_at_k(&ranked, &relevant, k),
                metrics::map_at_k(&ranked, &relevant, k),
                metrics::mrr_at_k(&ranked, &relevant, k),
            ];
            for (i, got) in got.into_iter().enumerate() {
                let key = format!("{}_{k}", names[i]);
                let what = format!("{key} {}", query["id"]);
                max[i] = max[i].max(close(&what, got.expect("metric"), num(&query[&key]), EXACT));
            }
        }
    }
    report("ndcg_at_k (pytrec_eval ndcg_cut)", max[0]);
    report("recall_at_k (pytrec_eval recall)", max[1]);
    report("precision_at_k (pytrec_eval P)", max[2]);
    report("map_at_k (pytrec_eval map_cut)", max[3]);
    report("mrr_at_k (MTEB mrr)", max[4]);
}

#[test]
fn v_measure_matches_sklearn() {
    let mut max = 0.0f64;
    for case in cases("v_measure") {
        let got = metrics::homogeneity_completeness_v_measure(
            &usizes(&case["labels_true"]),
            &usizes(&case["labels_pred"]),
        )
        .expect("v_measure");
        let n = name(case);
        max = max.max(close(
            &format!("homogeneity {n}"),
            got.homogeneity,
            num(&case["homogeneity"]),
            EXACT,
        ));
        max = max.max(close(
            &format!("completeness {n}"),
            got.completeness,
            num(&case["completeness"]),
            EXACT,
        ));
        max = max.max(close(
            &format!("v_measure {n}"),
            got.v_measure,
            num(&case["v_measure"]),
            EXACT,
        ));
    }
    report("v_measure (homogeneity_completeness_v_measure)", max);
}

/// Default settings (C, max_iter = 100, tol = 1e-4) against scikit-learn's defaults: the two L-BFGS stop at
/// different points within the tolerance, so probabilities agree to 1e-3. Run to convergence, both reach the
/// same optimum: probabilities and coefficients agree to 1e-6.
#[test]
fn logreg_matches_sklearn() {
    let (mut d_default, mut d_converged, mut d_coef) = (0.0f64, 0.0f64, 0.0f64);
    for case in cases("logreg") {
        let n = name(case);
        let x = rows_f32(&case["x_train"]);
        let y = usizes(&case["y_train"]);
        let test = rows_f32(&case["x_test"]);
        let k = usize::try_from(case["n_classes"].as_u64().expect("n_classes")).expect("usize");
        let c = num(&case["c"]);

        let model = logreg::fit(&x, &y, k, c, 100).expect("fit");
        assert!(
            model.converged(),
            "{n}: default fit converges ({} iterations)",
            model.n_iter()
        );
        let proba = model.predict_proba(&test).expect("proba");
        for (row, want) in proba
            .iter()
            .zip(case["default"]["proba_test"].as_array().expect("rows"))
        {
            for (&got, want) in row.iter().zip(f64s(want)) {
                d_default = d_default.max(close(&format!("{n} default proba"), got, want, 1e-3));
            }
        }
        assert_eq!(
            model.predict(&test).expect("predict"),
            usizes(&case["default"]["predict_test"]),
            "{n}"
        );

        let tight = Options {
            c,
            max_iter: 10_000,
            tol: 1e-10,
        };
        let model = logreg::fit_with(&x, &y, k, &tight).expect("fit");
        let want = &case["converged"];
        for (row, want) in model
            .predict_proba(&test)
            .expect("proba")
            .iter()
            .zip(want["proba_test"].as_array().expect("rows"))
        {
            for (&got, want) in row.iter().zip(f64s(want)) {
                d_converged =
                    d_converged.max(close(&format!("{n} converged proba"), got, want, 1e-6));
            }
        }
        for (row, want) in model
            .coef()
            .iter()
            .zip(want["coef"].as_array().expect("rows"))
        {
            for (&got, want) in row.iter().zip(f64s(want)) {
                d_coef = d_coef.max(close(&format!("{n} converged coef"), got, want, 1e-6));
            }
        }
        for (&got, want) in model.intercept().iter().zip(f64s(&want["intercept"])) {
            d_coef = d_coef.max(close(&format!("{n} converged intercept"), got, want, 1e-6));
        }
    }
    report("logreg predict_proba, default settings", d_default);
    report("logreg predict_proba, run to convergence", d_converged);
    report("logreg coef/intercept, run to convergence", d_coef);
}

#[test]
fn kmeans_agrees_with_sklearn_in_quality() {
    for case in cases("clustering") {
        let n = name(case);
        let x = rows_f32(&case["x"]);
        let truth = usizes(&case["labels_true"]);
        let k = usize::try_from(case["n_clusters"].as_u64().expect("k")).expect("usize");
        let seeds = case["mini_batch_seeds"].as_u64().expect("seeds");

        let full = kmeans::kmeans(
            &x,
            &KMeansOptions {
                n_init: 10,
                ..KMeansOptions::new(k)
            },
        )
        .expect("kmeans");
        let want = num(&case["kmeans_n_init_10_inertia"]);
        let rel = (full.inertia - want) / want;
        let v_full = metrics::v_measure(&truth, &full.labels).expect("v");
        eprintln!(
            "kmeans {n}: inertia {:.4} vs sklearn {want:.4} (rel {rel:+.2e}); V {v_full:.4} vs sklearn {:.4}",
            full.inertia,
            num(&case["kmeans_n_init_10_v_measure"])
        );
        assert!(
            rel <= 1e-3,
            "{n}: k-means inertia {} is worse than scikit-learn's {want}",
            full.inertia
        );

        let (mut v_sum, mut inertia_sum) = (0.0, 0.0);
        for seed in 0..seeds {
            let options = MiniBatchOptions {
                seed,
                ..MiniBatchOptions::new(k)
            };
            let mb = kmeans::mini_batch_kmeans(&x, &options).expect("mini-batch");
            v_sum += metrics::v_measure(&truth, &mb.labels).expect("v");
            inertia_sum += mb.inertia;
        }
        let (v_mean, inertia_mean) = (v_sum / seeds as f64, inertia_sum / seeds as f64);
        let v_want = num(&case["mini_batch_v_measure_mean"]);
        eprintln!(
            "mini-batch {n}: mean V {v_mean:.4} vs sklearn {v_want:.4}; mean inertia {inertia_mean:.2} vs sklearn {:.2}",
            num(&case["mini_batch_inertia_mean"])
        );
        if n == "separated" {
            close(&format!("{n} k-means V"), v_full, 1.0, EXACT);
            close(&format!("{n} mini-batch V"), v_mean, 1.0, EXACT);
        } else {
            // Different random streams, same algorithm: over 100 seeds the mean V-measure (per-seed spread about
            // 0.045, so a standard error near 0.0045 on each side) and the mean inertia agree.
            close(&format!("{n} mini-batch mean V"), v_mean, v_want, 0.02);
            let inertia_want = num(&case["mini_batch_inertia_mean"]);
            close(
                &format!("{n} mini-batch mean inertia"),
                inertia_mean / inertia_want,
                1.0,
                0.01,
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Hand-computed cases

#[test]
fn spearman_with_ties_by_hand() {
    // x = [1, 2, 2, 3] has average ranks [1, 2.5, 2.5, 4]; y = [1, 3, 2, 4] has ranks [1, 3, 2, 4].
    // Both rank means are 2.5: dx = [-1.5, 0, 0, 1.5], dy = [-1.5, 0.5, -0.5, 1.5].
    // sum dx dy = 2.25 + 2.25 = 4.5, sum dx^2 = 4.5, sum dy^2 = 5, so rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9).
    let rho =
        metrics::spearman(&[1.0f64, 2.0, 2.0, 3.0], &[1.0f64, 3.0, 2.0, 4.0]).expect("spearman");
    close("spearman ties", rho, 0.9_f64.sqrt(), 1e-15);
    assert_eq!(
        metrics::rank_average(&[1.0, 2.0, 2.0, 3.0]),
        vec![1.0, 2.5, 2.5, 4.0]
    );
    assert_eq!(
        metrics::rank_average(&[5.0, 5.0, 5.0, -1.0]),
        vec![3.0, 3.0, 3.0, 1.0]
    );
    // Pearson of the raw values: dx = [-1, 0, 0, 1], dy = [-1.5, 0.5, -0.5, 1.5]: 3 / sqrt(2 * 5)
    let r = metrics::pearson(&[1.0f32, 2.0, 2.0, 3.0], &[1.0f32, 3.0, 2.0, 4.0]).expect("pearson");
    close("pearson", r, 3.0 / 10.0_f64.sqrt(), 1e-15);
}

#[test]
fn average_precision_by_hand() {
    // ranked: +, -, +, -: precision at the positives 1 and 2/3, each recall step 1/2: AP = 1/2 + 1/3
    let ap = metrics::average_precision(&[0.9f64, 0.8, 0.7, 0.6], &[true, false, true, false])
        .expect("ap");
    close("ap distinct", ap, 0.5 + 1.0 / 3.0, 1e-15);
    // a tie enters as one threshold: 0.9 (-) gives P 0, R 0; {0.8 +, 0.8 -} gives P 1/3, R 1/2;
    // 0.1 (+) gives P 1/2, R 1: AP = 1/2 * 1/3 + 1/2 * 1/2 = 5/12
    let ap = metrics::average_precision(&[0.9f64, 0.8, 0.8, 0.1], &[false, true, false, true])
        .expect("ap");
    close("ap tie", ap, 5.0 / 12.0, 1e-15);
}

#[test]
fn best_thresholds_by_hand() {
    // sorted most similar first: (0.9 +), (0.8 -), (0.8 +), (0.1 -). Cuts between distinct scores only:
    // after 0.9: P 1, R 1/2, F1 2/3 (threshold 0.85); after the two 0.8: P 2/3, R 1, F1 0.8 (threshold 0.45).
    let scores = [0.9f64, 0.8, 0.8, 0.1];
    let labels = [true, false, true, false];
    let f1 = metrics::best_f1_threshold(&scores, &labels, true).expect("f1");
    close("f1", f1.f1, 0.8, 1e-15);
    close("precision", f1.precision, 2.0 / 3.0, 1e-15);
    close("recall", f1.recall, 1.0, 1e-15);
    close("threshold", f1.threshold, 0.45, 1e-15);
    // accuracy: after 0.9: (1 + 2) / 4 = 0.75 at 0.85; after 0.8s: (2 + 1) / 4, not better
    let acc = metrics::best_accuracy_threshold(&scores, &labels, true).expect("acc");
    close("accuracy", acc.accuracy, 0.75, 1e-15);
    close("accuracy threshold", acc.threshold, 0.85, 1e-15);
    // the same as distances (lower is more similar) gives the same answer on negated scores
    let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
    let f1d = metrics::best_f1_threshold(&neg, &labels, false).expect("f1");
    close("f1 distance", f1d.f1, 0.8, 1e-15);
    close("threshold distance", f1d.threshold, -0.45, 1e-15);
    // fewer than two distinct scores: no cut, MTEB's initial values
    let acc = metrics::best_accuracy_threshold(&[0.5f64, 0.5], &[true, false], true).expect("acc");
    assert_eq!((acc.accuracy, acc.threshold), (0.0, -1.0));
}

#[test]
fn retrieval_by_hand() {
    let ranked = ["a", "b", "c", "d"];
    let relevant: HashSet<&str> = ["b", "d", "e"].into_iter().collect();
    // DCG@3 = 1/log2(3) (b at rank 2); ideal DCG@3 = 1 + 1/log2(3) + 1/log2(4) (3 relevant, e not retrieved)
    let dcg = 1.0 / 3f64.log2();
    let ndcg = metrics::ndcg_at_k(&ranked, &relevant, 3).expect("ndcg");
    close("ndcg@3", ndcg, dcg / (1.0 + dcg + 0.5), 1e-15);
    close(
        "mrr@1",
        metrics::mrr_at_k(&ranked, &relevant, 1).expect("mrr"),
        0.0,
        0.0,
    );
    close(
        "mrr@3",
        metrics::mrr_at_k(&ranked, &relevant, 3).expect("mrr"),
        0.5,
        0.0,
    );
    close(
        "recall@3",
        metrics::recall_at_k(&ranked, &relevant, 3).expect("r"),
        1.0 / 3.0,
        1e-15,
    );
    close(
        "recall@10",
        metrics::recall_at_k(&ranked, &relevant, 10).expect("r"),
        2.0 / 3.0,
        1e-15,
    );
    // P@10 divides by 10 although only 4 were ranked (trec_eval)
    close(
        "P@10",
        metrics::precision_at_k(&ranked, &relevant, 10).expect("p"),
        0.2,
        1e-15,
    );
    // MAP@4 = (1/2 + 2/4) / 3
    close(
        "map@4",
        metrics::map_at_k(&ranked, &relevant, 4).expect("map"),
        1.0 / 3.0,
        1e-15,
    );
    // ties broken by id descending: "b" before "a" at the same score
    let order = metrics::rank_by_score(&[0.5f32, 0.5, 0.9], &["a", "b", "c"]).expect("rank");
    assert_eq!(order, vec![2, 1, 0]);
}

#[test]
fn classification_conventions() {
    // a constant prediction has no correlation with the truth: MCC 0 (scikit-learn), not an error
    let mcc = metrics::matthews_corrcoef(&[1, 1, 1, 1], &[0, 1, 0, 1]).expect("mcc");
    assert_eq!(mcc, 0.0);
    // macro F1 averages over labels in pred or gold; label 2 (only predicted) scores 0
    // class 0: tp 1, fp 0, fn 1 -> 2/3; class 1: tp 1, fp 0, fn 0 -> 1; class 2: tp 0, fp 1 -> 0
    let f1 = metrics::macro_f1(&[0, 2, 1], &[0, 0, 1]).expect("macro f1");
    close("macro f1", f1, (2.0 / 3.0 + 1.0) / 3.0, 1e-15);
    close(
        "accuracy",
        metrics::accuracy(&[0, 2, 1], &[0, 0, 1]).expect("acc"),
        2.0 / 3.0,
        1e-15,
    );
}

#[test]
fn v_measure_by_hand() {
    // a relabelling is a perfect clustering; one cluster for two classes is complete but not homogeneous
    close(
        "relabelled",
        metrics::v_measure(&[0, 0, 1, 1], &[5, 5, 3, 3]).expect("v"),
        1.0,
        1e-15,
    );
    let one = metrics::homogeneity_completeness_v_measure(&[0, 0, 1, 1], &[0, 0, 0, 0]).expect("v");
    assert_eq!(
        (one.homogeneity, one.completeness, one.v_measure),
        (0.0, 1.0, 0.0)
    );
}

#[test]
fn similarities() {
    close(
        "cosine",
        metrics::cosine(&[1.0, 0.0], &[1.0, 1.0]).expect("cos"),
        0.5f64.sqrt(),
        1e-15,
    );
    assert_eq!(metrics::cosine(&[0.0, 0.0], &[1.0, 1.0]).expect("cos"), 0.0);
    let a = vec![vec![1.0f32, 2.0], vec![0.0, 1.0]];
    let b = vec![vec![2.0f32, 4.0], vec![1.0, 0.0]];
    let cos = metrics::paired_scores(&a, &b, Similarity::Cosine).expect("cos");
    close("paired cos 0", cos[0], 1.0, 1e-15);
    close("paired cos 1", cos[1], 0.0, 1e-15);
    assert_eq!(
        metrics::paired_scores(&a, &b, Similarity::Dot).expect("dot"),
        vec![10.0, 0.0]
    );
    assert_eq!(
        metrics::paired_scores(&a, &b, Similarity::Manhattan).expect("l1"),
        vec![3.0, 2.0]
    );
    let l2 = metrics::paired_scores(&a, &b, Similarity::Euclidean).expect("l2");
    close("euclidean", l2[0], 5f64.sqrt(), 1e-15);
    assert!(!Similarity::Euclidean.higher_is_similar() && Similarity::Dot.higher_is_similar());
}

// ---------------------------------------------------------------------------------------------------------------
// Errors, with exact messages

fn message<T: std::fmt::Debug>(result: compressor_eval::Result<T>) -> String {
    result.expect_err("an error").to_string()
}

#[test]
fn constant_input_is_an_error() {
    assert_eq!(
        message(metrics::spearman(&[1.0f64, 1.0, 1.0], &[1.0f64, 2.0, 3.0])),
        "spearman: `x` is constant (every value is 1), so the metric is undefined"
    );
    assert_eq!(
        message(metrics::pearson(&[1.0f64, 2.0, 3.0], &[0.5f32, 0.5, 0.5])),
        "pearson: `y` is constant (every value is 0.5), so the metric is undefined"
    );
    assert_eq!(
        message(metrics::spearman(&[2.0f64], &[1.0f64])),
        "spearman: `x` has 1 value(s), at least 2 are needed"
    );
}

#[test]
fn empty_input_is_an_error() {
    let empty: [f64; 0] = [];
    assert_eq!(
        message(metrics::spearman(&empty, &empty)),
        "spearman: `x` is empty"
    );
    assert_eq!(
        message(metrics::accuracy(&[], &[])),
        "accuracy: `pred` is empty"
    );
    assert_eq!(
        message(metrics::average_precision(&empty, &[])),
        "average_precision: `scores` is empty"
    );
    assert_eq!(
        message(metrics::v_measure(&[], &[])),
        "v_measure: `labels_true` is empty"
    );
    assert_eq!(
        message(logreg::fit(&[], &[], 2, 1.0, 100)),
        "logreg::fit: `x` is empty"
    );
    assert_eq!(
        message(kmeans::kmeans(&[], &KMeansOptions::new(2))),
        "kmeans: `x` is empty"
    );
}

#[test]
fn length_mismatch_is_an_error() {
    assert_eq!(
        message(metrics::spearman(&[1.0f64, 2.0, 3.0], &[1.0f64, 2.0])),
        "spearman: `x` has 3 values but `y` has 2"
    );
    assert_eq!(
        message(metrics::macro_f1(&[0, 1], &[0, 1, 1])),
        "macro_f1: `pred` has 2 values but `gold` has 3"
    );
    assert_eq!(
        message(metrics::best_f1_threshold(&[0.1f64, 0.2], &[true], true)),
        "best_f1_threshold: `scores` has 2 values but `labels` has 1"
    );
    assert_eq!(
        message(logreg::fit(&[vec![1.0], vec![2.0]], &[0], 2, 1.0, 100)),
        "logreg::fit: `x` has 2 values but `y` has 1"
    );
}

#[test]
fn undefined_and_invalid_inputs_are_errors() {
    assert_eq!(
        message(metrics::pearson(&[1.0f64, 2.0], &[1.0f64, f64::NAN])),
        "pearson: `y` holds a non-finite value (NaN) at index 1"
    );
    assert_eq!(
        message(metrics::average_precision(&[0.1f64, 0.2], &[false, false])),
        "average_precision: `labels` has no positive label, so the metric is undefined"
    );
    assert_eq!(
        message(metrics::best_f1_threshold(
            &[0.1f64, 0.2],
            &[false, false],
            true
        )),
        "best_f1_threshold: `labels` has no positive label, so the metric is undefined"
    );
    assert_eq!(
        message(metrics::f1_binary(&[0, 1], &[1, 0], 3)),
        "f1_binary: the positive label 3 occurs in neither `pred` nor `gold`, so F1 is undefined"
    );
    let relevant: HashSet<&str> = ["a"].into_iter().collect();
    assert_eq!(
        message(metrics::ndcg_at_k(&["a", "b", "a"], &relevant, 3)),
        "ndcg_at_k: `ranked` lists the same document at positions 0 and 2"
    );
    assert_eq!(
        message(metrics::mrr_at_k(&["a"], &relevant, 0)),
        "mrr_at_k: `k` = 0 is invalid: the cutoff must be at least 1"
    );
    assert_eq!(
        message(metrics::recall_at_k(&["a"], &HashSet::new(), 1)),
        "recall_at_k: `relevant` has no positive label, so the metric is undefined"
    );
    assert_eq!(
        message(metrics::paired_scores(
            &[vec![1.0, 2.0]],
            &[vec![1.0]],
            Similarity::Cosine
        )),
        "paired_scores: row 0 of `b` has 1 values, expected 2"
    );
}

#[test]
fn logreg_and_kmeans_input_errors() {
    let x = vec![vec![0.0f32, 1.0], vec![1.0, 0.0], vec![1.0, 1.0]];
    assert_eq!(
        message(logreg::fit(&x, &[0, 1, 1], 3, 1.0, 100)),
        "logreg::fit: class 2 has no training sample (every class in 0..3 needs at least one)"
    );
    assert_eq!(
        message(logreg::fit(&x, &[0, 5, 1], 3, 1.0, 100)),
        "logreg::fit: `y[1]` is 5, but there are only 3 classes (labels 0..3)"
    );
    assert_eq!(
        message(logreg::fit(&x, &[0, 1, 1], 2, 0.0, 100)),
        "logreg::fit: `c` = 0 is invalid: must be a positive finite number"
    );
    let model = logreg::fit(&x, &[0, 1, 1], 2, 1.0, 100).expect("fit");
    assert_eq!(
        message(model.predict(&[vec![1.0]])),
        "logreg::predict: row 0 of `x` has 1 values, expected 2"
    );
    assert_eq!(
        message(kmeans::kmeans(&x, &KMeansOptions::new(4))),
        "kmeans: `n_clusters` = 4 is invalid: must be between 1 and the number of points (3)"
    );
    assert_eq!(
        message(kmeans::mini_batch_kmeans(
            &[vec![1.0, 2.0, 3.0], vec![1.0, 2.0]],
            &MiniBatchOptions::new(1)
        )),
        "mini_batch_kmeans: row 1 of `x` has 2 values, expected 3"
    );
    assert_eq!(
        message(kmeans::kmeans(
            &[vec![f32::INFINITY]],
            &KMeansOptions::new(1)
        )),
        "kmeans: `x` holds a non-finite value (inf) at index 0"
    );
}

// ---------------------------------------------------------------------------------------------------------------
// Determinism and small behaviours

#[test]
fn seeded_runs_are_deterministic() {
    let case = &cases("clustering")[1];
    let x = rows_f32(&case["x"]);
    let options = MiniBatchOptions {
        seed: 7,
        ..MiniBatchOptions::new(6)
    };
    let a = kmeans::mini_batch_kmeans(&x, &options).expect("run");
    let b = kmeans::mini_batch_kmeans(&x, &options).expect("run");
    assert_eq!(a, b);
    let a = kmeans::kmeans(
        &x,
        &KMeansOptions {
            n_init: 3,
            seed: 3,
            ..KMeansOptions::new(6)
        },
    )
    .expect("run");
    let b = kmeans::kmeans(
        &x,
        &KMeansOptions {
            n_init: 3,
            seed: 3,
            ..KMeansOptions::new(6)
        },
    )
    .expect("run");
    assert_eq!(a, b);

    let labels: Vec<usize> = (0..40).map(|i| i % 3).collect();
    let picked = logreg::undersample(&labels, 4, &mut Rng::new(1));
    assert_eq!(picked, logreg::undersample(&labels, 4, &mut Rng::new(1)));
    assert_eq!(picked.len(), 12);
    for class in 0..3 {
        assert_eq!(picked.iter().filter(|&&i| labels[i] == class).count(), 4);
    }
}

#[test]
fn kmeans_handles_duplicates_and_k_equal_n() {
    // all points equal: every cluster gets a point, nothing is NaN
    let same = vec![vec![1.0f32, 1.0]; 5];
    let c = kmeans::kmeans(&same, &KMeansOptions::new(3)).expect("kmeans");
    assert!(c.centers.iter().flatten().all(|v| v.is_finite()));
    assert_eq!(c.inertia, 0.0);
    // k = n: each point its own cluster
    let x = vec![vec![0.0f32], vec![10.0], vec![20.0]];
    let c = kmeans::kmeans(&x, &KMeansOptions::new(3)).expect("kmeans");
    assert_eq!(c.inertia, 0.0);
    let mut labels = c.labels.clone();
    labels.sort_unstable();
    assert_eq!(labels, vec![0, 1, 2]);
    let mb = kmeans::mini_batch_kmeans(&same, &MiniBatchOptions::new(2)).expect("mini-batch");
    assert!(mb.centers.iter().flatten().all(|v| v.is_finite()));
}

#[test]
fn rng_is_uniform_enough() {
    let mut rng = Rng::new(42);
    let mut counts = [0usize; 6];
    for _ in 0..60_000 {
        counts[rng.below(6)] += 1;
    }
    assert!(
        counts.iter().all(|&c| (9_500..10_500).contains(&c)),
        "{counts:?}"
    );
    let mean = (0..10_000).map(|_| rng.next_f64()).sum::<f64>() / 10_000.0;
    assert!((mean - 0.5).abs() < 0.01);
}
