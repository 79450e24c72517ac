//! `SideFiles`: the non-weight files of the checkpoint (tokenizer, sentence-transformers configs) as a pass sees
//! them: the input folder's bytes, overlaid with whatever earlier passes rewrote. The artifact writer writes the
//! overlay in place of the originals; the input folder is never modified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The side files of one run.
#[derive(Debug, Clone, Default)]
pub struct SideFiles {
    dir: PathBuf,
    changed: BTreeMap<String, Vec<u8>>,
    removed: std::collections::BTreeSet<String>,
}

impl SideFiles {
    /// The files of checkpoint folder `dir`, unchanged.
    pub fn new(dir: &Path) -> Self {
        Self {
            dir: dir.to_path_buf(),
            changed: BTreeMap::new(),
            removed: Default::default(),
        }
    }

    /// The folder the originals are read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The current bytes of `rel` (a `/`-separated path inside the checkpoint folder): the rewritten bytes if a pass
    /// set them, else the original file's, else `None` when neither exists.
    pub fn read(&self, rel: &str) -> Result<Option<Vec<u8>>> {
        if self.removed.contains(rel) {
            return Ok(None);
        }
        if let Some(bytes) = self.changed.get(rel) {
            return Ok(Some(bytes.clone()));
        }
        let path = self.dir.join(rel);
        if !path.is_file() {
            return Ok(None);
        }
        std::fs::read(&path).map(Some).map_err(|e| Error::File {
            path,
            problem: e.to_string(),
        })
    }

    /// `read` parsed as JSON; a file that does not parse is an error naming it.
    pub fn read_json(&self, rel: &str) -> Result<Option<serde_json::Value>> {
        match self.read(rel)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::File {
                    path: self.dir.join(rel),
                    problem: format!("is not valid JSON: {e}"),
                }),
        }
    }

    /// Replace (or add) `rel` in the output.
    pub fn set(&mut self, rel: &str, bytes: Vec<u8>) {
        self.removed.remove(rel);
        self.changed.insert(rel.to_string(), bytes);
    }

    /// Leave `rel` out of the output.
    pub fn remove(&mut self, rel: &str) {
        self.changed.remove(rel);
        self.removed.insert(rel.to_string());
    }

    /// Whether `rel` was removed.
    pub fn is_removed(&self, rel: &str) -> bool {
        self.removed.contains(rel)
    }

    /// Replace (or add) `rel` with `value` as 2-space-indented JSON and a trailing newline.
    pub fn set_json(&mut self, rel: &str, value: &serde_json::Value) {
        let mut text = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push('\n');
        self.set(rel, text.into_bytes());
    }

    /// The rewritten files, by relative path.
    pub fn changed(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.changed
    }

    pub fn is_changed(&self, rel: &str) -> bool {
        self.changed.contains_key(rel)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_shadows_the_original_and_never_writes_it() -> Result<()> {
        let tmp = tempfile::tempdir().map_err(|e| Error::File {
            path: PathBuf::from("tmp"),
            problem: e.to_string(),
        })?;
        std::fs::write(tmp.path().join("a.json"), b"{\"x\": 1}").map_err(|e| Error::File {
            path: PathBuf::from("a.json"),
            problem: e.to_string(),
        })?;
        let mut files = SideFiles::new(tmp.path());
        assert_eq!(files.read("missing.txt")?, None);
        assert_eq!(
            files.read_json("a.json")?,
            Some(serde_json::json!({"x": 1}))
        );
        files.set_json("a.json", &serde_json::json!({"x": 2}));
        assert_eq!(
            files.read_json("a.json")?,
            Some(serde_json::json!({"x": 2}))
        );
        assert_eq!(
            std::fs::read(tmp.path().join("a.json")).ok(),
            Some(b"{\"x\": 1}".to_vec())
        );
        std::fs::write(tmp.path().join("b.json"), b"not json").map_err(|e| Error::File {
            path: PathBuf::from("b.json"),
            problem: e.to_string(),
        })?;
        let err = files
            .read_json("b.json")
            .expect_err("must fail")
            .to_string();
        assert!(
            err.contains("b.json") && err.contains("is not valid JSON"),
            "{err}"
        );
        Ok(())
    }
}
