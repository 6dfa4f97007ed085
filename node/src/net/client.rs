//! The node's network calls to the controller (node protocol, node-secret
//! bearer): fetch the desired state, report port status, claim and release
//! this host's DHCP port of a network.

use std::time::Duration;

use kiln_controller::protocol::CONTROLLER_PREFIX;
use serde_json::{json, Value};

use super::desired::{Desired, Envelope, Port};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("controller unreachable: {0}")]
    Unreachable(String),
    #[error("controller answered {status} to {what}")]
    Status { what: String, status: u16 },
    #[error("controller sent an unreadable answer to {what}: {detail}")]
    Garbled { what: String, detail: String },
}

/// A client for one node's network endpoints.
#[derive(Clone)]
pub struct Controller {
    base: String,
    bearer: String,
    http: ureq::Agent,
}

impl std::fmt::Debug for Controller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("base", &self.base)
            .finish()
    }
}

enum Method {
    Get,
    Put(Value),
    Delete,
}

impl Controller {
    /// `controller` is the API base (`http://host:port`), `node` this node's id.
    pub fn new(controller: &str, node: &str, secret: &str) -> Controller {
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        Controller {
            base: format!(
                "{}{CONTROLLER_PREFIX}/{node}",
                controller.trim_end_matches('/')
            ),
            bearer: format!("Bearer {secret}"),
            http,
        }
    }

    async fn call(&self, method: Method, rest: String) -> Result<Option<Value>, ClientError> {
        let url = format!("{}{rest}", self.base);
        let http = self.http.clone();
        let bearer = self.bearer.clone();
        tokio::task::spawn_blocking(move || {
            let sent = match method {
                Method::Get => http.get(&url).header("Authorization", &bearer).call(),
                Method::Put(body) => http
                    .put(&url)
                    .header("Authorization", &bearer)
                    .send_json(&body),
                Method::Delete => http.delete(&url).header("Authorization", &bearer).call(),
            };
            let mut resp = sent.map_err(|e| ClientError::Unreachable(e.to_string()))?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                return Err(ClientError::Status { what: url, status });
            }
            if status == 204 {
                return Ok(None);
            }
            resp.body_mut()
                .read_json::<Value>()
                .map(Some)
                .map_err(|e| ClientError::Garbled {
                    what: url,
                    detail: e.to_string(),
                })
        })
        .await
        .map_err(|e| ClientError::Unreachable(e.to_string()))?
    }

    /// The desired state of this node's host, and its raw text (to tell
    /// whether anything changed).
    pub async fn desired(&self) -> Result<(Desired, String), ClientError> {
        let v = self
            .call(Method::Get, "/network".into())
            .await?
            .unwrap_or(Value::Null);
        let text = v.to_string();
        let env: Envelope = serde_json::from_value(v).map_err(|e| ClientError::Garbled {
            what: "desired state".into(),
            detail: e.to_string(),
        })?;
        Ok((env.desired, text))
    }

    pub async fn port_status(&self, port_id: &str, status: &str) -> Result<(), ClientError> {
        self.call(
            Method::Put(json!({ "status": status })),
            format!("/ports/{port_id}/status"),
        )
        .await?;
        Ok(())
    }

    /// This host's DHCP port on `network_id`, created when missing.
    pub async fn claim_dhcp_port(&self, network_id: &str) -> Result<Port, ClientError> {
        let v = self
            .call(
                Method::Put(json!({})),
                format!("/networks/{network_id}/dhcp-port"),
            )
            .await?
            .unwrap_or(Value::Null);
        serde_json::from_value(v.get("port").cloned().unwrap_or(Value::Null)).map_err(|e| {
            ClientError::Garbled {
                what: "DHCP port".into(),
                detail: e.to_string(),
            }
        })
    }

    pub async fn release_dhcp_port(&self, network_id: &str) -> Result<(), ClientError> {
        self.call(Method::Delete, format!("/networks/{network_id}/dhcp-port"))
            .await?;
        Ok(())
    }
}
