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
    for entry in std::fs::read_dir(root().join("examples")).expect("examples/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Err(e) = pipeline::load(&path) {
                panic!("{}: {e:?}", path.display());
            }
        }
    }
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
