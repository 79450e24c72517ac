//! Where cached statistics live, and the one on-disk cache of them: `<cache>/analyses/<kind>/<key>.<ext>`, where
//! the key is a SHA-256 over (cache version, kind, model fingerprint, data hash, settings). The analyses of the
//! passes (importance, covariance, gradients, Hessian eigenvalues, activation ranges) and the vocabulary counts
//! of `vocab-trim` are entries of it; the evaluation's embedding cache shares the folder. Entries are written to a temporary file and
//! renamed into place, so a reader sees a whole entry or none; an unreadable or mismatching entry is a miss (and
//! is recomputed and replaced), never an error.
//!
//! Numeric statistics are stored as safetensors files of F64 tensors (read back through the strict reader); the
//! key's parts are repeated in the file's `__metadata__` so an entry says what it holds.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use compressor_models::st::{serialize, SafetensorsFile};
use compressor_models::{DType, HostTensor};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// `$COMPRESSOR_CACHE`, else `$XDG_CACHE_HOME/compressor`, else `~/.cache/compressor`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("COMPRESSOR_CACHE") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(d).join("compressor");
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/compressor"))
        .unwrap_or_else(|| std::env::temp_dir().join("compressor-cache"))
}

/// Bumped whenever what an entry holds or how a statistic is computed changes.
pub const CACHE_VERSION: &str = "analyses-1";

/// A running SHA-256 over length-prefixed parts (so `["ab", "c"]` and `["a", "bc"]` differ).
#[derive(Clone, Default)]
pub struct Hasher(Sha256);

impl Hasher {
    pub fn part(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.update((bytes.len() as u64).to_le_bytes());
        self.0.update(bytes);
        self
    }

    pub fn ints(&mut self, values: &[i64]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.part(&bytes)
    }

    pub fn floats(&mut self, values: &[f32]) -> &mut Self {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.part(&bytes)
    }

    pub fn hex(self) -> String {
        format!("{:x}", self.0.finalize())
    }
}

/// The identity of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// The statistic (`importance`, `covariance`, `fisher`, `hessian-eigen`, ...): the entry's folder.
    pub kind: &'static str,
    pub model: String,
    pub data: String,
    /// Everything else the statistic depends on, spelled out (batch size, loss, seed, blocks ...).
    pub settings: String,
}

impl Key {
    /// The entry's name: SHA-256 of the cache version and the key's parts.
    pub fn digest(&self) -> String {
        let mut h = Hasher::default();
        h.part(CACHE_VERSION.as_bytes())
            .part(self.kind.as_bytes())
            .part(self.model.as_bytes())
            .part(self.data.as_bytes())
            .part(self.settings.as_bytes());
        h.hex()
    }

    /// The parts as a file's metadata.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("version".to_string(), CACHE_VERSION.to_string()),
            ("kind".to_string(), self.kind.to_string()),
            ("model".to_string(), self.model.clone()),
            ("data".to_string(), self.data.clone()),
            ("settings".to_string(), self.settings.clone()),
        ])
    }
}

/// Named f64 arrays with their shapes: what a numeric entry holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Arrays(pub BTreeMap<String, (Vec<usize>, Vec<f64>)>);

impl Arrays {
    pub fn insert(&mut self, name: impl Into<String>, shape: Vec<usize>, values: Vec<f64>) {
        self.0.insert(name.into(), (shape, values));
    }

    pub fn get(&self, name: &str) -> Option<&[f64]> {
        self.0.get(name).map(|(_, v)| v.as_slice())
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.0.get(name).map(|(s, _)| s.as_slice())
    }
}

/// The cache folder (`None` in a [`Cache`] turns caching off).
#[derive(Debug, Clone)]
pub struct Cache {
    root: Option<PathBuf>,
}

impl Cache {
    /// Entries under `<dir>/analyses/`; `None`: nothing is read or written.
    pub fn new(dir: Option<&Path>) -> Self {
        Self {
            root: dir.map(|d| d.join("analyses")),
        }
    }

    /// Entries under the default folder ([`default_cache_dir`]).
    pub fn shared() -> Self {
        Self::new(Some(&default_cache_dir()))
    }

    /// Caching off.
    pub fn off() -> Self {
        Self { root: None }
    }

    /// Where the entry for `key` lives (`None` with caching off).
    pub fn path(&self, key: &Key, ext: &str) -> Option<PathBuf> {
        self.root
            .as_ref()
            .map(|r| r.join(key.kind).join(format!("{}.{ext}", key.digest())))
    }

    /// The numeric entry for `key`, if there is a readable one made for exactly this key.
    pub fn read_arrays(&self, key: &Key) -> Option<Arrays> {
        let path = self.path(key, "safetensors")?;
        let (metadata, arrays) = read_arrays_at(&path)?;
        (metadata == key.metadata()).then_some(arrays)
    }

