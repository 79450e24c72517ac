//! Where cached statistics live: one folder shared by the evaluation's embedding cache and the passes' statistics
//! (vocabulary counts, ...).

use std::path::PathBuf;

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
