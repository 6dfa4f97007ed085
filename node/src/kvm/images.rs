//! The node's image cache (`DATA_DIR/images/<id>`): each image fetched once
//! from the controller's node-protocol image endpoint, streamed to a temporary
//! file while hashed, verified against Glance's `os_hash_value` (or the md5
//! `checksum`), qcow2 converted to raw with `qemu-img`, then renamed into place.
//! Bounded in size: images no server uses are evicted, least recently used
//! first.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use kiln_controller::protocol::{
    CONTROLLER_PREFIX, IMAGE_HEADER_CHECKSUM as HEADER_CHECKSUM,
    IMAGE_HEADER_DISK_FORMAT as HEADER_DISK_FORMAT, IMAGE_HEADER_HASH_ALGO as HEADER_HASH_ALGO,
    IMAGE_HEADER_HASH_VALUE as HEADER_HASH_VALUE,
};
use md5::Md5;
use sha2::{Digest, Sha256, Sha512};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {id}: the controller is unreachable: {msg}")]
    Unreachable { id: String, msg: String },
    #[error("image {id}: the controller answered {status}")]
    Status { id: String, status: u16 },
    #[error("image {id}: {algo} mismatch (expected {expected}, got {got})")]
    Hash {
        id: String,
        algo: String,
        expected: String,
        got: String,
    },
    #[error("image {id}: qemu-img convert failed: {msg}")]
    Convert { id: String, msg: String },
    #[error("image {0}: not cached and no controller to fetch it from")]
    NoSource(String),
    #[error("image cache I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Where images come from: the controller's node protocol.
#[derive(Debug, Clone)]
pub struct ImageSource {
    pub controller: String,
    pub node_id: String,
    pub secret: String,
}

pub struct ImageCache {
    dir: PathBuf,
    source: Option<ImageSource>,
    /// Evict (unused images) beyond this many bytes.
    limit: u64,
    /// One fetch per image at a time.
    fetching: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The hash the image's record promises.
enum Expected {
    Sha512(String),
    Sha256(String),
    Md5(String),
    None,
}

struct Hasher {
    sha512: Option<Sha512>,
    sha256: Option<Sha256>,
    md5: Option<Md5>,
}

impl Hasher {
    fn new(e: &Expected) -> Self {
        Hasher {
            sha512: matches!(e, Expected::Sha512(_)).then(Sha512::new),
            sha256: matches!(e, Expected::Sha256(_)).then(Sha256::new),
            md5: matches!(e, Expected::Md5(_)).then(Md5::new),
        }
    }
    fn update(&mut self, b: &[u8]) {
        if let Some(h) = &mut self.sha512 {
            h.update(b);
        }
        if let Some(h) = &mut self.sha256 {
            h.update(b);
        }
        if let Some(h) = &mut self.md5 {
            h.update(b);
        }
    }
    /// (algorithm, hex) of what was hashed.
    fn finish(self) -> Option<(&'static str, String)> {
        if let Some(h) = self.sha512 {
            return Some(("sha512", hex(&h.finalize())));
        }
        if let Some(h) = self.sha256 {
            return Some(("sha256", hex(&h.finalize())));
        }
        self.md5.map(|h| ("md5", hex(&h.finalize())))
    }
}

impl ImageCache {
    pub fn new(dir: PathBuf, source: Option<ImageSource>, limit: u64) -> Self {
        ImageCache {
            dir,
            source,
            limit,
            fetching: Mutex::new(HashMap::new()),
        }
    }

