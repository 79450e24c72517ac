//! `qa-svd` end to end on the tiny BERT fixture (4 heads of 8, FFN 64, 2 layers): rate 0 (sorted, full-rank QSVD,
//! value bias folded) computes what the original computes; a cut keeps the first channels of the sorted model
//! (sort-then-cut is pruning by score); the plan's bytes are the artifact's; the dense export computes what the
//! artifact computes; bad settings are errors naming the key.

mod common;

use std::path::Path;

use common::{compressor_in, copy_dir, embeddings, max_diff, ok};
use compressor_models::Checkpoint;

const TEXTS: [&str; 8] = [
    "the cat sat on the mat",
    "a good movie",
    "i hate this film, it was not very good",
    "the dog and the cat were good friends",
    "a great film, very good and very long",
    "this movie was the worst film i have seen",
    "good good good",
    "the mat was on the dog",
];

fn workspace(pass: &str, calibration: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().expect("tmp");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models/tests/fixtures/tiny-bert");
    copy_dir(&fixture, &tmp.path().join("model"));
    let lines: String = TEXTS
        .iter()
        .map(|t| format!("{}\n", serde_json::json!({ "text": t })))
        .collect();
    std::fs::write(tmp.path().join("texts.jsonl"), lines).expect("write");
    let calibration = if calibration {
        "[calibration]\ndata = \"texts.jsonl\"\nmax-length = 32\n\n"
    } else {
        ""
    };
    std::fs::write(
        tmp.path().join("pipeline.toml"),
        format!("[model]\npath = \"model\"\n\n{calibration}[[pass]]\nkind = \"qa-svd\"\n{pass}\n\n[output]\ndir = \"out\"\n"),
    )
    .expect("write");
    tmp
}

fn tensor(dir: &Path, name: &str) -> (Vec<usize>, Vec<f32>) {
    let ckpt = Checkpoint::open(dir).expect("opens");
    let shape = ckpt.store.info(name).expect("tensor").1;
    let v = ckpt.store.get_f32(name, &shape).expect("values");
    (shape, v)
}

#[test]
fn rate_zero_reproduces_the_model_and_a_cut_keeps_the_first_sorted_channels() {
    let full = workspace(
        "rate = 0.0\nelastic-rates = [0.4]\nhead-multiple = 2\nffn-multiple = 8",
        true,
    );
    ok(&compressor_in(full.path(), &["run", "pipeline.toml"]));
    let original = embeddings(full.path(), "model");
    let sorted = embeddings(full.path(), "out");
    let diff = max_diff(&original, &sorted);
    assert!(diff <= 1e-5, "rate 0 moved the embeddings by {diff}");
    // The value bias is folded into the output bias.
    let (_, bv) = tensor(
        &full.path().join("out"),
        "encoder.layer.0.attention.self.value.bias",
    );
    assert!(bv.iter().all(|&v| v == 0.0));

    let cut = workspace("rate = 0.4\nhead-multiple = 2\nffn-multiple = 8", true);
    let dir = cut.path();
    common::run_matching_the_plan(dir);
    let config = Checkpoint::open(&dir.join("out")).expect("artifact").config;
    let layers = &config.bert().layers;
    assert!(layers
        .iter()
        .any(|l| l.intermediate_size < 64 && l.qk_head_dim < 8 && l.vo_head_dim < 8));

    // Sort-then-cut: every tensor of the cut model is the leading part of the sorted full-width one.
    let (a, b) = (full.path().join("out"), dir.join("out"));
    for (l, s) in layers.iter().enumerate() {
        let p = |m: &str| format!("encoder.layer.{l}.{m}");
        let (k, (dq, dv)) = (s.intermediate_size, (s.qk_head_dim, s.vo_head_dim));
        let close = |x: &[f32], y: &[f32], what: &str| {
            assert_eq!(x.len(), y.len(), "{what}");
            let d = x
                .iter()
                .zip(y)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0, f32::max);
            assert!(d <= 1e-6, "{what}: {d}");
        };
        // Rows: FFN neurons, then each head's first dq (query/key) or dv (value) rows.
        let rows = |name: &str, per: usize, width: usize, keep: usize| {
            let (_, x) = tensor(&a, &p(name));
            let (_, y) = tensor(&b, &p(name));
            let groups = x.len() / (per * width);
            let lead: Vec<f32> = (0..groups)
                .flat_map(|g| x[g * per * width..(g * per + keep) * width].iter().copied())
                .collect();
            close(&lead, &y, name);
        };
        rows("intermediate.dense.weight", 64, 32, k);
        rows("attention.self.query.weight", 8, 32, dq);
        rows("attention.self.key.weight", 8, 32, dq);
        rows("attention.self.value.weight", 8, 32, dv);
        let (_, x) = tensor(&a, &p("attention.output.dense.weight"));
        let (_, y) = tensor(&b, &p("attention.output.dense.weight"));
        let lead: Vec<f32> = x
            .chunks(32)
            .flat_map(|row| (0..4).flat_map(move |j| row[j * 8..j * 8 + dv].iter().copied()))
            .collect();
        close(&lead, &y, "attention.output.dense.weight");
        close(
            &tensor(&a, &p("attention.output.dense.bias")).1,
            &tensor(&b, &p("attention.output.dense.bias")).1,
            "attention.output.dense.bias",
        );
    }

    // The elastic artifact cut at 0.4 (no recomputation) is the model qa-svd makes at 0.4.
    ok(&compressor_in(
        full.path(),
        &[
            "export",
            "out",
            "--rate",
            "0.4",
            "--format",
            "remote-code",
            "--output",
            "cut",
        ],
    ));
    let exported = Checkpoint::open(&full.path().join("cut")).expect("cut");
    let direct = Checkpoint::open(&b).expect("direct");
    assert_eq!(exported.config.bert().layers, direct.config.bert().layers);
    for name in direct.store.names() {
        let (x, y) = (tensor(&full.path().join("cut"), name), tensor(&b, name));
        assert_eq!(x.0, y.0, "{name}");
        let d =
            x.1.iter()
                .zip(&y.1)
                .map(|(u, v)| (u - v).abs())
                .fold(0.0, f32::max);
        assert!(d <= 1e-6, "{name}: {d}");
    }
    let o = compressor_in(
        full.path(),
        &["export", "out", "--rate", "0.3", "--output", "x"],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(
        common::stderr(&o)
            .contains("key `compressor.elastic` has no rate 0.3: the model can be cut at 0.4"),
        "{}",
        common::stderr(&o)
    );
    let o = compressor_in(dir, &["export", "out", "--rate", "0.4", "--output", "x"]);
    assert!(
        common::stderr(&o)
            .contains("key `compressor.elastic` is missing: the model holds no elastic rates"),
        "{}",
        common::stderr(&o)
    );

    // The dense export (zero-padded widths) computes what the artifact computes.
    ok(&compressor_in(
        dir,
        &["export", "out", "--format", "dense", "--output", "dense"],
    ));
    let diff = max_diff(&embeddings(dir, "out"), &embeddings(dir, "dense"));
    assert!(diff <= 1e-5, "dense export differs by {diff}");
}

