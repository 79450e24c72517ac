//! The output policy that every command writing a folder (`run`, `export`) shares, and the lock and recovery that
//! make writing it crash-consistent.
//!
//! - The output folder never lies inside its input folder, nor contains it.
//! - It may exist only with `--force`, and then only as a folder this tool wrote: its `manifest.json` parses as a
//!   compressor manifest (tool `compressor`, schema [`SCHEMA_VERSION`]) and the folder holds no file that manifest
//!   does not list (an empty folder may be replaced too). Anything else is refused, naming what is wrong.
//! - The folder it will be created in must be writable; this is checked before any pass runs.
//! - A writer holds `<out>.lock` (an exclusive `flock` on it) from before the passes run until the artifact is in
//!   place, so two runs to one output cannot both succeed. Holding it, the writer recovers what a killed writer left
//!   beside the output (`<out>.partial-<pid>` and `<out>.old-<pid>` of processes that are gone).

use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::problems::{Problem, Problems};

/// Version of the manifest layout; bumped on any incompatible change.
pub const SCHEMA_VERSION: u32 = 1;

/// A file of the input or the output, by path relative to its folder (`/`-separated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub path: String,
    pub bytes: u64,
    pub sha256: String,
}

/// The file a staging folder holds until it is complete, marking it as ours for recovery.
pub const STAGING_MARKER: &str = ".compressor-staging";

/// At most this many extra files are named in a refusal.
const LISTED: usize = 10;

/// What a refusal to replace a folder says proves a folder is ours.
pub const OURS_HINT: &str = "compressor replaces only a folder it wrote: one whose manifest.json is a compressor manifest (tool `compressor`, schema_version 1) and that holds no file that manifest does not list; remove the folder yourself, or choose another output folder";

/// How the output path will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Written; an existing folder is replaced only with `force`.
    Write { force: bool },
    /// `compressor plan`: an existing artifact is a note, everything `run --force` would refuse is a problem.
    DryRun,
}

/// What the check found at the output path.
#[derive(Debug, Default)]
pub struct Checked {
    pub problems: Vec<Problem>,
    pub notes: Vec<String>,
    /// Something exists at the output path.
    pub exists: bool,
}

/// Check `out` as the output of a command reading `input`. Reads only metadata (and creates and removes one empty
/// probe folder to learn whether the parent is writable).
pub fn check(input: &Path, out: &Path, mode: Mode) -> Checked {
    let mut c = Checked::default();
    if out.file_name().is_none() {
        c.problems.push(Problem::new(format!(
            "output folder `{}` has no name",
            out.display()
        )));
        return c;
    }
    let input_abs = std::fs::canonicalize(input).unwrap_or_else(|_| absolute(input));
    let out_abs = absolute(out);
    let relations = [
        (
            out_abs.starts_with(&input_abs),
            "is inside",
            "compressor never writes into its input; choose an output folder outside the model folder",
        ),
        (
            input_abs.starts_with(&out_abs),
            "contains",
            "choose an output folder outside the model folder",
        ),
    ];
    if let Some((_, relation, hint)) = relations.into_iter().find(|r| r.0) {
        c.problems.push(
            Problem::new(format!(
                "output folder `{}` {relation} the model folder `{}`",
                out.display(),
                input.display()
            ))
            .hint(hint),
        );
        return c;
    }
    let Ok(meta) = std::fs::symlink_metadata(out) else {
        if let Err(p) = check_writable(out) {
            c.problems.push(p);
        }
        return c;
    };
    c.exists = true;
    let force = match mode {
        Mode::Write { force: false } => {
            c.problems.push(
                Problem::new(format!("output folder `{}` already exists", out.display()))
                    .hint("pass `--force` to replace it, or choose another output folder"),
            );
            return c;
        }
        Mode::Write { force: true } => true,
        Mode::DryRun => false,
    };
    if !meta.is_dir() {
        c.problems.push(
            Problem::new(format!(
                "output path `{}` exists and is not a folder",
                out.display()
            ))
            .hint("choose another output folder; compressor never replaces a file"),
        );
        return c;
    }
    match ownership(out) {
        Ok(()) => {
            if let Err(p) = check_writable(out) {
                c.problems.push(p);
            } else if !force {
                c.notes.push(format!(
                    "output folder `{}` exists; `run` needs `--force` to replace it",
                    out.display()
                ));
            }
        }
        Err(reason) => c.problems.push(refusal(out, &reason)),
    }
    c
}

