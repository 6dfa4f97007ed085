//! The shared node secret: generated once into `DATA_DIR/node-secret` (0600) and
//! sent as `Authorization: Bearer <secret>` by both sides; compared in constant
//! time.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use axum::http::{header, HeaderMap};
use rand::RngCore;

pub const SECRET_FILE: &str = "node-secret";

/// Reads the secret in `dir`, creating a fresh random one (mode 0600) if absent.
pub fn load_or_create_secret(dir: &Path) -> std::io::Result<String> {
    let path = dir.join(SECRET_FILE);
    if let Ok(text) = std::fs::read_to_string(&path) {
        let t = text.trim();
        if !t.is_empty() {
            return Ok(t.to_string());
        }
    }
    std::fs::create_dir_all(dir)?;
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    let secret: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(secret.as_bytes())?;
    f.write_all(b"\n")?;
    Ok(secret)
}

/// Whether `headers` carry `Authorization: Bearer <secret>`.
pub fn bearer_matches(headers: &HeaderMap, secret: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), secret.as_bytes());
    if a.len() != b.len() || b.is_empty() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn secret_is_private_and_stable() {
        let dir = tempfile::tempdir().unwrap();
        let s = load_or_create_secret(dir.path()).unwrap();
        assert_eq!(s.len(), 64);
        let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_secret(dir.path()).unwrap(), s);
        let mut h = HeaderMap::new();
        assert!(!bearer_matches(&h, &s));
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {s}").parse().unwrap(),
        );
        assert!(bearer_matches(&h, &s));
        h.insert(header::AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(!bearer_matches(&h, &s));
    }
}
