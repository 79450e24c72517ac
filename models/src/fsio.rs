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

/// Write `path` atomically: `write` fills a buffered temporary file beside it ([`temp_beside`]), which is synced
/// and renamed over `path`; on any error the temporary file is removed and `path` is untouched. Renaming (rather
/// than truncating in place) also keeps safe a writer whose input is mapped from the file it replaces. I/O errors
/// become `E` through `io_error`.
pub fn write_replacing<T, E>(
    path: &Path,
    io_error: impl Fn(&Path, std::io::Error) -> E,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<T, E>,
) -> Result<T, E> {
    let tmp = temp_beside(path);
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
        let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
        let value = write(&mut w)?;
        let file = w.into_inner().map_err(|e| io_error(&tmp, e.into_error()))?;
        file.sync_all().map_err(|e| io_error(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| io_error(path, e))?;
        Ok(value)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
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
