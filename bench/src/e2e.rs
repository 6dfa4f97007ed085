//! `kiln-bench e2e`: real guests end to end. Starts `kiln-node up --driver kvm`
//! on a scratch dir and a free port, uploads the firmware (`kiln_firmware=true`)
//! through Glance, then through the real HTTP API: `POST /servers` (no
//! network exists, so no ports) → polled until ACTIVE, which the kvm driver reports only
//! once the guest printed `kiln-firmware: booted` — `sequential` creates one
//! at a time, then `concurrent` creates at once; every server is deleted and
//! polled until gone (404).
//!
//! Polling: 1 ms, then ×1.5 per poll up to 10 ms (as in `kiln-bench api`).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::cloud::{sibling_binary, Cloud};
use crate::http::Conn;
use crate::report::Report;
use crate::stats::summarize;

const COMPUTE: &str = "/compute/v2.1";

#[derive(Args, Debug)]
pub struct E2eArgs {
    /// Creates one after another (each deleted before the next).
    #[arg(long, default_value_t = 50)]
    pub sequential: usize,
    /// Creates issued at once.
    #[arg(long, default_value_t = 20)]
    pub concurrent: usize,
    /// Flavor of every server.
    #[arg(long, default_value = "m1.tiny")]
    pub flavor: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone)]
struct Ctx {
    addr: String,
    token: String,
    image: String,
    flavor: String,
}

pub fn run(args: E2eArgs) -> anyhow::Result<()> {
    if !std::path::Path::new("/dev/kvm").exists() {
        bail!("kiln-bench e2e needs /dev/kvm");
    }
    sibling_binary("kiln-vmm")?;
    let firmware = sibling_binary("kiln-firmware")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cloud = Cloud::start(&["--driver", "kvm"])?;
    let report = rt.block_on(measure(&args, &cloud, &std::fs::read(firmware)?));
    drop(cloud);
    report?.print(args.json);
    Ok(())
}

async fn open(ctx: &Ctx) -> anyhow::Result<Conn> {
    Conn::open(&ctx.addr, Some(&ctx.token)).await
}

