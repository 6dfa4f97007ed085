//! A scratch directory for one benchmark run, removed when dropped (also when
//! the run fails).

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct Scratch {
    pub dir: PathBuf,
}

impl Scratch {
    /// `base/kiln-bench-<name>-<pid>`, created now.
    pub fn new(base: &Path, name: &str) -> anyhow::Result<Self> {
        let dir = base.join(format!("kiln-bench-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Scratch { dir })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
