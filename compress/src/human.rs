//! Numbers for people: thousands separators and sizes.

/// `22713216` → `22,713,216`.
pub fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Decimal megabytes with one decimal: `45433344` → `45.4 MB`; small sizes in kB or bytes.
pub fn size(bytes: usize) -> String {
    if bytes >= 1_000_000 {
        format!("{:.1} MB", bytes as f64 / 1e6)
    } else if bytes >= 1_000 {
        format!("{:.1} kB", bytes as f64 / 1e3)
    } else {
        format!("{bytes} B")
    }
}

/// A duration for people: `0.4s`, `12s`, `3m 05s`, `1h 02m`.
pub fn duration(d: std::time::Duration) -> String {
    let secs = d.as_secs_f64();
    if secs < 1.0 {
        return format!("{secs:.2}s");
    }
    if secs < 10.0 {
        return format!("{secs:.1}s");
    }
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

/// A path for people: `.` components and `dir/..` pairs removed (`examples/../out/x` → `out/x`), without touching
/// the file system. For messages only; the commands use paths as given.
pub fn path(p: &std::path::Path) -> String {
    use std::path::Component;
    let mut out: Vec<Component> = Vec::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) | Some(Component::Prefix(_)) => {}
                _ => out.push(c),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        return ".".into();
    }
    out.iter()
        .collect::<std::path::PathBuf>()
        .display()
        .to_string()
}

/// `1 tensor`, `3 tensors`: a count with its noun in the right number (`noun` is the singular; plurals add `s`).
pub fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", thousands(n))
    }
}

/// `[30522, 384]`.
pub fn shape(shape: &[usize]) -> String {
    format!("{shape:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(22_713_216), "22,713,216");
        assert_eq!(size(45_433_344), "45.4 MB");
        assert_eq!(size(2_048), "2.0 kB");
        assert_eq!(size(12), "12 B");
        assert_eq!(count(1, "tensor"), "1 tensor");
        assert_eq!(count(0, "tensor"), "0 tensors");
        assert_eq!(count(1200, "file"), "1,200 files");
    }

    #[test]
    fn durations() {
        use std::time::Duration;
        assert_eq!(duration(Duration::from_millis(40)), "0.04s");
        assert_eq!(duration(Duration::from_millis(2400)), "2.4s");
        assert_eq!(duration(Duration::from_secs(12)), "12s");
        assert_eq!(duration(Duration::from_secs(185)), "3m 05s");
        assert_eq!(duration(Duration::from_secs(3720)), "1h 02m");
    }

    #[test]
    fn paths_lose_dot_dot_pairs() {
        use std::path::Path;
        assert_eq!(
            path(Path::new("examples/../out/minilm-bct")),
            "out/minilm-bct"
        );
        assert_eq!(path(Path::new("./a/./b")), "a/b");
        assert_eq!(path(Path::new("../../shared/x")), "../../shared/x");
        assert_eq!(path(Path::new("a/../../b")), "../b");
        assert_eq!(path(Path::new("/x/../..")), "/");
        assert_eq!(path(Path::new("a/..")), ".");
    }
}