async fn measure(args: &E2eArgs, cloud: &Cloud, firmware: &[u8]) -> anyhow::Result<Report> {
    let (token, project) = crate::auth::issue_token(&cloud.addr, cloud).await?;
    let mut admin = Conn::open(&cloud.addr, Some(&token)).await?;
    admin
        .send(
            Method::PUT,
            &format!("{COMPUTE}/os-quota-sets/{project}"),
            Some(&json!({"quota_set": {"instances": -1, "cores": -1, "ram": -1}})),
        )
        .await?
        .expect(200, "lifting the project's quotas")?;
    let a = admin
        .send(Method::GET, &format!("{COMPUTE}/flavors"), None)
        .await?
        .expect(200, "listing flavors")?;
    let flavor = a.body["flavors"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == args.flavor.as_str())
        .and_then(|f| f["id"].as_str())
        .ok_or_else(|| anyhow!("no flavor named {}", args.flavor))?
        .to_string();
    let a = admin
        .send(
            Method::POST,
            "/image/v2/images",
            Some(&json!({"name": "kiln-firmware", "disk_format": "raw",
                         "container_format": "bare", "kiln_firmware": "true"})),
        )
        .await?
        .expect(201, "creating the firmware image")?;
    let image = a.body["id"]
        .as_str()
        .ok_or_else(|| anyhow!("image without id"))?
        .to_string();
    admin
        .send_bytes(
            Method::PUT,
            &format!("/image/v2/images/{image}/file"),
            Some(Bytes::copy_from_slice(firmware)),
            "application/octet-stream",
        )
        .await?
        .expect(204, "uploading the firmware")?;
    let ctx = Ctx {
        addr: cloud.addr.clone(),
        token,
        image,
        flavor,
    };

    // Warm-up: the node fetches the image into its cache on the first create.
    let mut conn = open(&ctx).await?;
    let warm = create_to_active(&mut conn, &ctx).await?;
    let (id, _) = warm.map_err(|e| anyhow!("warm-up create failed: {e}"))?;
    delete_to_gone(&mut conn, &id)
        .await?
        .map_err(|e| anyhow!("warm-up delete: {e}"))?;

    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for _ in 0..args.sequential {
        match create_to_active(&mut conn, &ctx).await? {
            Ok((id, ms)) => {
                create.push(ms);
                match delete_to_gone(&mut conn, &id).await? {
                    Ok(ms) => delete.push(ms),
                    Err(e) => failures.push(e),
                }
            }
            Err(e) => failures.push(e),
        }
    }
    let seq_create = create.clone();

    let mut tasks = Vec::new();
    for _ in 0..args.concurrent {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = open(&ctx).await?;
            create_to_active(&mut c, &ctx).await
        }));
    }
    let mut conc_create = Vec::new();
    let mut ids = Vec::new();
    for t in tasks {
        match t.await?? {
            Ok((id, ms)) => {
                conc_create.push(ms);
                ids.push(id);
            }
            Err(e) => failures.push(e),
        }
    }
    let mut tasks = Vec::new();
    for id in ids {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = open(&ctx).await?;
            delete_to_gone(&mut c, &id).await
        }));
    }
    for t in tasks {
        match t.await?? {
            Ok(ms) => delete.push(ms),
            Err(e) => failures.push(e),
        }
    }

    let mut report = Report::new("e2e", 1);
    let all: Vec<f64> = seq_create.iter().chain(&conc_create).copied().collect();
    let s = summarize(&all).ok_or_else(|| anyhow!("no create reached ACTIVE"))?;
    for (k, v) in [
        ("create_active_p50_ms", json!(r3(s.median))),
        ("create_active_p99_ms", json!(r3(s.p99))),
        ("failures", json!(failures.len())),
        ("first_failure", json!(failures.first())),
    ] {
        report.results.insert(k.into(), v);
    }
    for (name, samples) in [
        ("sequential_create_active", &seq_create),
        ("concurrent_create_active", &conc_create),
        ("delete_gone", &delete),
    ] {
        if let Some(s) = summarize(samples) {
            report.result(
                name,
                json!({"n": s.n, "p50_ms": r3(s.median), "p90_ms": r3(s.p90),
                       "p99_ms": r3(s.p99), "min_ms": r3(s.min), "max_ms": r3(s.max),
                       "spread": r3(s.spread)}),
            );
        }
    }
    report.result(
        "setup",
        json!({"driver": "kvm", "guest": "kiln-firmware (kiln_firmware=true, default command line)",
               "flavor": args.flavor, "sequential": args.sequential,
               "concurrent": args.concurrent, "active_means": "kiln-firmware: booted seen by the node",
               "poll": "1 ms, x1.5 per poll, at most 10 ms"}),
    );
    report.unavailable(
        "rally_boot_and_delete",
        "no OpenStack deployment here; the issue's reference is Rally's median of about 5 s",
    );
    Ok(report)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Polls `id` with backoff until `done` says so (Some(result)).
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
        if t0.elapsed() > Duration::from_secs(120) {
            return Ok(Err(format!("server {id}: no outcome after 120 s")));
        }
        tokio::time::sleep(wait).await;
        wait = wait.mul_f64(1.5).min(Duration::from_millis(10));
    }
}

/// `POST /servers` then poll until ACTIVE: Ok((id, ms)) or why not.
async fn create_to_active(
    conn: &mut Conn,
    ctx: &Ctx,
) -> anyhow::Result<Result<(String, f64), String>> {
    let body = json!({"server": {"name": "e2e", "imageRef": ctx.image,
                                 "flavorRef": ctx.flavor}});
    let t0 = Instant::now();
    let a = conn
        .send(Method::POST, &format!("{COMPUTE}/servers"), Some(&body))
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
async fn delete_to_gone(conn: &mut Conn, id: &str) -> anyhow::Result<Result<f64, String>> {
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
