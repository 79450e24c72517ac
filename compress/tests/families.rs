//! Every pass on every encoder family, end to end through the binary, on the committed tiny RoBERTa, XLM-RoBERTa,
//! DistilBERT and MPNet fixtures (models/tests/fixtures/tiny-*): vocab-trim, blockwise-quant (data-free and BCT),
//! prune, hessian-mp, qa-svd, fisher-prune and cast. Each plan's byte estimate is its artifact's (hessian-mp's is
//! its budget), the artifacts embed close to the original, the pruned one exports to a plain dense checkpoint that
//! computes the same, every family exports to ONNX, and GGUF and remote-code refuse the non-BERT families with the
//! reason.

mod common;

use common::{compressor_in, embeddings, max_diff, ok, stderr};

const FAMILIES: [(&str, &str); 4] = [
    ("tiny-roberta", "RoBERTa"),
    ("tiny-xlm-roberta", "XLM-RoBERTa"),
    ("tiny-distilbert", "DistilBERT"),
    ("tiny-mpnet", "MPNet"),
];

use common::fixture_workspace as workspace;

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn vocabulary_trimming_and_quantization_run_on_every_family() {
    for (fixture, family) in FAMILIES {
        // A trimmed vocabulary embeds the corpus's own texts exactly as before.
        let tmp = workspace(
            fixture,
            "[[pass]]\nkind = \"vocab-trim\"\ncorpus = [\"texts.jsonl\"]\nmin-frequency = 1\n",
        );
        let dir = tmp.path();
        common::run_matching_the_plan(dir);
        let before = embeddings(dir, "model");
        let d = max_diff(&before, &embeddings(dir, "out"));
        assert!(d < 1e-6, "{family}: trimming moved the embeddings by {d}");
        let vocab = |folder: &str| -> Option<u64> {
            let path = dir.join(folder).join("config.json");
            let config: serde_json::Value =
                serde_json::from_slice(&std::fs::read(path).expect("config")).expect("json");
            config["vocab_size"].as_u64()
        };
        assert!(
            vocab("out") < vocab("model"),
            "{family}: the vocabulary shrinks"
        );

        let tmp = workspace(
            fixture,
            "[[pass]]\nkind = \"blockwise-quant\"\nbits = 8\ngroup-size = 16\n",
        );
        let dir = tmp.path();
        common::run_matching_the_plan(dir);
        for (a, b) in before.iter().zip(&embeddings(dir, "out")) {
            let c = cosine(a, b);
            assert!(c > 0.999, "{family}: cosine {c} at 8 bits");
        }
        // The ONNX graph runs every family (checked against our runtime by scripts/check_onnx.py); GGUF is
        // llama.cpp's `bert` graph only.
        ok(&compressor_in(
            dir,
            &["export", "out", "--format", "onnx", "--output", "x.onnx"],
        ));
        assert!(dir.join("x.onnx/onnx/model.onnx").is_file(), "{family}");
        let o = compressor_in(
            dir,
            &["export", "out", "--format", "gguf", "--output", "x.gguf"],
        );
        assert_ne!(o.status.code(), Some(0), "{family} gguf");
        let reason =
            format!("it is a {family} model; compressor writes llama.cpp's `bert` graph only");
        assert!(stderr(&o).contains(&reason), "{family}: {}", stderr(&o));
        assert!(
            !dir.join("x.gguf").exists(),
            "{family} gguf: nothing written"
        );
    }
}

#[test]
fn pruning_runs_on_every_family_and_exports_dense() {
    for (fixture, family) in FAMILIES {
        let tmp = workspace(
            fixture,
            "[[pass]]\nkind = \"prune\"\ntarget = 0.3\nallocation = \"per-layer\"\n",
        );
        let dir = tmp.path();
        common::run_matching_the_plan(dir);
        let config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("out/config.json")).expect("config"))
                .expect("json");
        assert_eq!(config["compressor"]["version"], 1, "{family}");
        let pruned = embeddings(dir, "out");
        ok(&compressor_in(dir, &["export", "out", "--output", "dense"]));
        let dense = embeddings(dir, "dense");
        let d = max_diff(&pruned, &dense);
        assert!(d < 1e-5, "{family}: dense export differs by {d}");
        let o = compressor_in(
            dir,
            &[
                "export",
                "out",
                "--format",
                "remote-code",
                "--output",
                "remote",
            ],
        );
        assert!(
            stderr(&o).contains(&format!(
                "the remote-code export runs BERT layers; this is a {family} model"
            )),
            "{family}: {}",
            stderr(&o)
        );
    }
}

#[test]
fn calibrated_passes_run_on_every_family() {
    let calibration = "[calibration]\ndata = \"texts.jsonl\"\nsamples = 3\nmax-length = 32\n\n";
    // (pass, whether its plan knows the artifact's bytes: a budgeted allocation is only bounded by its budget)
    let passes = [
        ("[[pass]]\nkind = \"blockwise-quant\"\nbits = 4\ngroup-size = 16\nembeddings = { word = 8, position = 8 }\nactivations = { bits = 8, block-size = 16 }\n", true),
        ("[[pass]]\nkind = \"hessian-mp\"\nbits = [4, 8]\naverage-bits = 6.0\ngroup-size = 16\nsensitivity = { runs = 1, max-iterations = 3, batch-size = 3, seed = 0 }\n", false),
        ("[[pass]]\nkind = \"qa-svd\"\nrate = 0.25\ndamping = 0.01\n", true),
    ];
    for (fixture, family) in FAMILIES {
        for (pass, exact_plan) in passes {
            let tmp = workspace(fixture, &format!("{calibration}{pass}"));
            let dir = tmp.path();
            if exact_plan {
                common::run_matching_the_plan(dir);
            } else {
                ok(&compressor_in(dir, &["run", "pipeline.toml"]));
            }
            let before = embeddings(dir, "model");
            for (a, b) in before.iter().zip(&embeddings(dir, "out")) {
                let c = cosine(a, b);
                assert!(c > 0.8, "{family}: cosine {c} after\n{pass}");
            }
        }
    }
}

