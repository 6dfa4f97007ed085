//! A small JSON client for the benchmarks: one keep-alive HTTP/1.1 connection,
//! an optional token, and `(status, body)` answers.

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpStream;

pub struct Conn {
    tx: SendRequest<Full<Bytes>>,
    addr: String,
    token: Option<String>,
    /// Extra headers sent with every request (e.g. a microversion).
    pub headers: Vec<(&'static str, String)>,
}

pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Value,
}

impl Conn {
    pub async fn open(addr: &str, token: Option<&str>) -> anyhow::Result<Conn> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connect {addr}"))?;
        stream.set_nodelay(true)?;
        let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn {
            tx,
            addr: addr.to_string(),
            token: token.map(str::to_string),
            headers: Vec::new(),
        })
    }

    /// Send a request; `body` is JSON when given (raw bytes via [`Conn::send_bytes`]).
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<Answer> {
        let bytes = body.map(|b| Bytes::from(b.to_string()));
        self.send_bytes(method, path, bytes, "application/json")
            .await
    }

    pub async fn send_bytes(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        content_type: &str,
    ) -> anyhow::Result<Answer> {
        let mut req = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("Host", self.addr.as_str())
            .header("Accept", "application/json");
        if let Some(t) = &self.token {
            req = req.header("X-Auth-Token", t.as_str());
        }
        for (k, v) in &self.headers {
            req = req.header(*k, v.as_str());
        }
        if body.is_some() {
            req = req.header("Content-Type", content_type);
        }
        let req = req.body(Full::new(body.unwrap_or_default()))?;
        self.tx.ready().await?;
        let resp = self
            .tx
            .send_request(req)
            .await
            .with_context(|| format!("{method} {path}"))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let raw = resp.into_body().collect().await?.to_bytes();
        let body = if raw.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&raw)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned()))
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl Answer {
    /// The answer if its status is `want`, else an error naming both.
    pub fn expect(self, want: u16, what: &str) -> anyhow::Result<Answer> {
        if self.status == want {
            Ok(self)
        } else {
            Err(anyhow!(
                "{what}: expected {want}, got {}: {}",
                self.status,
                self.body
            ))
        }
    }
}
