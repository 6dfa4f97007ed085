//! Where volume bytes live: a small trait, and sparse files in a directory.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::PathBuf;

const GIB: u64 = 1 << 30;

/// A volume store. Sizes are in GiB; ids are the records' ids.
pub trait VolumeBackend: Send + Sync + 'static {
    /// A blank volume of `size_gb`.
    fn create(&self, id: &str, size_gb: u64) -> io::Result<()>;
    /// A copy of another volume or snapshot (`source` is its id), grown to `size_gb`.
    fn clone_from(&self, source: &str, id: &str, size_gb: u64) -> io::Result<()>;
    fn extend(&self, id: &str, size_gb: u64) -> io::Result<()>;
    /// Removes a volume or snapshot; absent is fine.
    fn delete(&self, id: &str) -> io::Result<()>;
    /// The allocated size in bytes (tests and metrics).
    fn len(&self, id: &str) -> io::Result<u64>;
}

/// Sparse raw files `{dir}/{id}.raw`.
pub struct FileBackend {
    dir: PathBuf,
}

impl FileBackend {
    pub fn new(dir: PathBuf) -> Self {
        FileBackend { dir }
    }

    fn path(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad volume id"));
        }
        Ok(self.dir.join(format!("{id}.raw")))
    }
}

impl VolumeBackend for FileBackend {
    fn create(&self, id: &str, size_gb: u64) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.path(id)?)?;
        f.set_len(size_gb * GIB)?;
        f.sync_all()
    }

    fn clone_from(&self, source: &str, id: &str, size_gb: u64) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        fs::copy(self.path(source)?, self.path(id)?)?;
        self.extend(id, size_gb)
    }

    fn extend(&self, id: &str, size_gb: u64) -> io::Result<()> {
        let f = OpenOptions::new().write(true).open(self.path(id)?)?;
        if f.metadata()?.len() < size_gb * GIB {
            f.set_len(size_gb * GIB)?;
        }
        f.sync_all()
    }

    fn delete(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.path(id)?) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    fn len(&self, id: &str) -> io::Result<u64> {
        Ok(fs::metadata(self.path(id)?)?.len())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn files_are_sparse_and_grow() {
        let dir = tempfile::tempdir().unwrap();
        let b = FileBackend::new(dir.path().join("v"));
        b.create("a", 2).unwrap();
        assert_eq!(b.len("a").unwrap(), 2 * GIB);
        let blocks = fs::metadata(dir.path().join("v/a.raw")).unwrap().blocks();
        assert!(blocks < 1024, "not sparse: {blocks} blocks");
        b.extend("a", 3).unwrap();
        assert_eq!(b.len("a").unwrap(), 3 * GIB);
        b.clone_from("a", "b", 4).unwrap();
        assert_eq!(b.len("b").unwrap(), 4 * GIB);
        assert!(b.create("a", 1).is_err());
        assert!(b.create("../x", 1).is_err());
        b.delete("a").unwrap();
        b.delete("a").unwrap();
        assert!(b.len("a").is_err());
    }
}
