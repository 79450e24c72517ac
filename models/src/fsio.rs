//! File-system helpers shared by the crates' atomic writers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A temporary name beside `path` that no other writer uses: `<path>.tmp-<pid>-<n>`, `n` counting up within the
/// process, so that threads of one process (parallel jobs of `compressor batch`) writing the same file do not rename
/// each other's half-written copy into place.
pub fn temp_beside(path: &Path) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let mut name = path.as_os_str().to_os_string();
    name.push(format!(".tmp-{}-{n}", std::process::id()));
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_differ_within_one_process() {
        let a = temp_beside(Path::new("cache/entry.bin"));
        let b = temp_beside(Path::new("cache/entry.bin"));
        assert_ne!(a, b);
        assert!(a
            .to_string_lossy()
            .starts_with(&format!("cache/entry.bin.tmp-{}-", std::process::id())));
    }
}