    /// Where image `id` is (or will be) cached.
    pub fn path(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The raw image file, fetching it first if it is not cached.
    pub async fn get(&self, id: &str) -> Result<PathBuf, ImageError> {
        let path = self.path(id);
        if path.is_file() {
            touch(&path);
            return Ok(path);
        }
        let lock = {
            let mut f = self.fetching.lock().unwrap_or_else(|e| e.into_inner());
            f.entry(id.to_string()).or_default().clone()
        };
        let _held = lock.lock().await;
        if path.is_file() {
            touch(&path);
            return Ok(path);
        }
        let source = self
            .source
            .clone()
            .ok_or_else(|| ImageError::NoSource(id.to_string()))?;
        let dir = self.dir.clone();
        let id2 = id.to_string();
        let result = tokio::task::spawn_blocking(move || fetch(&source, &dir, &id2))
            .await
            .map_err(|e| ImageError::Io(std::io::Error::other(e.to_string())))?;
        self.fetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        result?;
        Ok(path)
    }

    /// Removes least recently used images not in `in_use` until the cache is
    /// within its limit.
    pub fn evict(&self, in_use: &HashSet<String>) {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return;
        };
        let mut files: Vec<(SystemTime, u64, PathBuf, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_str()?.to_string();
                let meta = e.metadata().ok()?;
                if !meta.is_file() || name.starts_with('.') {
                    return None;
                }
                Some((meta.modified().ok()?, meta.len(), e.path(), name))
            })
            .collect();
        let mut total: u64 = files.iter().map(|f| f.1).sum();
        files.sort_by_key(|f| f.0);
        for (_, len, path, name) in files {
            if total <= self.limit {
                break;
            }
            if in_use.contains(&name) {
                continue;
            }
            if std::fs::remove_file(&path).is_ok() {
                tracing::info!(image = %name, bytes = len, "image evicted from the cache");
                total = total.saturating_sub(len);
            }
        }
    }
}

/// Marks an image used now (the eviction order).
fn touch(path: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(path) {
        let _ = f.set_modified(SystemTime::now());
    }
}

/// Downloads image `id` into `dir/id` (blocking).
fn fetch(source: &ImageSource, dir: &Path, id: &str) -> Result<(), ImageError> {
    std::fs::create_dir_all(dir)?;
    let url = format!(
        "{}{CONTROLLER_PREFIX}/{}/images/{id}/file",
        source.controller.trim_end_matches('/'),
        source.node_id
    );
    let http: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut resp = http
        .get(&url)
        .header("Authorization", &format!("Bearer {}", source.secret))
        .call()
        .map_err(|e| ImageError::Unreachable {
            id: id.to_string(),
            msg: e.to_string(),
        })?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(ImageError::Status {
            id: id.to_string(),
            status,
        });
    }
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let format = header(HEADER_DISK_FORMAT).unwrap_or_else(|| "raw".into());
    let expected = match (
        header(HEADER_HASH_ALGO).as_deref(),
        header(HEADER_HASH_VALUE),
    ) {
        (Some("sha512"), Some(v)) => Expected::Sha512(v),
        (Some("sha256"), Some(v)) => Expected::Sha256(v),
        _ => match header(HEADER_CHECKSUM) {
            Some(v) => Expected::Md5(v),
            None => Expected::None,
        },
    };
    let tmp = dir.join(format!(".{id}.{}.part", std::process::id()));
    let result = (|| {
        let mut hasher = Hasher::new(&expected);
        let mut out = std::fs::File::create(&tmp)?;
        let mut body = resp.body_mut().with_config().limit(u64::MAX).reader();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = body.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
        }
        out.sync_all()?;
        let want = match &expected {
            Expected::Sha512(v) | Expected::Sha256(v) | Expected::Md5(v) => Some(v.clone()),
            Expected::None => None,
        };
        if let (Some(want), Some((algo, got))) = (want, hasher.finish()) {
            if !want.eq_ignore_ascii_case(&got) {
                return Err(ImageError::Hash {
                    id: id.to_string(),
                    algo: algo.to_string(),
                    expected: want,
                    got,
                });
            }
        }
        if format == "qcow2" {
            let raw = dir.join(format!(".{id}.{}.raw", std::process::id()));
            let out = std::process::Command::new("qemu-img")
                .args(["convert", "-f", "qcow2", "-O", "raw"])
                .arg(&tmp)
                .arg(&raw)
                .output()
                .map_err(|e| ImageError::Convert {
                    id: id.to_string(),
                    msg: e.to_string(),
                })?;
            if !out.status.success() {
                let _ = std::fs::remove_file(&raw);
                return Err(ImageError::Convert {
                    id: id.to_string(),
                    msg: String::from_utf8_lossy(&out.stderr).trim().to_string(),
                });
            }
            std::fs::rename(&raw, &tmp)?;
        }
        std::fs::rename(&tmp, dir.join(id))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    tracing::info!(image = %id, format = %format, ok = result.is_ok(), "image fetched");
    result
}
