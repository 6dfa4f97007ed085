//! The files a user sources to reach the cloud: `openrc`, `clouds.yaml` (cloud
//! `kiln`) and `admin-password`, all mode 0600 in the data dir.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::identity::bootstrap::{ADMIN_PROJECT, ADMIN_USER, DEFAULT_DOMAIN_NAME};
use crate::identity::catalog::REGION;

pub const OPENRC: &str = "openrc";
pub const CLOUDS_YAML: &str = "clouds.yaml";
pub const ADMIN_PASSWORD: &str = "admin-password";
pub const CLOUD_NAME: &str = "kiln";

/// Writes `contents` to `path` with mode 0600, atomically (temp file + rename).
pub fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(contents.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// `'value'` for a POSIX shell.
fn shell_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "'\\''"))
}

/// `'value'` for YAML (single-quoted scalar).
fn yaml_quote(v: &str) -> String {
    format!("'{}'", v.replace('\'', "''"))
}

pub fn openrc(auth_url: &str, password: &str) -> String {
    let vars = [
        ("OS_AUTH_URL", auth_url),
        ("OS_USERNAME", ADMIN_USER),
        ("OS_PASSWORD", password),
        ("OS_PROJECT_NAME", ADMIN_PROJECT),
        ("OS_USER_DOMAIN_NAME", DEFAULT_DOMAIN_NAME),
        ("OS_PROJECT_DOMAIN_NAME", DEFAULT_DOMAIN_NAME),
        ("OS_IDENTITY_API_VERSION", "3"),
        ("OS_REGION_NAME", REGION),
        ("OS_INTERFACE", "public"),
    ];
    vars.iter()
        .map(|(k, v)| format!("export {k}={}\n", shell_quote(v)))
        .collect()
}

pub fn clouds_yaml(auth_url: &str, password: &str) -> String {
    format!(
        "clouds:\n  {CLOUD_NAME}:\n    auth:\n      auth_url: {}\n      username: {}\n      password: {}\n      project_name: {}\n      user_domain_name: {}\n      project_domain_name: {}\n    region_name: {}\n    interface: 'public'\n    identity_api_version: 3\n",
        yaml_quote(auth_url),
        yaml_quote(ADMIN_USER),
        yaml_quote(password),
        yaml_quote(ADMIN_PROJECT),
        yaml_quote(DEFAULT_DOMAIN_NAME),
        yaml_quote(DEFAULT_DOMAIN_NAME),
        yaml_quote(REGION),
    )
}

/// Where the client files went.
#[derive(Debug, Clone)]
pub struct ClientFiles {
    pub openrc: PathBuf,
    pub clouds_yaml: PathBuf,
}

/// (Re)writes `openrc` and `clouds.yaml` in `dir` for `auth_url`.
pub fn write_all(dir: &Path, auth_url: &str, password: &str) -> std::io::Result<ClientFiles> {
    let files = ClientFiles {
        openrc: dir.join(OPENRC),
        clouds_yaml: dir.join(CLOUDS_YAML),
    };
    write_private(&files.openrc, &openrc(auth_url, password))?;
    write_private(&files.clouds_yaml, &clouds_yaml(auth_url, password))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrc_is_one_quoted_export_per_line() {
        let rc = openrc("http://127.0.0.1:1/v3", "it's");
        assert!(rc.contains("export OS_AUTH_URL='http://127.0.0.1:1/v3'\n"));
        assert!(rc.contains("export OS_PASSWORD='it'\\''s'\n"));
        assert_eq!(rc.lines().count(), 9);
        assert!(rc.lines().all(|l| l.starts_with("export OS_")));
    }

    #[test]
    fn clouds_yaml_quotes_values() {
        let y = clouds_yaml("http://h/v3", "a'b");
        assert!(y.contains("  kiln:\n"));
        assert!(y.contains("password: 'a''b'\n"));
    }

    #[test]
    fn files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = write_all(dir.path(), "http://h/v3", "pw").unwrap();
        for p in [&f.openrc, &f.clouds_yaml] {
            let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }
}
