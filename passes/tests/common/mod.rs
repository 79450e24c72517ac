//! Helpers shared by the passes' integration tests.

use std::path::{Path, PathBuf};

/// A checkpoint under `models/tests/fixtures`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../models/tests/fixtures")
        .join(name)
}
