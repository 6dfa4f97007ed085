//! Image data on disk: one file per image under `<data_dir>/images/`, written from a
//! stream (hashed on the way, never held whole in memory) and read back in ranges.

use std::io::SeekFrom;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use md5::Md5;
use sha2::{Digest, Sha512};
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// What a finished upload measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    pub size: u64,
    /// md5, hex (Glance's legacy `checksum`).
    pub md5: String,
    /// sha512, hex (`os_hash_value` with `os_hash_algo` = sha512).
    pub sha512: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("image data i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the upload stream failed: {0}")]
    Stream(String),
    #[error("the upload exceeds the limit of {0} bytes")]
    TooLarge(u64),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The image files' folder.
#[derive(Debug, Clone)]
pub struct ImageFiles {
    dir: PathBuf,
}

impl ImageFiles {
    pub fn new(dir: PathBuf) -> Self {
        ImageFiles { dir }
    }

    pub fn path(&self, image_id: &str) -> PathBuf {
        self.dir.join(image_id)
    }

    fn part(&self, image_id: &str) -> PathBuf {
        self.dir.join(format!("{image_id}.part"))
    }

    /// Streams `body` into the image's file (via a `.part` file renamed at the end,
    /// so a half upload never looks complete). Fails past `limit` bytes.
    pub async fn write<S, E>(
        &self,
        image_id: &str,
        mut body: S,
        limit: u64,
    ) -> Result<Written, FileError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        tokio::fs::create_dir_all(&self.dir).await?;
        let part = self.part(image_id);
        let result = async {
            let mut file = tokio::fs::File::create(&part).await?;
            let mut md5 = Md5::new();
            let mut sha = Sha512::new();
            let mut size: u64 = 0;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| FileError::Stream(e.to_string()))?;
                size += chunk.len() as u64;
                if size > limit {
                    return Err(FileError::TooLarge(limit));
                }
                md5.update(&chunk);
                sha.update(&chunk);
                file.write_all(&chunk).await?;
            }
            file.sync_all().await?;
            Ok(Written {
                size,
                md5: hex(&md5.finalize()),
                sha512: hex(&sha.finalize()),
            })
        }
        .await;
        match result {
            Ok(w) => {
                tokio::fs::rename(&part, self.path(image_id)).await?;
                Ok(w)
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                Err(e)
            }
        }
    }

    /// Opens the file positioned at `start`, limited to `len` bytes.
    pub async fn open_range(
        &self,
        image_id: &str,
        start: u64,
        len: u64,
    ) -> Result<tokio::io::Take<tokio::fs::File>, FileError> {
        let mut f = tokio::fs::File::open(self.path(image_id)).await?;
        f.seek(SeekFrom::Start(start)).await?;
        Ok(f.take(len))
    }

    /// Removes the image's file (and any partial upload); missing files are fine.
    pub fn remove(&self, image_id: &str) {
        for p in [self.path(image_id), self.part(image_id)] {
            remove_quietly(&p);
        }
    }
}

fn remove_quietly(p: &Path) {
    if let Err(e) = std::fs::remove_file(p) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %p.display(), error = %e, "cannot remove image file");
        }
    }
}

/// A `Range` that lies outside the file (answered with 416).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("requested range not satisfiable")]
pub struct Unsatisfiable;

/// A parsed `Range: bytes=...` header against a file of `size` bytes:
/// `Ok(Some((start, end_inclusive)))`, `Ok(None)` for no/ignored range, `Err(())`
/// when unsatisfiable (416).
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<(u64, u64)>, Unsatisfiable> {
    let Some(h) = header else { return Ok(None) };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        // Multiple ranges: served whole, as Glance does.
        return Ok(None);
    }
    let Some((a, b)) = spec.split_once('-') else {
        return Err(Unsatisfiable);
    };
    let (a, b) = (a.trim(), b.trim());
    if size == 0 {
        return Err(Unsatisfiable);
    }
    let range = if a.is_empty() {
        let n: u64 = b.parse().map_err(|_| Unsatisfiable)?;
        if n == 0 {
            return Err(Unsatisfiable);
        }
        (size.saturating_sub(n), size - 1)
    } else {
        let start: u64 = a.parse().map_err(|_| Unsatisfiable)?;
        let end = if b.is_empty() {
            size - 1
        } else {
            b.parse::<u64>().map_err(|_| Unsatisfiable)?.min(size - 1)
        };
        (start, end)
    };
    if range.0 > range.1 || range.0 >= size {
        return Err(Unsatisfiable);
    }
    Ok(Some(range))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-3"), 10), Ok(Some((0, 3))));
        assert_eq!(parse_range(Some("bytes=5-"), 10), Ok(Some((5, 9))));
        assert_eq!(parse_range(Some("bytes=-4"), 10), Ok(Some((6, 9))));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), Ok(Some((8, 9))));
        assert_eq!(parse_range(Some("bytes=10-12"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=4-2"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("bytes=x-2"), 10), Err(Unsatisfiable));
        assert_eq!(parse_range(Some("items=1-2"), 10), Ok(None));
    }

    #[tokio::test]
    async fn write_hashes_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let files = ImageFiles::new(dir.path().join("images"));
        let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
            Ok(Bytes::from_static(b"hello ")),
            Ok(Bytes::from_static(b"world")),
        ];
        let w = files
            .write("i1", futures::stream::iter(chunks), 100)
            .await
            .unwrap();
        assert_eq!(w.size, 11);
        assert_eq!(w.md5, "5eb63bbbe01eeed093cb22bb8f5acdc3");
        assert!(w.sha512.starts_with("309ecc489c12d6eb4cc40f50c902f2b4"));
        let mut r = files.open_range("i1", 6, 5).await.unwrap();
        let mut s = String::new();
        r.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "world");
        let too_big: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"0123456789"))];
        assert!(matches!(
            files.write("i2", futures::stream::iter(too_big), 5).await,
            Err(FileError::TooLarge(5))
        ));
        assert!(!files.path("i2").exists());
        files.remove("i1");
        assert!(!files.path("i1").exists());
    }
}