/// `check` for commands that fail on the first problem: the problems as one error.
pub fn require(input: &Path, out: &Path, mode: Mode) -> anyhow::Result<bool> {
    let c = check(input, out, mode);
    if c.problems.is_empty() {
        Ok(c.exists)
    } else {
        Err(anyhow::Error::new(Problems(c.problems)))
    }
}

fn refusal(out: &Path, reason: &str) -> Problem {
    Problem::new(format!(
        "refusing to replace `{}`: it is not a compressor artifact: {reason}",
        out.display()
    ))
    .hint(OURS_HINT)
}

/// The head of manifest.json that ownership needs.
#[derive(Deserialize)]
struct ManifestHead {
    schema_version: u32,
    tool: ToolHead,
    output: OutputHead,
}

#[derive(Deserialize)]
struct ToolHead {
    name: String,
}

#[derive(Deserialize)]
struct OutputHead {
    files: Vec<FileRecord>,
    #[serde(default)]
    reports: Vec<String>,
}

/// Whether `dir` is a folder this tool wrote (or an empty folder); `Err` says why not.
pub fn ownership(dir: &Path) -> Result<(), String> {
    let mut present = Vec::new();
    list_tree(dir, Path::new(""), &mut present).map_err(|e| format!("cannot list it ({e})"))?;
    if present.is_empty() {
        return Ok(());
    }
    let manifest = dir.join("manifest.json");
    if !manifest.is_file() {
        return Err("it has no manifest.json".into());
    }
    let text =
        std::fs::read(&manifest).map_err(|e| format!("cannot read its manifest.json ({e})"))?;
    let head: ManifestHead = serde_json::from_slice(&text)
        .map_err(|e| format!("its manifest.json is not a compressor manifest ({e})"))?;
    if head.tool.name != "compressor" {
        return Err(format!(
            "its manifest.json was written by `{}`, not by compressor",
            head.tool.name
        ));
    }
    if head.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "its manifest.json has schema_version {}, this compressor writes {SCHEMA_VERSION}",
            head.schema_version
        ));
    }
    let listed: std::collections::BTreeSet<&str> = head
        .output
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(head.output.reports.iter().map(String::as_str))
        .chain(["manifest.json"])
        .collect();
    let extra: Vec<&String> = present
        .iter()
        .filter(|p| !listed.contains(p.as_str()))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    let mut names: Vec<String> = extra
        .iter()
        .take(LISTED)
        .map(|p| format!("`{p}`"))
        .collect();
    if extra.len() > LISTED {
        names.push(format!("... and {} more", extra.len() - LISTED));
    }
    Err(format!(
        "it holds {} file(s) its manifest.json does not list: {}",
        extra.len(),
        names.join(", ")
    ))
}

/// Every entry under `root/rel` that is not a folder holding something, `/`-separated (empty folders end in `/`).
fn list_tree(root: &Path, rel: &Path, out: &mut Vec<String>) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let child = rel.join(e.file_name());
        let name = child.to_string_lossy().replace('\\', "/");
        if e.file_type()?.is_dir() {
            let before = out.len();
            list_tree(root, &child, out)?;
            if out.len() == before {
                out.push(format!("{name}/"));
            }
        } else {
            out.push(name);
        }
    }
    Ok(())
}

