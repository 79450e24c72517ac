//! The `vocab-trim` pass: round trips for WordPiece (all-MiniLM-L6-v2's tokenizer), Unigram (XLM-R's, from
//! multilingual-e5-small) and BPE (byte-level, trained here), each paired with a tiny seeded BERT of that vocabulary
//! size; and every bad input with its exact message.
//!
//! The correctness bar: for every text whose tokens the trimming kept, the trimmed tokenizer's ids are the old ids
//! mapped through `old_ids`, and the trimmed embedding rows equal the original rows (max abs diff <= 1e-6).
//! The real-tokenizer cases skip with a notice when the MiniLM model (scripts/fetch-minilm.sh), ../shared/data or
//! the XLM-R tokenizer (scripts/fetch-xlmr-tokenizer.sh, run on first use) are absent.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use compressor_calibration::read_texts;
use compressor_calibration::testing::{shared, tiny_wordpiece, workspace_root as root};
use compressor_models::testing::TinyBert;
use compressor_models::{Checkpoint, TensorStore};
use compressor_passes::vocab_trim::{read_old_ids, VocabTrim, VOCAB_MAP_FILE};
use compressor_passes::{
    ModelInfo, NoProgress, Pass, PassContext, PassReport, PlanContext, SideFiles,
};
use serde_json::{json, Value};
use tokenizers::Tokenizer;

const EMBEDDING: &str = "embeddings.word_embeddings.weight";

/// A tiny seeded BERT with `vocab` rows and the given tokenizer.json in `dir`.
fn model_with_tokenizer(dir: &Path, vocab: usize, tokenizer: &[u8]) {
    TinyBert {
        vocab_size: vocab,
        hidden_size: 8,
        intermediate_size: 16,
        max_positions: 16,
        seed: 3,
        ..TinyBert::default()
    }
    .write(dir)
    .expect("write tiny model");
    std::fs::write(dir.join("tokenizer.json"), tokenizer).expect("write tokenizer");
}

fn pass(config: Value, cache: &Path) -> VocabTrim {
    let config = serde_json::from_value(config).expect("valid config");
    VocabTrim::new(config).with_cache_dir(Some(cache.to_path_buf()))
}

/// Plan and run `pass` on the model in `dir`: (original store, trimmed checkpoint, side files, report).
fn run(
    dir: &Path,
    pass: &VocabTrim,
) -> compressor_passes::Result<(TensorStore, Checkpoint, SideFiles, PassReport)> {
    let original = Checkpoint::open(dir)?;
    let mut ckpt = Checkpoint::open(dir)?;
    let info = ModelInfo::from_store(&ckpt.config, &ckpt.store);
    let plan = pass.plan(&PlanContext {
        config: &ckpt.config,
        info: &info,
        store: &ckpt.store,
        model_dir: dir,
        calibration: None,
        progress: &compressor_passes::NoProgress,
    })?;
    let mut files = SideFiles::new(dir);
    let report = pass.run(&mut PassContext {
        config: &mut ckpt.config,
        store: &mut ckpt.store,
        files: &mut files,
        calibration: None,
        plan: &plan,
        progress: &NoProgress,
        seed: 0,
    })?;
    ckpt.store.check(&ckpt.config)?;
    Ok((original.store, ckpt, files, report))
}

fn plain(bytes: &[u8]) -> Tokenizer {
    let mut t = Tokenizer::from_bytes(bytes).expect("tokenizer loads");
    t.with_padding(None);
    t.with_truncation(None).expect("no truncation");
    t
}

/// The sentences of `paragraphs` (split after ". ").
fn sentences(paragraphs: &[String]) -> Vec<String> {
    paragraphs
        .iter()
        .flat_map(|p| p.split(". ").map(str::to_string))
        .collect()
}

