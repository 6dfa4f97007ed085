//! A cloud to measure: a `kiln-node up` started for the run (stopped on drop),
//! or an existing one named by its openrc.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};

pub struct Cloud {
    child: Option<Child>,
    scratch: Option<PathBuf>,
    /// `host:port` of the API.
    pub addr: String,
    pub openrc: BTreeMap<String, String>,
}

/// A sibling binary of this one (`target/<profile>/NAME`).
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .ok_or_else(|| anyhow!("no directory for {}", exe.display()))?;
    let path = dir.join(name);
    if !path.exists() {
        bail!(
            "{} not found: build it first (cargo build --release -p {name})",
            path.display()
        );
    }
    Ok(path)
}

impl Cloud {
    /// Start `kiln-node up` on a free loopback port with a scratch data dir.
    pub fn start(extra: &[&str]) -> anyhow::Result<Cloud> {
        let node = sibling_binary("kiln-node")?;
        let scratch = std::env::temp_dir().join(format!("kiln-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&scratch);
        std::fs::create_dir_all(&scratch)?;
        let mut child = Command::new(node)
            .arg("up")
            .arg("--data-dir")
            .arg(&scratch)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn kiln-node up")?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("kiln: ready at ") {
                    let _ = tx.send(url.trim().to_string());
                }
            }
        });
        let mut cloud = Cloud {
            child: Some(child),
            scratch: Some(scratch.clone()),
            addr: String::new(),
            openrc: BTreeMap::new(),
        };
        let url = rx
            .recv_timeout(Duration::from_secs(60))
            .map_err(|_| anyhow!("kiln-node up printed no ready line within 60 s"))?;
        cloud.addr = host_port(&url)?;
        cloud.openrc = parse_openrc(&scratch.join("openrc"))?;
        Ok(cloud)
    }

    /// Measure an already running cloud.
    pub fn from_openrc(path: &Path) -> anyhow::Result<Cloud> {
        let openrc = parse_openrc(path)?;
        let url = openrc
            .get("OS_AUTH_URL")
            .ok_or_else(|| anyhow!("{} has no OS_AUTH_URL", path.display()))?;
        Ok(Cloud {
            child: None,
            scratch: None,
            addr: host_port(url)?,
            openrc,
        })
    }

    /// The data dir of a cloud this bench started.
    pub fn data_dir(&self) -> Option<&Path> {
        self.scratch.as_deref()
    }

    pub fn env(&self, key: &str) -> anyhow::Result<&str> {
        self.openrc
            .get(key)
            .map(String::as_str)
            .ok_or_else(|| anyhow!("openrc lacks {key}"))
    }
}

impl Drop for Cloud {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; SIGTERM asks for a clean stop.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn host_port(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http URL: {url}"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_string())
}

/// Parse `export K='V'` lines of an openrc.
pub fn parse_openrc(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut env = BTreeMap::new();
    for line in text.lines() {
        let Some((k, v)) = line
            .trim()
            .strip_prefix("export ")
            .and_then(|r| r.split_once('='))
        else {
            continue;
        };
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        env.insert(k.trim().to_string(), v.to_string());
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openrc_lines_parse_with_either_quote() {
        let dir = std::env::temp_dir().join(format!("kiln-bench-openrc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("openrc");
        std::fs::write(
            &p,
            "# c\nexport OS_AUTH_URL='http://127.0.0.1:5000/v3'\nexport OS_PASSWORD=\"a=b\"\n",
        )
        .unwrap();
        let env = parse_openrc(&p).unwrap();
        assert_eq!(env["OS_AUTH_URL"], "http://127.0.0.1:5000/v3");
        assert_eq!(env["OS_PASSWORD"], "a=b");
        assert_eq!(host_port(&env["OS_AUTH_URL"]).unwrap(), "127.0.0.1:5000");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