/// The folder `out` is created in must be writable: its deepest existing ancestor gets an empty probe folder,
/// removed at once (and removed by the next run when a kill comes between the two).
fn check_writable(out: &Path) -> Result<(), Problem> {
    let parent = parent_of(out);
    let mut existing = parent.as_path();
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(p) if !p.as_os_str().is_empty() => existing = p,
            _ => {
                existing = Path::new(".");
                break;
            }
        }
    }
    let unwritable = |why: String| {
        Problem::new(format!(
            "cannot write the output folder `{}`: {why}",
            out.display()
        ))
        .hint("choose an output folder in a place you can write to")
    };
    if !existing.is_dir() {
        return Err(unwritable(format!(
            "`{}` is not a folder",
            existing.display()
        )));
    }
    clean_probes(existing);
    // Unique within the process too: the parallel jobs of `compressor batch` may probe one folder at once.
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let probe = existing.join(format!("{PROBE_PREFIX}{}-{n}", std::process::id()));
    match std::fs::create_dir(&probe) {
        Ok(()) => {
            let _ = std::fs::remove_dir(&probe);
            Ok(())
        }
        Err(e) => Err(unwritable(format!(
            "cannot create anything in `{}` ({e})",
            existing.display()
        ))),
    }
}

/// The name of the empty folder `check_writable` creates and removes, followed by `<pid>-<n>`.
const PROBE_PREFIX: &str = ".compressor-probe-";

/// Remove the empty probe folders in `dir` that processes killed while probing left (their pid is gone).
/// `remove_dir` removes only empty folders, so nothing else can go.
fn clean_probes(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PROBE_PREFIX))
            .and_then(|p| p.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !process_alive(pid) {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// The folder `out` lies in (`.` for a bare name).
pub fn parent_of(out: &Path) -> PathBuf {
    match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `<out><suffix>`, beside `out`.
pub fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let mut s = out.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}

/// Another process holds the lock on an output path (`compressor batch` skips such a job rather than failing it).
#[derive(Debug, thiserror::Error)]
#[error("another compressor process{} is writing `{}` (it holds `{}`)\nhint: wait for it to finish, or choose another output folder", if holder.is_empty() { String::new() } else { format!(" (pid {holder})") }, out.display(), lock.display())]
pub struct OutputBusy {
    pub holder: String,
    pub out: PathBuf,
    pub lock: PathBuf,
}

/// The exclusive right to write one output path, held from before the passes run until the artifact is in place.
/// Dropping it unlocks and removes the lock file.
#[derive(Debug)]
pub struct OutputLock {
    path: PathBuf,
    file: File,
    /// What recovery did to folders a killed writer left (one sentence each).
    pub recovered: Vec<String>,
}

impl OutputLock {
    /// Lock `out` (creating its parent folders), then recover what killed writers left beside it.
    pub fn acquire(out: &Path) -> anyhow::Result<Self> {
        let parent = parent_of(out);
        std::fs::create_dir_all(&parent)
            .with_context(|| format!("cannot create folder `{}`", parent.display()))?;
        let path = sibling(out, ".lock");
        let file = loop {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .with_context(|| format!("cannot create the lock file `{}`", path.display()))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(&path).unwrap_or_default();
                    return Err(OutputBusy {
                        holder: holder.trim().to_string(),
                        out: out.to_path_buf(),
                        lock: path,
                    }
                    .into());
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("cannot lock `{}`", path.display()))
                }
            }
            // A process that held the lock removes the file before unlocking; if it did so between our open and
            // our lock, we hold a lock on a file no longer at the path: open it again.
            if same_file(&file, &path) {
                break file;
            }
        };
        let mut lock = Self {
            path,
            file,
            recovered: Vec::new(),
        };
        use std::io::{Seek as _, Write as _};
        lock.file.set_len(0).ok();
        lock.file.seek(std::io::SeekFrom::Start(0)).ok();
        writeln!(lock.file, "{}", std::process::id()).ok();
        lock.recovered = recover(out)?;
        Ok(lock)
    }
}

impl Drop for OutputLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        let _ = self.file.unlock();
    }
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &File, path: &Path) -> bool {
    path.exists()
}