/// Check the correctness bar on `texts`; returns how many texts had all their tokens kept.
fn check_round_trip(
    dir: &Path,
    original: &TensorStore,
    trimmed: &Checkpoint,
    files: &SideFiles,
    texts: &[String],
) -> usize {
    let old_tok = plain(&std::fs::read(dir.join("tokenizer.json")).expect("read"));
    let new_tok = plain(
        &files
            .read("tokenizer.json")
            .expect("read")
            .expect("rewritten"),
    );
    let map = files
        .read(VOCAB_MAP_FILE)
        .expect("read")
        .expect("id map written");
    let old_ids = read_old_ids(Path::new(VOCAB_MAP_FILE), &map).expect("id map parses");
    assert!(
        old_ids.windows(2).all(|w| w[0] < w[1]),
        "old_ids sorted and distinct"
    );
    assert_eq!(new_tok.get_vocab_size(true), old_ids.len());
    assert_eq!(trimmed.config.raw["vocab_size"], json!(old_ids.len()));
    let kept: HashSet<u32> = old_ids.iter().map(|&i| i as u32).collect();

    let mut covered = 0;
    for text in texts {
        let before = old_tok.encode(text.as_str(), true).expect("encode");
        if !before.get_ids().iter().all(|id| kept.contains(id)) {
            continue;
        }
        covered += 1;
        let after = new_tok.encode(text.as_str(), true).expect("encode");
        let mapped: Vec<u32> = after
            .get_ids()
            .iter()
            .map(|&i| old_ids[i as usize] as u32)
            .collect();
        assert_eq!(mapped, before.get_ids(), "text {text:?}");
    }

    let hidden = trimmed.config.bert().hidden_size;
    let rows_before = original.info(EMBEDDING).expect("embedding").1[0];
    let e0 = original
        .get_f32(EMBEDDING, &[rows_before, hidden])
        .expect("read");
    let e1 = trimmed
        .store
        .get_f32(EMBEDDING, &[old_ids.len(), hidden])
        .expect("read");
    let mut max_diff = 0f32;
    for (new, &old) in old_ids.iter().enumerate() {
        for j in 0..hidden {
            max_diff = max_diff.max((e1[new * hidden + j] - e0[old as usize * hidden + j]).abs());
        }
    }
    assert!(max_diff <= 1e-6, "embedding rows differ by {max_diff}");
    covered
}

#[test]
fn wordpiece_round_trip_on_minilm_tokenizer() {
    let minilm = root().join(".cache/models/all-MiniLM-L6-v2/tokenizer.json");
    let (Some(wiki), Some(sts)) = (
        shared("data/calibration-wiki/en.jsonl"),
        shared("data/sts-b/test.jsonl"),
    ) else {
        return;
    };
    if !minilm.is_file() {
        eprintln!(
            "SKIPPED: {} is absent (run scripts/fetch-minilm.sh)",
            minilm.display()
        );
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("model");
    model_with_tokenizer(&dir, 30522, &std::fs::read(&minilm).expect("read"));
    std::fs::copy(
        minilm.with_file_name("tokenizer_config.json"),
        dir.join("tokenizer_config.json"),
    )
    .expect("copy");
    std::fs::copy(minilm.with_file_name("vocab.txt"), dir.join("vocab.txt")).expect("copy");
    let p = pass(
        json!({"corpus": [wiki], "min-frequency": 2}),
        &tmp.path().join("cache"),
    );
    let (original, trimmed, files, report) = run(&dir, &p).expect("trims");
    let kept = report.metrics["vocab_after"].as_u64().expect("count") as usize;
    assert!(kept > 5_000 && kept < 20_000, "kept {kept}");
    assert_eq!(
        report.decisions["kept_specials"],
        json!(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    );
    // vocab.txt is the new vocabulary in id order.
    let vocab_txt = String::from_utf8(files.read("vocab.txt").expect("read").expect("rewritten"))
        .expect("utf8");
    assert_eq!(vocab_txt.lines().count(), kept);
    assert_eq!(vocab_txt.lines().take(1).collect::<Vec<_>>(), ["[PAD]"]);

    let mut texts = sentences(&read_texts(&wiki, "text", Some(300)).expect("wiki"));
    texts.extend(read_texts(&sts, "sentence1", None).expect("sts"));
    let covered = check_round_trip(&dir, &original, &trimmed, &files, &texts);
    eprintln!("{covered} of {} texts fully kept", texts.len());
    assert!(covered > 1000, "only {covered} texts fully kept");

    // The second run reads the counts from the cache and gives the same report.
    let (_, _, files2, report2) = run(&dir, &p).expect("trims again");
    assert_eq!(report2.metrics["counts_cached"], json!(true));
    assert_eq!(
        report2.metrics["vocab_after"],
        report.metrics["vocab_after"]
    );
    assert_eq!(files2.changed(), files.changed());
}

/// The XLM-R tokenizer, fetched on first use.
fn xlmr_tokenizer() -> Option<PathBuf> {
    let path = root().join(".cache/tokenizers/multilingual-e5-small/tokenizer.json");
    if !path.is_file() {
        let status =
            std::process::Command::new(root().join("scripts/fetch-xlmr-tokenizer.sh")).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "SKIPPED: {} is absent and scripts/fetch-xlmr-tokenizer.sh failed",
                path.display()
            );
            return None;
        }
    }
    Some(path)
}

