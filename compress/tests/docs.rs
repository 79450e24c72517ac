//! The TOML in docs/pipeline.md and examples/ parses with the real parser (no unknown keys, right types).

use std::path::Path;

use compressor::pipeline;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

#[test]
fn every_toml_block_of_the_pipeline_reference_parses() {
    let doc = std::fs::read_to_string(root().join("docs/pipeline.md")).expect("docs/pipeline.md");
    let blocks: Vec<&str> = doc
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect();
    assert!(blocks.len() >= 5, "found {} blocks", blocks.len());
    for block in blocks {
        // Complete partial examples with the required tables.
        let mut text = String::new();
        if !block.contains("[model]") {
            text.push_str("[model]\npath = \"m\"\n");
        }
        text.push_str(block);
        if !block.contains("[output]") {
            text.push_str("\n[output]\ndir = \"o\"\n");
        }
        if let Err(e) = pipeline::parse(Path::new("docs.toml"), &text) {
            panic!("{e:?}\nin:\n{text}");
        }
    }
}

#[test]
fn examples_parse() {
    let mut batches = 0;
    for dir in ["examples", "examples/sweep"] {
        for entry in std::fs::read_dir(root().join(dir)).expect("examples/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("read");
            // A batch file (JOBS.toml) names pipelines; expanding it parses every job's pipeline.
            if text.lines().any(|l| l.trim() == "[pipelines]") {
                let batch = compressor::batch::load(&path, 2)
                    .unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
                assert!(!batch.jobs.is_empty(), "{}", path.display());
                batches += 1;
            } else if let Err(e) = pipeline::load(&path) {
                panic!("{}: {e:?}", path.display());
            }
        }
    }
    assert_eq!(batches, 1, "examples/sweep.toml");
}

#[test]
fn toml_examples_in_pass_doc_comments_parse() {
    let mut found = 0;
    // One folder per method: read every source file below passes/src.
    let mut files = Vec::new();
    let mut dirs = vec![root().join("passes/src")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("passes/src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    for path in files {
        let source = std::fs::read_to_string(&path).expect("source");
        let mut block: Option<String> = None;
        for line in source.lines() {
            let line = line.trim_start();
            match (&mut block, line) {
                (None, "/// ```toml") => block = Some(String::new()),
                (Some(text), "/// ```") => {
                    let text = format!("[model]\npath = \"m\"\n{text}\n[output]\ndir = \"o\"\n");
                    if let Err(e) = pipeline::parse(Path::new("doc.toml"), &text) {
                        panic!("{}: {e:?}\nin:\n{text}", path.display());
                    }
                    found += 1;
                    block = None;
                }
                (Some(text), l) => {
                    text.push_str(
                        l.strip_prefix("///")
                            .unwrap_or(l)
                            .strip_prefix(' ')
                            .unwrap_or(""),
                    );
                    text.push('\n');
                }
                (None, _) => {}
            }
        }
    }
    assert!(found >= 1, "no TOML examples found in passes/src");
}

/// The shell block of the README's "Use" section, one command a line.
fn readme_use_block() -> Vec<String> {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split("\n## Use\n")
        .nth(1)
        .expect("README has a `## Use` section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Use section has a ```sh block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_string)
        .collect()
}

/// The README's Use section works verbatim, top to bottom, from the checkout's folder (issue 20): every line names
/// the binary the main job builds, and runs with it (here the binary under test stands in for that path).
#[test]
fn the_readme_use_section_runs_verbatim() {
    const BIN: &str = "./target/release/compressor ";
    let lines = readme_use_block();
    assert!(lines.len() >= 8, "{lines:?}");
    for l in &lines {
        assert!(
            l.starts_with(BIN),
            "a Use line that does not run the built binary: {l}"
        );
    }
    let model = root().join(".cache/models/all-MiniLM-L6-v2/model.safetensors");
    let sts = root().join("../shared/data/sts-b/test.jsonl");
    if !model.is_file() || !sts.is_file() {
        eprintln!("skipping: the README's Use section needs scripts/fetch-minilm.sh and ../shared");
        return;
    }
    let bin = env!("CARGO_BIN_EXE_compressor");
    for l in &lines {
        let command = format!("{bin} {}", &l[BIN.len()..]);
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &command])
            .current_dir(root())
            .env("COMPRESSOR_NO_PROGRESS", "1")
            .output()
            .expect("bash");
        assert_eq!(
            out.status.code(),
            Some(0),
            "README line failed: {l}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let emb =
        std::fs::read_to_string(root().join("out/emb.jsonl")).expect("embed wrote out/emb.jsonl");
    assert_eq!(emb.lines().count(), 3);
    assert!(root()
        .join("out/minilm-w4-dense/model.safetensors")
        .is_file());
    assert!(root().join("out/eval/report.md").is_file());
}