/// Whether the process `pid` may still run: `/proc/<pid>` exists (or there is no `/proc` to tell). This process
/// counts as gone: it holds the lock and has not started writing.
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return false;
    }
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new("/proc").join(pid.to_string()).exists()
}

/// Folders beside `out` that a writer of `out` names `<out>.partial-<pid>` / `<out>.old-<pid>`.
fn leftovers(out: &Path) -> Vec<(PathBuf, &'static str, u32)> {
    let Some(name) = out.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(parent_of(out)) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let file_name = e.file_name().to_string_lossy().into_owned();
        for kind in ["partial", "old"] {
            let pid = file_name
                .strip_prefix(name.as_str())
                .and_then(|r| r.strip_prefix(&format!(".{kind}-")))
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u32>().ok());
            if let Some(pid) = pid {
                found.push((out.with_file_name(&file_name), kind, pid));
            }
        }
    }
    found.sort();
    found
}

/// Recover what writers of `out` that were killed left beside it (call with the lock held): an old artifact moved
/// aside (`.old-<pid>`) goes back to `out` when `out` is missing and is removed otherwise; staging folders
/// (`.partial-<pid>`, holding the staging marker or a replaced artifact) are removed. Only folders of processes
/// that are gone, and only folders that are provably ours, are touched. Returns what was done.
pub fn recover(out: &Path) -> anyhow::Result<Vec<String>> {
    let mut done = Vec::new();
    let found = leftovers(out);
    for (path, _, pid) in found.iter().filter(|f| f.1 == "old") {
        if process_alive(*pid) {
            continue;
        }
        if !path.join(STAGING_MARKER).is_file() {
            if let Err(reason) = ownership(path) {
                done.push(format!(
                    "left `{}` alone: it is not a compressor artifact: {reason}",
                    path.display()
                ));
                continue;
            }
        }
        if std::fs::symlink_metadata(out).is_err() && !path.join(STAGING_MARKER).exists() {
            std::fs::rename(path, out).with_context(|| {
                format!(
                    "cannot move `{}` back to `{}`",
                    path.display(),
                    out.display()
                )
            })?;
            done.push(format!(
                "restored `{}` from `{}`, left by process {pid}, which is gone",
                out.display(),
                path.display()
            ));
        } else {
            remove_marked(path).with_context(|| format!("cannot remove `{}`", path.display()))?;
            done.push(format!(
                "removed `{}`, an old artifact left by process {pid}, which is gone",
                path.display()
            ));
        }
    }
    for (path, _, pid) in found.iter().filter(|f| f.1 == "partial") {
        if process_alive(*pid) {
            continue;
        }
        let marked = path.join(STAGING_MARKER).is_file();
        if !marked {
            if let Err(reason) = ownership(path) {
                done.push(format!(
                    "left `{}` alone: it is neither a staging folder nor a compressor artifact: {reason}",
                    path.display()
                ));
                continue;
            }
        }
        remove_marked(path).with_context(|| format!("cannot remove `{}`", path.display()))?;
        done.push(format!(
            "removed `{}`, a staging folder left by process {pid}, which is gone",
            path.display()
        ));
    }
    Ok(done)
}

/// Remove a folder of ours so that a kill at any point leaves it either marked as ours ([`STAGING_MARKER`]) or
/// gone: the marker is written first and removed last.
pub fn remove_marked(dir: &Path) -> std::io::Result<()> {
    let marker = dir.join(STAGING_MARKER);
    if !marker.is_file() {
        File::create(&marker)?.sync_all()?;
    }
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_name() == STAGING_MARKER {
            continue;
        }
        if e.file_type()?.is_dir() {
            std::fs::remove_dir_all(e.path())?;
        } else {
            std::fs::remove_file(e.path())?;
        }
    }
    std::fs::remove_file(&marker)?;
    std::fs::remove_dir(dir)
}