#[test]
fn fisher_pruning_and_casting_run_on_every_family() {
    let triplets = "{\"query\": \"the cat\", \"positive\": \"the cat sat on the mat\", \"negative\": \"a bad film\"}\n{\"query\": \"a good movie\", \"positive\": \"i love this film\", \"negative\": \"the dog ran\"}\n";
    let passes = [
        "[[pass]]\nkind = \"fisher-prune\"\ntarget = 0.5\ntriplets = 2\nmicro-batch = 2\nmax-length = 32\n\n[pass.general]\ndata = \"triplets.jsonl\"\nformat = \"triplets\"\n\n[pass.domain]\ndata = \"triplets.jsonl\"\nformat = \"triplets\"\n",
        "[[pass]]\nkind = \"cast\"\ndtype = \"f16\"\n",
    ];
    for (fixture, family) in FAMILIES {
        for pass in passes {
            let tmp = workspace(fixture, pass);
            let dir = tmp.path();
            std::fs::write(dir.join("triplets.jsonl"), triplets).expect("write");
            common::run_matching_the_plan(dir);
            let before = embeddings(dir, "model");
            for (a, b) in before.iter().zip(&embeddings(dir, "out")) {
                let c = cosine(a, b);
                assert!(c > 0.8, "{family}: cosine {c} after\n{pass}");
            }
        }
    }
}

#[test]
fn the_one_line_commands_write_pipelines_every_family_can_run() {
    for (fixture, family) in FAMILIES {
        let tmp = workspace(fixture, "");
        let dir = tmp.path();
        // `init` writes 4-bit embeddings of the tables the family has (MPNet and DistilBERT have no token types).
        ok(&compressor_in(
            dir,
            &["init", "model", "--output", "init.toml"],
        ));
        ok(&compressor_in(dir, &["plan", "init.toml"]));
        ok(&compressor_in(
            dir,
            &[
                "quantize",
                "model",
                "--bits",
                "4",
                "--group-size",
                "16",
                "--embeddings",
                "4",
                "--output",
                "q",
            ],
        ));
        assert!(dir.join("q/model.safetensors").is_file(), "{family}");
        let inspect = ok(&compressor_in(dir, &["inspect", "model"]));
        let types = if matches!(family, "MPNet" | "DistilBERT") {
            "no token types"
        } else {
            "52 positions, 1 token type\n"
        };
        assert!(inspect.contains(types), "{family}: {inspect}");
    }
}

#[test]
fn quantization_aware_training_fine_tunes_each_familys_classifier_head() {
    // The sha256 of every tensor is in the manifests: QAT changes the head's Linears by the family's names.
    let labelled = "{\"text\": \"the cat sat on the mat\", \"label\": 0}\n{\"text\": \"a good movie\", \"label\": 2}\n{\"text\": \"i hate this film\", \"label\": 1}\n";
    let pass = "[calibration]\ndata = \"labelled.jsonl\"\nsamples = 3\nmax-length = 32\n\n[[pass]]\nkind = \"hessian-mp\"\nbits = [8]\naverage-bits = 8.0\ngroup-size = 16\nsensitivity = { runs = 1, max-iterations = 2, batch-size = 3, seed = 0 }\nqat = { steps = 2, lr = 1e-2, batch-size = 3 }\n";
    for (fixture, heads) in [
        (
            "tiny-roberta-cls",
            ["classifier.dense.weight", "classifier.out_proj.weight"],
        ),
        (
            "tiny-distilbert-cls",
            ["pre_classifier.weight", "classifier.weight"],
        ),
        (
            "tiny-mpnet-cls",
            ["classifier.dense.weight", "classifier.out_proj.weight"],
        ),
    ] {
        let tmp = workspace(fixture, pass);
        let dir = tmp.path();
        std::fs::write(dir.join("labelled.jsonl"), labelled).expect("write");
        ok(&compressor_in(dir, &["run", "pipeline.toml"]));
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("out/manifest.json")).expect("manifest"),
        )
        .expect("json");
        let sha = |name: &str| {
            manifest["output"]["tensors"]
                .as_array()
                .expect("tensors")
                .iter()
                .find(|t| t["name"] == name)
                .map(|t| t["sha256"].clone())
        };
        let ckpt = compressor_models::Checkpoint::open(&dir.join("model")).expect("open");
        for head in heads {
            let before = ckpt.store.get(head).expect("head tensor");
            let after = compressor_models::Checkpoint::open(&dir.join("out"))
                .expect("open")
                .store
                .get(head)
                .expect("head tensor");
            assert!(sha(head).is_some(), "{fixture}: {head} is written");
            assert_ne!(
                before.to_f32(head).expect("f32"),
                after.to_f32(head).expect("f32"),
                "{fixture}: QAT trains {head}"
            );
        }
    }
}