#[test]
fn unigram_round_trip_on_xlmr_tokenizer() {
    let (Some(tok), Some(wiki)) = (xlmr_tokenizer(), shared("data/calibration-wiki/en.jsonl"))
    else {
        return;
    };
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("model");
    model_with_tokenizer(&dir, 250_002, &std::fs::read(&tok).expect("read"));
    // A corpus file of the first 500 paragraphs, so the test stays fast.
    let corpus = tmp.path().join("en.txt");
    let texts = read_texts(&wiki, "text", Some(500)).expect("wiki");
    std::fs::write(&corpus, texts.join("\n")).expect("write");
    let p = pass(
        json!({"corpus": corpus, "keep-alphabet": false, "keep": ["▁Paris"]}),
        &tmp.path().join("cache"),
    );
    let (original, trimmed, files, report) = run(&dir, &p).expect("trims");
    let kept = report.metrics["vocab_after"].as_u64().expect("count");
    assert!(kept > 3_000 && kept < 15_000, "kept {kept}");
    let tokenizer: Value =
        serde_json::from_slice(&files.read("tokenizer.json").expect("read").expect("set"))
            .expect("json");
    assert_eq!(tokenizer["model"]["unk_id"], json!(3));
    assert_eq!(tokenizer["added_tokens"][4]["content"], json!("<mask>"));
    assert_eq!(tokenizer["added_tokens"][4]["id"], json!(kept - 1));
    assert_eq!(trimmed.config.raw["pad_token_id"], json!(0));

    let mut check = sentences(&read_texts(&wiki, "text", Some(800)).expect("wiki"));
    check.push("Paris est la capitale de la France.".into());
    let covered = check_round_trip(&dir, &original, &trimmed, &files, &check);
    eprintln!("{covered} of {} texts fully kept", check.len());
    assert!(covered >= 800, "only {covered} texts fully kept");
}

