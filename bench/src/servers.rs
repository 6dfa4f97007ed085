//! The server life cycle as the API benches drive it over HTTP: the project's
//! quotas lifted, an image uploaded, then `POST /servers` polled until ACTIVE
//! and `DELETE` polled until 404.
//!
//! Polling: 1 ms, then ×1.5 per poll up to 10 ms, as a latency-minded client
//! would (the openstack CLI's `--wait` polls every 5 s).

use std::time::{Duration, Instant};

use anyhow::anyhow;
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

use crate::http::Conn;

pub const COMPUTE: &str = "/compute/v2.1";

/// How long a server may take to reach its outcome before it counts as failed.
const OUTCOME_TIMEOUT: Duration = Duration::from_secs(120);

/// What the creates need: where to send them and what to ask for.
#[derive(Clone)]
pub struct Target {
    pub addr: String,
    pub token: String,
    pub image: String,
    pub flavor: String,
    /// A network to give every server a port on (None: `networks: none`
    /// where the microversion needs it, no port either way).
    pub network: Option<String>,
}

impl Target {
    pub async fn open(&self) -> anyhow::Result<Conn> {
        Conn::open(&self.addr, Some(&self.token)).await
    }
}

/// One create→ACTIVE: the server's id and its latency in ms, or why it failed.
pub type Created = Result<(String, f64), String>;

/// Unlimited instances, cores and RAM for `project`, so the bench measures
/// the API and not the quota check.
pub async fn lift_quotas(admin: &mut Conn, project: &str) -> anyhow::Result<()> {
    admin
        .send(
            Method::PUT,
            &format!("{COMPUTE}/os-quota-sets/{project}"),
            Some(&json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}})),
        )
        .await?
        .expect(200, "lifting the project's quotas")?;
    Ok(())
}

/// Creates a raw image with `properties` and uploads `data`; returns its id.
pub async fn upload_image(
    admin: &mut Conn,
    name: &str,
    properties: Value,
    data: Bytes,
) -> anyhow::Result<String> {
    let mut body = json!({"name": name, "disk_format": "raw", "container_format": "bare"});
    if let (Some(b), Some(p)) = (body.as_object_mut(), properties.as_object()) {
        b.extend(p.clone());
    }
    let a = admin
        .send(Method::POST, "/image/v2/images", Some(&body))
        .await?
        .expect(201, "creating the image")?;
    let id = a.body["id"]
        .as_str()
        .ok_or_else(|| anyhow!("image without id"))?
        .to_string();
    admin
        .send_bytes(
            Method::PUT,
            &format!("/image/v2/images/{id}/file"),
            Some(data),
            "application/octet-stream",
        )
        .await?
        .expect(204, "uploading the image")?;
    Ok(id)
}

/// `POST /servers`, then poll until ACTIVE (Ok) or ERROR / a bad answer (Err).
pub async fn create_to_active(conn: &mut Conn, t: &Target, name: &str) -> anyhow::Result<Created> {
    let mut server = json!({"name": name, "imageRef": t.image, "flavorRef": t.flavor});
    if let Some(net) = &t.network {
        server["networks"] = json!([{"uuid": net}]);
    }
    let t0 = Instant::now();
    let a = conn
        .send(
            Method::POST,
            &format!("{COMPUTE}/servers"),
            Some(&json!({ "server": server })),
        )
        .await?;
    if a.status != 202 {
        return Ok(Err(format!("create answered {}: {}", a.status, a.body)));
    }
    let Some(id) = a.body["server"]["id"].as_str().map(str::to_string) else {
        return Ok(Err(format!("create answered without an id: {}", a.body)));
    };
    let r = poll(conn, &id, t0, |status, body| {
        if status != 200 {
            return Some(Err(format!("show answered {status}: {body}")));
        }
        match body["server"]["status"].as_str() {
            Some("ACTIVE") => Some(Ok(t0.elapsed().as_secs_f64() * 1000.0)),
            Some("ERROR") => Some(Err(format!(
                "server went to ERROR: {}",
                body["server"]["fault"]
            ))),
            _ => None,
        }
    })
    .await?;
    Ok(r.map(|ms| (id, ms)))
}

/// `DELETE /servers/{id}` then poll until 404: Ok(ms) or why not.
pub async fn delete_to_gone(conn: &mut Conn, id: &str) -> anyhow::Result<Result<f64, String>> {
    let t0 = Instant::now();
    let a = conn
        .send(Method::DELETE, &format!("{COMPUTE}/servers/{id}"), None)
        .await?;
    if a.status != 204 {
        return Ok(Err(format!("delete answered {}: {}", a.status, a.body)));
    }
    poll(conn, id, t0, |status, body| match status {
        404 => Some(Ok(t0.elapsed().as_secs_f64() * 1000.0)),
        200 if body["server"]["status"] == "ERROR" => Some(Err(format!(
            "delete went to ERROR: {}",
            body["server"]["fault"]
        ))),
        _ => None,
    })
    .await
}

/// Polls server `id` with backoff until `done` says so (Some(result)).
async fn poll<T>(
    conn: &mut Conn,
    id: &str,
    t0: Instant,
    mut done: impl FnMut(u16, &Value) -> Option<Result<T, String>>,
) -> anyhow::Result<Result<T, String>> {
    let mut wait = Duration::from_millis(1);
    loop {
        let a = conn
            .send(Method::GET, &format!("{COMPUTE}/servers/{id}"), None)
            .await?;
        if let Some(r) = done(a.status, &a.body) {
            return Ok(r);
        }
        if t0.elapsed() > OUTCOME_TIMEOUT {
            return Ok(Err(format!(
                "server {id}: no outcome after {} s",
                OUTCOME_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5).min(Duration::from_millis(10));
    }
}