#[test]
fn bad_settings_are_errors_naming_the_key() {
    let error = |pass: &str, calibration: bool| {
        let tmp = workspace(pass, calibration);
        let o = compressor_in(tmp.path(), &["plan", "pipeline.toml"]);
        assert_eq!(o.status.code(), Some(2), "{}", common::stderr(&o));
        common::stderr(&o)
    };
    let plan_error = |problem: &str| {
        format!("error: cannot plan pipeline `pipeline.toml`\n\nCaused by:\n  `pass[0]` (`qa-svd`): {problem}\n")
    };
    assert_eq!(
        error("rate = 0.9", true),
        plan_error("`rate`: is 0.9, expected a fraction in [0, 0.85]")
    );
    assert!(error("rate = 0.2", false).contains("[calibration]"));
    // Fewer real tokens than the hidden size (32): no full-rank second moment.
    let tmp = workspace("rate = 0.2", true);
    std::fs::write(
        tmp.path().join("texts.jsonl"),
        "{\"text\": \"a good movie\"}\n",
    )
    .expect("write");
    let o = compressor_in(tmp.path(), &["plan", "pipeline.toml"]);
    assert_eq!(
        common::stderr(&o),
        plan_error("`calibration`: gives 5 real tokens; a full-rank second moment of the 32-wide attention input needs at least 32\n\nhint: add records or raise `max-length` in [calibration], or set `damping` (e.g. 0.01) in the qa-svd pass")
    );
    // A pass that reads the checkpoint's own weights cannot follow qa-svd, even when the shapes stay (rate 0 sorts
    // and rotates every Linear).
    for (next, kind) in [
        ("kind = \"prune\"\ntarget = 0.1", "prune"),
        (
            "kind = \"fisher-prune\"\ntarget = 0.5\nscore = \"magnitude\"",
            "fisher-prune",
        ),
    ] {
        let err = error(&format!("rate = 0.0\n\n[[pass]]\n{next}"), true);
        assert!(
            err.contains(&format!("`pass[1]` (`{kind}`)")) && err.contains("earlier pass"),
            "{err}"
        );
    }
    // Damping makes it usable.
    std::fs::write(
        tmp.path().join("pipeline.toml"),
        std::fs::read_to_string(tmp.path().join("pipeline.toml"))
            .expect("read")
            .replace("rate = 0.2", "rate = 0.2\ndamping = 0.01"),
    )
    .expect("write");
    ok(&compressor_in(tmp.path(), &["plan", "pipeline.toml"]));
}
