//! Progress reporting from long-running steps. Libraries call it; only the binary draws bars.

/// Receives progress from passes and the runner. `label` is a pass kind (`cast`) or a runner stage (`check`,
/// `write`); `units` is how many `on_unit` calls follow (tensors, files).
pub trait Progress: Send + Sync {
    fn on_pass_start(&self, label: &str, units: usize) {
        let _ = (label, units);
    }
    fn on_unit(&self, name: &str) {
        let _ = name;
    }
    fn on_pass_end(&self) {}
}

/// Progress that reports nothing (the default for libraries and tests).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {}