    /// Store a numeric entry (nothing with caching off).
    pub fn write_arrays(&self, key: &Key, arrays: &Arrays) -> Result<()> {
        let Some(path) = self.path(key, "safetensors") else {
            return Ok(());
        };
        write_arrays_at(&path, key, arrays)
    }

    /// A JSON entry for `key`, if there is a readable one (made for exactly this key).
    pub fn read_json<T: serde::de::DeserializeOwned>(&self, key: &Key) -> Option<T> {
        let path = self.path(key, "json")?;
        let entry: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
        let meta: BTreeMap<String, String> =
            serde_json::from_value(entry.get("key")?.clone()).ok()?;
        if meta != key.metadata() {
            return None;
        }
        serde_json::from_value(entry.get("value")?.clone()).ok()
    }

    /// Store a JSON entry (nothing with caching off).
    pub fn write_json<T: serde::Serialize>(&self, key: &Key, value: &T) -> Result<()> {
        let Some(path) = self.path(key, "json") else {
            return Ok(());
        };
        let entry = serde_json::json!({ "key": key.metadata(), "value": value });
        let bytes =
            serde_json::to_vec(&entry).map_err(|e| cache_error(&path, std::io::Error::other(e)))?;
        write_atomic(&path, &bytes)
    }
}

fn cache_error(path: &Path, cause: std::io::Error) -> Error {
    Error::Cache {
        path: path.to_path_buf(),
        cause,
    }
}

/// Write `bytes` to a temporary file beside `path`, then rename it into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |e: std::io::Error| cache_error(path, e);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let tmp = compressor_models::fsio::temp_beside(path);
    std::fs::write(&tmp, bytes).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        err(e)
    })
}

/// The arrays in the safetensors file at `path` with the metadata they were written with (the key's parts:
/// `version`, `kind`, `model`, `data`, `settings`); `None` when there is no readable file of f64 arrays there.
pub fn read_arrays_at(path: &Path) -> Option<(BTreeMap<String, String>, Arrays)> {
    if !path.exists() {
        return None;
    }
    let file = SafetensorsFile::open(path).ok()?;
    let mut out = Arrays::default();
    for (name, info) in &file.tensors {
        if info.dtype != DType::F64 {
            return None;
        }
        let t = file.tensor(name).ok()?;
        let values = t
            .bytes()
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
            .collect();
        out.insert(name.clone(), t.shape.clone(), values);
    }
    Some((file.metadata.clone(), out))
}

/// Write `arrays` to `path` atomically, with `key`'s parts as the file's metadata.
pub fn write_arrays_at(path: &Path, key: &Key, arrays: &Arrays) -> Result<()> {
    let mut tensors = Vec::with_capacity(arrays.0.len());
    for (name, (shape, values)) in &arrays.0 {
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = HostTensor::from_bytes(DType::F64, shape.clone(), bytes)
            .map_err(|e| cache_error(path, std::io::Error::other(e.to_string())))?;
        tensors.push((name.clone(), t));
    }
    write_atomic(path, &serialize(&tensors, &key.metadata()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(settings: &str) -> Key {
        Key {
            kind: "importance",
            model: "m".into(),
            data: "d".into(),
            settings: settings.into(),
        }
    }

    #[test]
    fn arrays_round_trip_exactly_and_other_keys_miss() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(Some(dir.path()));
        let mut a = Arrays::default();
        a.insert("x", vec![2, 2], vec![1.0, -2.5, 1e-300, f64::MAX]);
        a.insert("y", vec![1], vec![std::f64::consts::PI]);
        assert!(cache.read_arrays(&key("s")).is_none());
        cache.write_arrays(&key("s"), &a).expect("write");
        assert_eq!(cache.read_arrays(&key("s")), Some(a.clone()));
        assert!(cache.read_arrays(&key("t")).is_none());
        // A corrupt entry is a miss.
        let path = cache.path(&key("s"), "safetensors").expect("path");
        std::fs::write(&path, b"not safetensors").expect("corrupt");
        assert!(cache.read_arrays(&key("s")).is_none());
        // Caching off reads and writes nothing.
        let off = Cache::off();
        off.write_arrays(&key("s"), &a).expect("no-op");
        assert!(off.read_arrays(&key("s")).is_none());
    }

    #[test]
    fn json_entries_carry_their_key() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Cache::new(Some(dir.path()));
        cache
            .write_json(&key("s"), &vec![1.5f64, 2.0])
            .expect("write");
        assert_eq!(cache.read_json::<Vec<f64>>(&key("s")), Some(vec![1.5, 2.0]));
        assert_eq!(cache.read_json::<Vec<f64>>(&key("other")), None);
        let text =
            std::fs::read_to_string(cache.path(&key("s"), "json").expect("path")).expect("read");
        assert!(text.contains("\"kind\":\"importance\""), "{text}");
    }
}
