//! The control socket: a Unix stream socket speaking newline-delimited JSON.
//!
//! How a request travels:
//! 1. A client connects to `control_socket` and writes one JSON object per
//!    line, e.g. `{"action": "pause"}`.
//! 2. The VMM's main thread (`vmm::Vm::run`) polls the listener and clients;
//!    a readable client's complete lines are parsed into `Request`s.
//! 3. Each request is handed to the VM, which acts (kicking vCPUs for
//!    pause/resume, injecting Ctrl-Alt-Del for shutdown) and answers one JSON
//!    line: `{"ok": true, ...}` or `{"ok": false, "error": "..."}`.
//!
//! Actions: `state`, `pause`, `resume`, `shutdown` (optional `timeout_ms`:
//! Ctrl-Alt-Del to the guest, then a hard stop when it expires), `metrics`,
//! `swap-disk` (`id`, `path`: a disk's new backing file, announced to the
//! guest with a config-change interrupt; `path` null or absent empties the
//! slot), `detach-disk` (`id`: the same as `swap-disk` without a path).
//! `state` and `metrics` answers carry `disks`: each slot's id, path (null
//! when empty), bytes and read_only.

use std::io::{Read, Write};
use std::os::unix::io::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Errors setting up the control socket.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("control socket {path} is in use by a running VMM")]
    InUse { path: PathBuf },
    #[error("cannot bind control socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One control request (clients may build it and serialize it: one JSON
/// object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    State,
    Pause,
    Resume,
    Shutdown {
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    Metrics,
    SwapDisk {
        id: String,
        #[serde(default)]
        path: Option<PathBuf>,
    },
    DetachDisk {
        id: String,
    },
}

/// Parse one request line; the error is the answer to send back.
pub fn parse(line: &[u8]) -> Result<Request, Value> {
    serde_json::from_slice(line).map_err(|e| error(&format!("bad request: {e}")))
}

/// An error answer.
pub fn error(msg: &str) -> Value {
    serde_json::json!({"ok": false, "error": msg})
}

/// Longest request line accepted.
const MAX_LINE: usize = 64 * 1024;

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// The listening socket and its connected clients. Dropping it removes the
/// socket file.
pub struct ControlServer {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
}

impl ControlServer {
    /// Bind `path`; a stale socket file (nobody listening) is replaced.
    pub fn bind(path: &Path) -> Result<Self, ControlError> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(ControlError::InUse {
                    path: path.to_path_buf(),
                });
            }
            let _ = std::fs::remove_file(path);
        }
        let listener = UnixListener::bind(path).map_err(|source| ControlError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        let _ = listener.set_nonblocking(true);
        Ok(ControlServer {
            listener,
            path: path.to_path_buf(),
            clients: Vec::new(),
        })
    }

    /// File descriptors to poll: the listener first, then each client.
    pub fn fds(&self) -> Vec<RawFd> {
        std::iter::once(self.listener.as_raw_fd())
            .chain(self.clients.iter().map(|c| c.stream.as_raw_fd()))
            .collect()
    }

    /// Accept waiting connections.
    pub fn accept(&mut self) {
        while let Ok((stream, _)) = self.listener.accept() {
            let _ = stream.set_nonblocking(false);
            self.clients.push(Client {
                stream,
                buf: Vec::new(),
            });
        }
    }

    /// Read from the readable client at `index` (as in `fds()[index + 1]`),
    /// answer each complete line with `handle`. Closed clients are dropped.
    pub fn serve(&mut self, index: usize, handle: &mut dyn FnMut(Request) -> Value) {
        let Some(client) = self.clients.get_mut(index) else {
            return;
        };
        let mut chunk = [0u8; 4096];
        let keep = match client.stream.read(&mut chunk) {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                client.buf.extend_from_slice(&chunk[..n]);
                let mut ok = true;
                while let Some(pos) = client.buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = client.buf.drain(..=pos).collect();
                    let line = &line[..line.len() - 1];
                    if line.iter().all(|b| b.is_ascii_whitespace()) {
                        continue;
                    }
                    let answer = match parse(line) {
                        Ok(req) => handle(req),
                        Err(e) => e,
                    };
                    let mut out = answer.to_string().into_bytes();
                    out.push(b'\n');
                    if client.stream.write_all(&out).is_err() {
                        ok = false;
                        break;
                    }
                }
                ok && client.buf.len() <= MAX_LINE
            }
        };
        if !keep {
            self.clients.remove(index);
        }
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse() {
        assert_eq!(parse(br#"{"action":"state"}"#), Ok(Request::State));
        assert_eq!(
            parse(br#"{"action":"shutdown","timeout_ms":5}"#),
            Ok(Request::Shutdown {
                timeout_ms: Some(5)
            })
        );
        assert_eq!(
            parse(br#"{"action":"shutdown"}"#),
            Ok(Request::Shutdown { timeout_ms: None })
        );
        assert_eq!(
            parse(br#"{"action":"swap-disk","id":"d","path":"/x"}"#),
            Ok(Request::SwapDisk {
                id: "d".into(),
                path: Some("/x".into())
            })
        );
        assert_eq!(
            parse(br#"{"action":"swap-disk","id":"d","path":null}"#),
            Ok(Request::SwapDisk {
                id: "d".into(),
                path: None
            })
        );
        assert_eq!(
            parse(br#"{"action":"detach-disk","id":"d"}"#),
            Ok(Request::DetachDisk { id: "d".into() })
        );
        // What a client (kiln-node) sends is what the VMM reads.
        let swap = Request::SwapDisk {
            id: "vol-1".into(),
            path: Some("/v.raw".into()),
        };
        let line = serde_json::to_vec(&swap).unwrap();
        assert_eq!(parse(&line), Ok(swap));
        assert!(parse(br#"{"action":"explode"}"#).is_err());
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn socket_answers_and_is_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sock");
        let mut server = ControlServer::bind(&path).unwrap();
        let mut client = UnixStream::connect(&path).unwrap();
        client
            .write_all(b"{\"action\":\"state\"}\n\nbad\n")
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        server.accept();
        assert_eq!(server.fds().len(), 2);
        server.serve(
            0,
            &mut |r| serde_json::json!({"ok": true, "req": format!("{r:?}")}),
        );
        let mut got = String::new();
        client
            .set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 1024];
        while got.matches('\n').count() < 2 {
            let n = client.read(&mut buf).unwrap();
            got.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        let lines: Vec<Value> = got
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["req"], "State");
        assert_eq!(lines[1]["ok"], false);
        assert!(matches!(
            ControlServer::bind(&path),
            Err(ControlError::InUse { .. })
        ));
        drop(server);
        assert!(!path.exists());
    }
}