#[test]
fn bpe_round_trip_on_a_byte_level_tokenizer_trained_here() {
    use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
    use tokenizers::models::TrainerWrapper;
    use tokenizers::pre_tokenizers::byte_level::ByteLevel;
    use tokenizers::processors::template::TemplateProcessing;
    use tokenizers::AddedToken;

    let Some(sst2) = shared("data/sst2/train.jsonl") else {
        return;
    };
    let texts = read_texts(&sst2, "sentence", Some(3000)).expect("sst2");
    let specials = ["<s>", "<pad>", "</s>", "<unk>"];
    let mut trainer: TrainerWrapper = BpeTrainerBuilder::new()
        .vocab_size(2000)
        .min_frequency(2)
        .show_progress(false)
        .special_tokens(
            specials
                .iter()
                .map(|s| AddedToken::from(*s, true))
                .collect(),
        )
        .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
        .build()
        .into();
    let mut tok = Tokenizer::new(BPE::default());
    tok.with_pre_tokenizer(Some(ByteLevel::default()));
    tok.with_decoder(Some(ByteLevel::default()));
    tok.train(&mut trainer, texts.iter()).expect("trains");
    tok.with_post_processor(Some(
        TemplateProcessing::builder()
            .try_single("<s> $A </s>")
            .expect("template")
            .special_tokens(vec![("<s>", 0), ("</s>", 2)])
            .build()
            .expect("template"),
    ));
    let json = tok.to_string(false).expect("serializes");
    let vocab = tok.get_vocab_size(true);

    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path().join("model");
    model_with_tokenizer(&dir, vocab, json.as_bytes());
    let corpus = tmp.path().join("corpus.txt");
    std::fs::write(&corpus, texts[..1000].join("\n")).expect("write");
    let p = pass(
        json!({"corpus": corpus, "keep-alphabet": false, "min-frequency": 3}),
        &tmp.path().join("cache"),
    );
    let (original, trimmed, files, report) = run(&dir, &p).expect("trims");
    let kept = report.metrics["vocab_after"].as_u64().expect("count") as usize;
    assert!(kept < vocab && kept > 300, "kept {kept} of {vocab}");
    // Merge results bring their parts, and the 256 byte-level symbols stay.
    assert!(
        report.metrics["kept_as_merge_parts"]
            .as_u64()
            .expect("count")
            > 0
    );
    assert_eq!(report.metrics["always_kept"], json!(4 + 256));
    let covered = check_round_trip(&dir, &original, &trimmed, &files, &texts);
    eprintln!("{covered} of {} texts fully kept", texts.len());
    assert!(covered > 500, "only {covered} texts fully kept");
}

/// A tiny model with the 64-token WordPiece tokenizer, a corpus file and a cache folder.
struct Tiny {
    tmp: tempfile::TempDir,
}

impl Tiny {
    fn new(corpus: &str) -> Self {
        let tmp = tempfile::tempdir().expect("tmp");
        model_with_tokenizer(
            &tmp.path().join("model"),
            64,
            tiny_wordpiece().to_string().as_bytes(),
        );
        std::fs::write(tmp.path().join("corpus.jsonl"), corpus).expect("write");
        Self { tmp }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.tmp.path().join(rel)
    }

    fn run(
        &self,
        config: Value,
    ) -> compressor_passes::Result<(TensorStore, Checkpoint, SideFiles, PassReport)> {
        run(&self.path("model"), &pass(config, &self.path("cache")))
    }

    fn error(&self, config: Value) -> String {
        match self.run(config) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }
}

const TINY_CORPUS: &str = "{\"text\": \"The cat sat on the mat.\"}\n{\"text\": \"The dog sat on the mat and the cat ran.\"}\n";

#[test]
fn tiny_trim_keeps_specials_frequent_tokens_and_the_keep_list() {
    let t = Tiny::new(TINY_CORPUS);
    let (original, trimmed, files, report) = t
        .run(json!({"corpus": t.path("corpus.jsonl"), "keep-alphabet": false, "keep": ["park", "zebra", "moon"]}))
        .expect("trims");
    // Specials (5) + the, cat, sat, on, mat, . is [UNK] (no "." token) + keep "park".
    let tokenizer: Value =
        serde_json::from_slice(&files.read("tokenizer.json").expect("read").expect("set"))
            .expect("json");
    let vocab: Vec<&str> = tokenizer["model"]["vocab"]
        .as_object()
        .expect("map")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        vocab,
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "park"]
    );
    assert_eq!(
        report.warnings,
        ["2 keep-list token(s) are not in the vocabulary and were ignored: `moon`, `zebra`"]
    );
    assert_eq!(report.metrics["vocab_before"], json!(64));
    assert_eq!(report.metrics["vocab_after"], json!(11));
    assert_eq!(report.metrics["parameters_saved"], json!(53 * 8));
    assert_eq!(report.metrics["bytes_saved"], json!(53 * 8 * 4));
    assert_eq!(report.metrics["corpus_tokens"], json!(18));
    // 15 of 18 tokens kept: "dog", "and" and "ran" occur once; "." is [UNK] (kept).
    assert!((report.metrics["corpus_coverage"].as_f64().expect("f64") - 15.0 / 18.0).abs() < 1e-12);
    let texts = vec![
        "The cat sat on the mat.".to_string(),
        "the dog".to_string(),
        "park the cat".to_string(),
    ];
    assert_eq!(
        check_round_trip(&t.path("model"), &original, &trimmed, &files, &texts),
        2
    );
    // The input folder is untouched.
    assert_eq!(
        std::fs::read_to_string(t.path("model/tokenizer.json")).expect("read"),
        tiny_wordpiece().to_string()
    );
    assert_eq!(
        Checkpoint::open(&t.path("model"))
            .expect("opens")
            .config
            .bert()
            .vocab_size,
        64
    );
}

