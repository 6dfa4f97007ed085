//! `kiln-bench auth`: the cost of authentication on the API path.
//!
//! Starts a real all-in-one cloud (`kiln-node up`) on a free loopback port and,
//! in the same run, drives three request kinds under C concurrent connections:
//! - `unauth`: `GET /v3` — the version document, no token (the baseline);
//! - `auth`: `GET /v3/auth/tokens` — token validation (X-Auth-Token + X-Subject-Token);
//! - `auth_get`: `GET /v3/projects/{id}` — a small authenticated read.
//!
//! Each kind runs R rounds, interleaved so drift hits all kinds alike; req/s is
//! the median round, latencies are pooled over all rounds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

use crate::cloud::Cloud;
use crate::http::Conn;
use crate::report::Report;
use crate::stats::summarize;

#[derive(Args, Debug)]
pub struct AuthArgs {
    /// Concurrent connections (each sends requests back to back, keep-alive).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Seconds per round of each request kind.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Rounds of each request kind.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Use this running cloud's openrc instead of starting one.
    #[arg(long)]
    pub openrc: Option<PathBuf>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One request kind: method-less GET path plus headers.
#[derive(Clone)]
struct Kind {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
}

struct Round {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies_ms: Vec<f64>,
}

pub fn run(args: AuthArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cloud = match &args.openrc {
        Some(path) => Cloud::from_openrc(path)?,
        None => Cloud::start(&[])?,
    };
    let report = rt.block_on(measure(&args, &cloud))?;
    drop(cloud);
    report.print(args.json);
    Ok(())
}

async fn measure(args: &AuthArgs, cloud: &Cloud) -> anyhow::Result<Report> {
    let addr = cloud.addr.clone();
    let (token, project_id) = issue_token(&addr, cloud).await?;
    let auth = vec![
        ("X-Auth-Token", token.clone()),
        ("X-Subject-Token", token.clone()),
    ];
    let kinds = [
        Kind {
            name: "unauth",
            path: "/v3".into(),
            headers: vec![],
        },
        Kind {
            name: "auth",
            path: "/v3/auth/tokens".into(),
            headers: auth,
        },
        Kind {
            name: "auth_get",
            path: format!("/v3/projects/{project_id}"),
            headers: vec![("X-Auth-Token", token.clone())],
        },
    ];
    // Warm up every path once (connection set-up, caches) before measuring.
    for k in &kinds {
        let r = drive(
            &addr,
            k,
            args.concurrency.min(4),
            Duration::from_millis(300),
        )
        .await?;
        if r.requests == 0 || r.errors > 0 {
            bail!("warm-up of {} failed: {} errors", k.name, r.errors);
        }
    }
    let mut rounds: Vec<Vec<Round>> = kinds.iter().map(|_| Vec::new()).collect();
    let dur = Duration::from_secs_f64(args.seconds);
    for _ in 0..args.runs {
        for (i, k) in kinds.iter().enumerate() {
            rounds[i].push(drive(&addr, k, args.concurrency, dur).await?);
        }
    }

    let mut report = Report::new("auth", args.runs);
    let mut rps_median = Vec::new();
    for (k, rs) in kinds.iter().zip(&rounds) {
        let rps: Vec<f64> = rs
            .iter()
            .map(|r| r.requests as f64 / r.elapsed.as_secs_f64())
            .collect();
        let lat: Vec<f64> = rs.iter().flat_map(|r| r.latencies_ms.clone()).collect();
        let rps_s = summarize(&rps).ok_or_else(|| anyhow!("no rounds for {}", k.name))?;
        let lat_s = summarize(&lat).ok_or_else(|| anyhow!("no requests for {}", k.name))?;
        let errors: usize = rs.iter().map(|r| r.errors).sum();
        report.result(
            k.name,
            json!({
                "path": k.path.split('/').take(3).collect::<Vec<_>>().join("/"),
                "rps": round2(rps_s.median),
                "rps_min": round2(rps_s.min),
                "rps_max": round2(rps_s.max),
                "rps_spread": round3(rps_s.spread),
                "p50_ms": round3(lat_s.median),
                "p90_ms": round3(lat_s.p90),
                "p99_ms": round3(lat_s.p99),
                "max_ms": round3(lat_s.max),
                "requests": lat_s.n,
                "errors": errors,
            }),
        );
        rps_median.push(rps_s.median);
    }
    report.ratio("auth_over_unauth_rps", rps_median[1], rps_median[0]);
    report.ratio("auth_get_over_unauth_rps", rps_median[2], rps_median[0]);
    report.result(
        "setup",
        json!({"concurrency": args.concurrency, "seconds_per_round": args.seconds}),
    );
    Ok(report)
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Issue a project-scoped token for the cloud's admin; returns (token, project id).
pub(crate) async fn issue_token(addr: &str, cloud: &Cloud) -> anyhow::Result<(String, String)> {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": cloud.env("OS_USERNAME")?,
            "domain": {"name": cloud.env("OS_USER_DOMAIN_NAME")?},
            "password": cloud.env("OS_PASSWORD")?}}},
        "scope": {"project": {"name": cloud.env("OS_PROJECT_NAME")?,
                              "domain": {"name": cloud.env("OS_PROJECT_DOMAIN_NAME")?}}}}});
    let answer = Conn::open(addr, None)
        .await?
        .send(Method::POST, "/v3/auth/tokens?nocatalog", Some(&body))
        .await?
        .expect(201, "token issue")?;
    let token = answer
        .headers
        .get("X-Subject-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let project = answer.body["token"]["project"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("token has no project"))?
        .to_string();
    Ok((
        token.ok_or_else(|| anyhow!("no X-Subject-Token header"))?,
        project,
    ))
}

/// Drive one request kind over `conns` keep-alive connections for `dur`.
async fn drive(addr: &str, kind: &Kind, conns: usize, dur: Duration) -> anyhow::Result<Round> {
    let start = Instant::now();
    let deadline = start + dur;
    let mut tasks = Vec::with_capacity(conns);
    for _ in 0..conns {
        let addr = addr.to_string();
        let kind = kind.clone();
        tasks.push(tokio::spawn(async move {
            connection(&addr, &kind, deadline).await
        }));
    }
    let mut round = Round {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies_ms: Vec::new(),
    };
    for t in tasks {
        let (lat, errors) = t.await??;
        round.requests += lat.len();
        round.errors += errors;
        round.latencies_ms.extend(lat);
    }
    round.elapsed = start.elapsed();
    Ok(round)
}

/// One client connection: requests back to back until the deadline.
async fn connection(
    addr: &str,
    kind: &Kind,
    deadline: Instant,
) -> anyhow::Result<(Vec<f64>, usize)> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (mut tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut lat = Vec::new();
    let mut errors = 0;
    while Instant::now() < deadline {
        let mut req = Request::get(kind.path.as_str()).header("Host", addr);
        for (k, v) in &kind.headers {
            req = req.header(*k, v.as_str());
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let t0 = Instant::now();
        tx.ready().await?;
        let resp = tx.send_request(req).await?;
        let ok = resp.status().is_success();
        resp.into_body().collect().await?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        if !ok {
            errors += 1;
        }
    }
    Ok((lat, errors))
}
