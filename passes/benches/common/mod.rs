//! The command line the passes' bench binaries share: `[MODEL_DIR] [JSONL] [FIELD] [BATCH] ...` (cargo's own
//! `--bench` flags dropped).

use std::path::PathBuf;

pub struct Args {
    pub dir: PathBuf,
    pub data: PathBuf,
    pub field: String,
    pub batch_size: usize,
    /// The positional arguments after BATCH (each bench compiles this module; not every one reads them).
    #[allow(dead_code)]
    pub rest: Vec<String>,
}

/// Defaults: all-MiniLM-L6-v2 from `.cache/models`, STS-B train from `../shared/data`, `sentence1`, 32.
pub fn args() -> Result<Args, Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    Ok(Args {
        dir: args
            .first()
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join(".cache/models/all-MiniLM-L6-v2")),
        data: args
            .get(1)
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("../shared/data/sts-b/train.jsonl")),
        field: args.get(2).cloned().unwrap_or_else(|| "sentence1".into()),
        batch_size: args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(32),
        rest: args.iter().skip(4).cloned().collect(),
    })
}