#[test]
fn keep_alphabet_and_target_size() {
    let t = Tiny::new(TINY_CORPUS);
    let corpus = t.path("corpus.jsonl");
    let (_, _, _, report) = t
        .run(json!({"corpus": corpus, "keep-alphabet": true}))
        .expect("trims");
    // 5 specials + 26 letters + 11 one-character continuations (not ##ed, ##ing) + the, cat, sat, on, mat.
    assert_eq!(report.metrics["vocab_after"], json!(5 + 26 + 11 + 5));
    let (_, _, _, report) = t
        .run(json!({"corpus": corpus, "keep-alphabet": false, "target-size": 7}))
        .expect("trims");
    // "the" (4) then the tie of cat, sat, on, mat (2 each): lowest id first.
    assert_eq!(report.metrics["vocab_after"], json!(7));
    assert_eq!(report.metrics["cut_by_target_size"], json!(3));
}

#[test]
fn bad_inputs_have_exact_messages() {
    let t = Tiny::new(TINY_CORPUS);
    let missing = t.path("nope.jsonl");
    assert_eq!(
        t.error(json!({"corpus": missing})),
        format!("`corpus`: file `{}` does not exist\nhint: paths in a pipeline are relative to the pipeline file's folder", missing.display())
    );
    let empty = t.path("empty.jsonl");
    std::fs::write(&empty, "\n").expect("write");
    assert_eq!(
        t.error(json!({"corpus": empty})),
        format!("{}: the file is empty", empty.display())
    );
    let corpus = t.path("corpus.jsonl");
    assert_eq!(
        t.error(json!({"corpus": corpus, "field": "sentence"})),
        format!(
            "{}:1: missing field `sentence` (fields here: `text`)",
            corpus.display()
        )
    );
    assert_eq!(
        t.error(json!({"corpus": corpus, "target-size": 4})),
        "`target-size`: 4 is smaller than the 42 tokens every trimmed vocabulary of this tokenizer keeps (special tokens, byte pieces, keep-list, single characters (`keep-alphabet = false` drops them))\nhint: raise `target-size` to at least 42"
    );
    assert_eq!(
        t.error(json!({"corpus": corpus, "min-frequency": 0})),
        "`min-frequency`: must be at least 1"
    );
    assert_eq!(t.error(json!({"corpus": []})), "`corpus`: names no file\nhint: give one path or a list of paths, e.g. `corpus = [\"data/en.jsonl\"]`");
    let blank = t.path("blank.jsonl");
    std::fs::write(&blank, "{\"text\": \"\"}\n").expect("write");
    assert_eq!(
        t.error(json!({"corpus": blank})),
        "`corpus`: the 1 text(s) of the corpus give no tokens (all are empty)"
    );

    let mut wordlevel = tiny_wordpiece();
    wordlevel["model"] = json!({"type": "WordLevel", "vocab": {"[UNK]": 0}, "unk_token": "[UNK]"});
    std::fs::write(t.path("model/tokenizer.json"), wordlevel.to_string()).expect("write");
    assert_eq!(
        t.error(json!({"corpus": corpus})),
        format!("`{}`: tokenizer model type `WordLevel` is not supported by vocabulary trimming (supported: WordPiece, BPE, Unigram)", t.path("model/tokenizer.json").display())
    );
    std::fs::remove_file(t.path("model/tokenizer.json")).expect("rm");
    assert_eq!(
        t.error(json!({"corpus": corpus})),
        format!(
            "`{}` is missing: `vocab-trim` rewrites the model's tokenizer.json and mines with it",
            t.path("model/tokenizer.json").display()
        )
    );
}
