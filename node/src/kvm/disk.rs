//! Root disks: a copy-on-write clone of the cached image (FICLONE) where the
//! file system supports reflinks, else a sparse copy (SEEK_DATA/SEEK_HOLE);
//! empty sparse disks; growing a disk to a flavor's size.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;

/// How a root disk was made (logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloneKind {
    Reflink,
    SparseCopy,
}

/// `FICLONE` = `_IOW(0x94, 9, int)`.
const FICLONE: libc::c_ulong = 0x4004_9409;

/// Makes `dst` a copy of `src`: a reflink when possible, else a sparse copy.
pub fn clone_file(src: &Path, dst: &Path) -> io::Result<CloneKind> {
    let from = File::open(src)?;
    let to = File::create(dst)?;
    // SAFETY: FICLONE takes the source descriptor as its argument; both
    // descriptors are open for the duration of the call.
    let r = unsafe { libc::ioctl(to.as_raw_fd(), FICLONE as _, from.as_raw_fd()) };
    if r == 0 {
        return Ok(CloneKind::Reflink);
    }
    sparse_copy(&from, &to)?;
    Ok(CloneKind::SparseCopy)
}

fn lseek(f: &File, offset: i64, whence: libc::c_int) -> io::Result<Option<i64>> {
    // SAFETY: lseek on an open descriptor has no memory effects.
    let r = unsafe { libc::lseek(f.as_raw_fd(), offset, whence) };
    if r >= 0 {
        return Ok(Some(r));
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENXIO) {
        Ok(None)
    } else {
        Err(e)
    }
}

/// Copies only the data extents of `from` (holes stay holes).
fn sparse_copy(from: &File, to: &File) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let len = from.metadata()?.len();
    to.set_len(len)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut pos: i64 = 0;
    while let Some(start) = lseek(from, pos, libc::SEEK_DATA)? {
        let end = lseek(from, start, libc::SEEK_HOLE)?.unwrap_or(len as i64);
        let mut at = start as u64;
        while at < end as u64 {
            let want = ((end as u64 - at) as usize).min(buf.len());
            let n = from.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            to.write_all_at(&buf[..n], at)?;
            at += n as u64;
        }
        pos = end;
        if pos as u64 >= len {
            break;
        }
    }
    Ok(())
}

/// Creates (or truncates) `path` as an empty sparse file of `bytes`.
pub fn create_sparse(path: &Path, bytes: u64) -> io::Result<()> {
    File::create(path)?.set_len(bytes)
}

/// Grows `path` to at least `bytes` (never shrinks).
pub fn grow(path: &Path, bytes: u64) -> io::Result<()> {
    let f = std::fs::OpenOptions::new().write(true).open(path)?;
    if f.metadata()?.len() < bytes {
        f.set_len(bytes)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::{FileExt, MetadataExt};

    use super::*;

    #[test]
    fn clone_keeps_data_and_holes() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let f = File::create(&src).unwrap();
        f.set_len(64 << 20).unwrap();
        f.write_all_at(b"head", 0).unwrap();
        f.write_all_at(b"tail", (64 << 20) - 4).unwrap();
        drop(f);
        let dst = dir.path().join("dst");
        let kind = clone_file(&src, &dst).unwrap();
        let out = File::open(&dst).unwrap();
        let mut b = [0u8; 4];
        out.read_exact_at(&mut b, 0).unwrap();
        assert_eq!(&b, b"head");
        out.read_exact_at(&mut b, (64 << 20) - 4).unwrap();
        assert_eq!(&b, b"tail");
        let meta = out.metadata().unwrap();
        assert_eq!(meta.len(), 64 << 20);
        if kind == CloneKind::SparseCopy {
            // Two small extents, not 64 MiB of blocks.
            assert!(meta.blocks() * 512 < 8 << 20, "{} blocks", meta.blocks());
        }
        grow(&dst, 128 << 20).unwrap();
        grow(&dst, 1).unwrap();
        assert_eq!(std::fs::metadata(&dst).unwrap().len(), 128 << 20);
    }
}
