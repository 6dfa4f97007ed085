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

/// The guest side of the VM benchmarks: which kiln-vmm and firmware to run.
#[derive(clap::Args, Debug)]
pub struct GuestBinaries {
    /// kiln-vmm binary (default: next to kiln-bench).
    #[arg(long)]
    pub vmm: Option<PathBuf>,
    /// Firmware ELF (default: kiln-firmware next to kiln-bench).
    #[arg(long)]
    pub firmware: Option<PathBuf>,
}

impl GuestBinaries {
    /// (kiln-vmm, firmware), each checked to exist.
    pub fn resolve(&self) -> anyhow::Result<(PathBuf, PathBuf)> {
        let pick = |given: &Option<PathBuf>, name: &str| match given {
            Some(p) if p.is_file() => Ok(p.clone()),
            Some(p) => Err(anyhow::anyhow!("{name} not found at {}", p.display())),
            None => crate::cloud::sibling_binary(name),
        };
        Ok((
            pick(&self.vmm, "kiln-vmm")?,
            pick(&self.firmware, "kiln-firmware")?,
        ))
    }
}
