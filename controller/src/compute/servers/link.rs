//! The controller → node side of the protocol: a pooled HTTP client (ureq, run on
//! the blocking pool) that delivers [`Dispatch`]es and fetches console output,
//! and [`deliver`], which hands undeliverable calls back to the state machine.

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::{Call, Dispatch};
use crate::compute::Compute;
use crate::protocol::ConsoleOutput;

/// How often nodes heartbeat (a node silent for 60 s counts as down).
pub const HEARTBEAT_SECS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("node {url} is unreachable: {detail}")]
    Unreachable { url: String, detail: String },
    #[error("node {url} refused the call with status {status}")]
    Refused { url: String, status: u16 },
    #[error("node {url} answered something unreadable: {detail}")]
    Garbled { url: String, detail: String },
}

/// The controller's client for node APIs, plus the facts it tells nodes.
pub struct NodeLink {
    secret: String,
    agent: ureq::Agent,
    /// Changes on every controller start (nodes resync when it does).
    pub boot: String,
    /// How often nodes should heartbeat.
    pub heartbeat_secs: u64,
}

impl NodeLink {
    pub fn new(secret: String, heartbeat_secs: u64) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        NodeLink {
            secret,
            agent,
            boot: uuid::Uuid::new_v4().to_string(),
            heartbeat_secs,
        }
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn bearer(&self) -> String {
        format!("Bearer {}", self.secret)
    }

    fn check(
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<ureq::http::Response<ureq::Body>, LinkError> {
        let resp = r.map_err(|e| LinkError::Unreachable {
            url: url.to_string(),
            detail: e.to_string(),
        })?;
        let status = resp.status().as_u16();
        if !(200..300).contains(&status) {
            return Err(LinkError::Refused {
                url: url.to_string(),
                status,
            });
        }
        Ok(resp)
    }

    fn post<T: Serialize>(&self, url: &str, body: &T) -> Result<(), LinkError> {
        let r = self
            .agent
            .post(url)
            .header("Authorization", &self.bearer())
            .send_json(body);
        Self::check(url, r).map(|_| ())
    }

    /// Delivers one call (blocking).
    pub fn send(&self, d: &Dispatch) -> Result<(), LinkError> {
        match &d.call {
            Call::Spawn(spawn) => self.post(&format!("{}/servers", d.url), spawn.as_ref()),
            Call::Act(a) => self.post(&format!("{}/servers/{}/action", d.url, d.server_id), a),
            Call::Delete => {
                let url = format!("{}/servers/{}", d.url, d.server_id);
                let r = self
                    .agent
                    .delete(&url)
                    .header("Authorization", &self.bearer())
                    .call();
                Self::check(&url, r).map(|_| ())
            }
        }
    }

    /// The last `lines` lines of a server's console (blocking).
    pub fn console(
        &self,
        node_url: &str,
        id: &str,
        lines: Option<u64>,
    ) -> Result<String, LinkError> {
        let url = format!("{node_url}/servers/{id}/console");
        let mut req = self.agent.get(&url).header("Authorization", &self.bearer());
        if let Some(n) = lines {
            req = req.query("lines", n.to_string());
        }
        let mut resp = Self::check(&url, req.call())?;
        let out: ConsoleOutput = resp
            .body_mut()
            .read_json()
            .map_err(|e| LinkError::Garbled {
                url: url.clone(),
                detail: e.to_string(),
            })?;
        Ok(out.output)
    }
}

/// Sends the calls on the blocking pool; a call that cannot be delivered goes back
/// to the state machine (a build is retried on another node, and so on).
pub async fn deliver(compute: Arc<Compute>, link: Arc<NodeLink>, calls: Vec<Dispatch>) {
    let mut queue = calls;
    while let Some(d) = queue.pop() {
        let (c, l) = (compute.clone(), link.clone());
        let more = tokio::task::spawn_blocking(move || match l.send(&d) {
            Ok(()) => Vec::new(),
            Err(e) => {
                tracing::warn!(server = %d.server_id, node = %d.node, error = %e, "node call failed");
                c.dispatch_failed(&d, &e.to_string()).unwrap_or_else(|e| {
                    tracing::error!(error = %e, "cannot record a failed node call");
                    Vec::new()
                })
            }
        })
        .await
        .unwrap_or_default();
        queue.extend(more);
    }
}

/// Sends calls without waiting (after the request that made them answered).
pub fn deliver_later(compute: Arc<Compute>, link: Arc<NodeLink>, calls: Vec<Dispatch>) {
    if !calls.is_empty() {
        tokio::spawn(deliver(compute, link, calls));
    }
}
