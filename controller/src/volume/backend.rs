//! Where volume bytes live: a small trait, and sparse files in a directory.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const GIB: u64 = 1 << 30;

/// A volume store. Sizes are in GiB; ids are the records' ids.
pub trait VolumeBackend: Send + Sync + 'static {
    /// A blank volume of `size_gb`.
    fn create(&self, id: &str, size_gb: u64) -> io::Result<()>;
    /// A copy of another volume or snapshot (`source` is its id), grown to `size_gb`.
    fn clone_from(&self, source: &str, id: &str, size_gb: u64) -> io::Result<()>;
    fn extend(&self, id: &str, size_gb: u64) -> io::Result<()>;
    /// A volume of `size_gb` holding the bytes of the file at `src` (an image)
    /// from offset 0; the rest stays zero.
    fn create_from_file(&self, id: &str, src: &Path, size_gb: u64) -> io::Result<()>;
    /// Removes a volume or snapshot; absent is fine.
    fn delete(&self, id: &str) -> io::Result<()>;
    /// The allocated size in bytes (tests and metrics).
    fn len(&self, id: &str) -> io::Result<u64>;
    /// The file holding a volume's bytes, when the backend keeps files a node
    /// on this machine can open.
    fn path_of(&self, _id: &str) -> Option<PathBuf> {
        None
    }
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
    fn path_of(&self, id: &str) -> Option<PathBuf> {
        self.path(id).ok()
    }

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

    fn create_from_file(&self, id: &str, src: &Path, size_gb: u64) -> io::Result<()> {
        let mut input = File::open(src)?;
        if input.metadata()?.len() > size_gb * GIB {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "the image is larger than the volume",
            ));
        }
        fs::create_dir_all(&self.dir)?;
        let path = self.path(id)?;
        let out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)?;
        out.set_len(size_gb * GIB)?;
        // Copy in blocks, skipping all-zero ones so the file stays sparse.
        let mut buf = vec![0u8; 1 << 20];
        let mut offset = 0u64;
        loop {
            let mut filled = 0;
            while filled < buf.len() {
                let n = input.read(&mut buf[filled..])?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            if filled == 0 {
                break;
            }
            let chunk = &buf[..filled];
            if chunk.iter().any(|b| *b != 0) {
                out.write_all_at(chunk, offset)?;
            }
            offset += filled as u64;
            if filled < buf.len() {
                break;
            }
        }
        out.sync_all()
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
        // From an image file: the bytes at offset 0, zeros after, still sparse.
        let img = dir.path().join("img");
        let mut data = vec![0u8; 3 << 20];
        data[..5].copy_from_slice(b"kiln!");
        data[(3 << 20) - 1] = 7;
        fs::write(&img, &data).unwrap();
        b.create_from_file("c", &img, 1).unwrap();
        assert_eq!(b.len("c").unwrap(), GIB);
        let got = fs::read(dir.path().join("v/c.raw")).unwrap();
        assert_eq!(&got[..data.len()], &data[..]);
        assert!(got[data.len()..].iter().all(|b| *b == 0));
        let blocks = fs::metadata(dir.path().join("v/c.raw")).unwrap().blocks();
        assert!(blocks < 8192, "not sparse: {blocks} blocks");
        fs::write(&img, vec![1u8; 10]).unwrap();
        assert!(b.create_from_file("c", &img, 1).is_err(), "exists");
        b.delete("a").unwrap();
        b.delete("a").unwrap();
        assert!(b.len("a").is_err());
    }
}