/// Swap two paths atomically (Linux `renameat2(RENAME_EXCHANGE)`). `Ok(false)` where the system or file system
/// cannot.
#[cfg(target_os = "linux")]
pub fn exchange(a: &Path, b: &Path) -> std::io::Result<bool> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt as _;
    let ca = CString::new(a.as_os_str().as_bytes())?;
    let cb = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both arguments are valid NUL-terminated strings that outlive the call; renameat2 reads them only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ENOSYS | libc::EINVAL | libc::ENOTSUP) => Ok(false),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
pub fn exchange(_: &Path, _: &Path) -> std::io::Result<bool> {
    Ok(false)
}

/// `path` made absolute: its deepest existing ancestor canonicalized, the rest appended lexically.
pub fn absolute(path: &Path) -> PathBuf {
    use std::path::Component;
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    };
    let mut existing = joined.as_path();
    let mut rest: Vec<Component> = Vec::new();
    loop {
        if let Ok(c) = std::fs::canonicalize(existing) {
            let mut out = c;
            for comp in rest.iter().rev() {
                match comp {
                    Component::ParentDir => {
                        out.pop();
                    }
                    Component::CurDir => {}
                    other => out.push(other.as_os_str()),
                }
            }
            return out;
        }
        match (existing.parent(), existing.components().next_back()) {
            (Some(parent), Some(last)) => {
                rest.push(last);
                existing = parent;
            }
            _ => return joined,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(files: &[&str]) -> String {
        let files: Vec<_> = files
            .iter()
            .map(|f| serde_json::json!({"path": f, "bytes": 0, "sha256": ""}))
            .collect();
        serde_json::json!({"schema_version": 1, "tool": {"name": "compressor", "version": "0"},
            "output": {"files": files}})
        .to_string()
    }

    #[test]
    fn ours_means_our_manifest_and_nothing_it_does_not_list() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let d = tmp.path();
        assert_eq!(ownership(d), Ok(()), "an empty folder may be replaced");
        std::fs::write(d.join("manifest.json"), "not json")?;
        assert!(ownership(d)
            .expect_err("text")
            .starts_with("its manifest.json is not a compressor manifest ("));
        std::fs::write(
            d.join("manifest.json"),
            r#"{"schema_version": 1, "tool": {"name": "webpack"}, "output": {"files": []}}"#,
        )?;
        assert_eq!(
            ownership(d),
            Err("its manifest.json was written by `webpack`, not by compressor".into())
        );
        std::fs::write(d.join("manifest.json"), manifest(&["a", "sub/b"]))?;
        std::fs::write(d.join("a"), "")?;
        std::fs::create_dir(d.join("sub"))?;
        std::fs::write(d.join("sub/b"), "")?;
        assert_eq!(ownership(d), Ok(()));
        std::fs::write(d.join("sub/mine.txt"), "")?;
        std::fs::create_dir(d.join("empty"))?;
        assert_eq!(
            ownership(d),
            Err(
                "it holds 2 file(s) its manifest.json does not list: `empty/`, `sub/mine.txt`"
                    .into()
            )
        );
        Ok(())
    }

    #[test]
    fn absolute_resolves_missing_tails_lexically() {
        let tmp = std::env::temp_dir();
        let canon = std::fs::canonicalize(&tmp).expect("temp dir");
        assert_eq!(
            absolute(&tmp.join("no-such-dir/a/../b")),
            canon.join("no-such-dir/b")
        );
    }

    #[test]
    fn leftovers_are_found_by_name_and_pid() -> anyhow::Result<()> {
        let tmp = tempfile::tempdir()?;
        let out = tmp.path().join("out");
        for n in [
            "out.partial-12",
            "out.old-7",
            "out.partial-x",
            "outer.partial-3",
            "out.partial-",
        ] {
            std::fs::create_dir(tmp.path().join(n))?;
        }
        let found: Vec<(String, &str, u32)> = leftovers(&out)
            .into_iter()
            .map(|(p, k, pid)| {
                (
                    p.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    k,
                    pid,
                )
            })
            .collect();
        assert_eq!(
            found,
            [
                ("out.old-7".to_string(), "old", 7),
                ("out.partial-12".to_string(), "partial", 12)
            ]
        );
        Ok(())
    }
}
