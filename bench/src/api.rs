//! `kiln-bench api`: the compute API and the scheduler at fleet scale.
//!
//! Starts a real all-in-one cloud with the simulated driver and a fleet of
//! simulated nodes (`kiln-node serve --driver sim --count N`) whose own delay
//! is zero, so what is measured is the controller: the HTTP API, the
//! scheduler's claim transaction, the node protocol round trips and redb.
//!
//! Phases, through the real HTTP API:
//! 1. sequential: one client, `POST /servers` then `GET /servers/{id}` until
//!    ACTIVE — create→ACTIVE latency;
//! 2. concurrent: C clients doing the same — latency and servers/s sustained;
//! 3. fill to S servers, then `GET /servers/detail?limit=1000`, R times;
//! 4. over-commit audit: every server's flavor summed per host (from
//!    `/servers/detail` and `/flavors/detail`) against each hypervisor's
//!    capacity times Nova's allocation ratios — computed here, not trusted
//!    from the controller's own counters.
//!
//! Polling: a client polls its server at 1 ms, then backs off by 1.5× up to
//! 10 ms, as a latency-minded client would (the openstack CLI's `--wait`
//! polls every 5 s).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::{json, Value};

use crate::cloud::{sibling_binary, Cloud};
use crate::http::Conn;
use crate::report::Report;
use crate::servers::{create_to_active, lift_quotas, upload_image, Target, COMPUTE};
use crate::stats::summarize;

#[derive(Args, Debug)]
pub struct ApiArgs {
    /// Simulated nodes in the fleet (the all-in-one's own node included).
    #[arg(long, default_value_t = 1000)]
    pub sim_nodes: usize,
    /// Creates in the sequential phase.
    #[arg(long, default_value_t = 200)]
    pub sequential: usize,
    /// Concurrent clients in the concurrent phase.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Creates in the concurrent phase.
    #[arg(long, default_value_t = 2000)]
    pub concurrent_creates: usize,
    /// Servers in the cloud when the list is measured (0: skip the list phase).
    #[arg(long, default_value_t = 10_000)]
    pub list_servers: usize,
    /// `GET /servers/detail?limit=1000` requests measured.
    #[arg(long, default_value_t = 20)]
    pub list_runs: usize,
    /// Flavor of every server.
    #[arg(long, default_value = "m1.tiny")]
    pub flavor: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// The extra simulated nodes, stopped on drop.
struct Fleet {
    child: Option<Child>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
    }
}

/// One create→ACTIVE: its latency, or why it failed.
type Outcome = Result<f64, String>;

pub fn run(args: ApiArgs) -> anyhow::Result<()> {
    if args.sim_nodes == 0 {
        bail!("--sim-nodes must be at least 1");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cloud = Cloud::start(&["--driver", "sim", "--sim-delay-ms", "0"])?;
    let fleet = start_fleet(&cloud, args.sim_nodes - 1)?;
    let report = rt.block_on(measure(&args, &cloud));
    drop(fleet);
    drop(cloud);
    report?.print(args.json);
    Ok(())
}

/// `kiln-node serve --driver sim --count N` against the cloud.
fn start_fleet(cloud: &Cloud, count: usize) -> anyhow::Result<Fleet> {
    if count == 0 {
        return Ok(Fleet { child: None });
    }
    let data_dir = cloud
        .data_dir()
        .ok_or_else(|| anyhow!("the fleet needs a cloud started by the bench"))?;
    let child = Command::new(sibling_binary("kiln-node")?)
        .arg("serve")
        .args(["--controller", &format!("http://{}", cloud.addr)])
        .arg("--secret-file")
        .arg(data_dir.join("node-secret"))
        .args([
            "--driver",
            "sim",
            "--sim-delay-ms",
            "0",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--prefix", "fleet", "--count", &count.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("spawn kiln-node serve")?;
    Ok(Fleet { child: Some(child) })
}

async fn measure(args: &ApiArgs, cloud: &Cloud) -> anyhow::Result<Report> {
    let (token, project) = crate::auth::issue_token(&cloud.addr, cloud).await?;
    let mut admin = Conn::open(&cloud.addr, Some(&token)).await?;
    wait_for_fleet(&mut admin, args.sim_nodes).await?;
    lift_quotas(&mut admin, &project).await?;
    let flavors = flavors(&mut admin).await?;
    let flavor = flavors
        .iter()
        .find(|(_, f)| f.name == args.flavor)
        .map(|(id, _)| id.clone())
        .ok_or_else(|| anyhow!("no flavor named {}", args.flavor))?;
    let image = upload_image(
        &mut admin,
        "bench-image",
        json!({}),
        Bytes::from(vec![0x6b; 4096]),
    )
    .await?;
    let ctx = Target {
        addr: cloud.addr.clone(),
        token,
        image,
        flavor,
        network: None,
    };

    // Warm-up: a few creates so connections, caches and the fleet are hot.
    let warm = create_many(&ctx, 1, 5).await?;
    if let Some(Err(e)) = warm.iter().find(|o| o.is_err()) {
        bail!("warm-up create failed: {e}");
    }

    let t0 = Instant::now();
    let seq = create_many(&ctx, 1, args.sequential).await?;
    let seq_secs = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let conc = create_many(&ctx, args.concurrency, args.concurrent_creates).await?;
    let conc_secs = t0.elapsed().as_secs_f64();

    let mut report = Report::new("api", 1);
    let mut failures = 0;
    let mut p50 = 0.0;
    let mut p99 = 0.0;
    let mut rate = 0.0;
    for (name, outcomes, secs, clients) in [
        ("sequential", &seq, seq_secs, 1),
        ("concurrent", &conc, conc_secs, args.concurrency),
    ] {
        let ok: Vec<f64> = outcomes
            .iter()
            .filter_map(|o| o.as_ref().ok())
            .copied()
            .collect();
        let failed: Vec<&String> = outcomes.iter().filter_map(|o| o.as_ref().err()).collect();
        failures += failed.len();
        let s = summarize(&ok).ok_or_else(|| anyhow!("no create reached ACTIVE in {name}"))?;
        let per_s = ok.len() as f64 / secs;
        if name == "sequential" {
            (p50, p99) = (s.median, s.p99);
        } else {
            rate = per_s;
        }
        report.result(
            name,
            json!({
                "clients": clients,
                "creates": outcomes.len(),
                "failures": failed.len(),
                "first_failure": failed.first(),
                "create_active_p50_ms": r3(s.median),
                "create_active_p90_ms": r3(s.p90),
                "create_active_p99_ms": r3(s.p99),
                "create_active_min_ms": r3(s.min),
                "create_active_max_ms": r3(s.max),
                "spread": r3(s.spread),
                "servers_per_s": r2(per_s),
            }),
        );
    }

    let created = 5 + seq.len() + conc.len();
    if args.list_servers > 0 {
        let missing = args.list_servers.saturating_sub(created);
        let t0 = Instant::now();
        let fill = create_many(&ctx, args.concurrency, missing).await?;
        let fill_failures = fill.iter().filter(|o| o.is_err()).count();
        failures += fill_failures;
        report.result(
            "fill",
            json!({"creates": fill.len(), "failures": fill_failures,
                   "servers_per_s": r2(fill.len() as f64 / t0.elapsed().as_secs_f64())}),
        );
        report.result("list", list_detail(&mut admin, args.list_runs).await?);
    }

    let audit = audit(&mut admin, &flavors).await?;
    let overcommitted = audit["overcommitted_hosts"].as_u64().unwrap_or(u64::MAX);
    report.result("audit", audit);
    // The figures the issue names, at the top of `results`.
    for (k, v) in [
        ("create_active_p50_ms", json!(r3(p50))),
        ("create_active_p99_ms", json!(r3(p99))),
        ("servers_per_s", json!(r2(rate))),
        ("overcommitted", json!(overcommitted)),
        ("failures", json!(failures)),
    ] {
        report.results.insert(k.into(), v);
    }
    report.result(
        "setup",
        json!({"sim_nodes": args.sim_nodes, "sim_delay_ms": 0, "flavor": args.flavor,
               "concurrency": args.concurrency,
               "poll": "1 ms, x1.5 per poll, at most 10 ms"}),
    );
    Ok(report)
}

/// Poll `os-hypervisors` until `n` nodes are up (the fleet registers in the background).
async fn wait_for_fleet(admin: &mut Conn, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let a = admin
            .send(
                Method::GET,
                &format!("{COMPUTE}/os-hypervisors/detail"),
                None,
            )
            .await?
            .expect(200, "listing hypervisors")?;
        let up = a.body["hypervisors"]
            .as_array()
            .map(|hs| hs.iter().filter(|h| h["state"] == "up").count())
            .unwrap_or(0);
        if up >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {up} of {n} simulated nodes registered within 180 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct FlavorSize {
    name: String,
    vcpus: u64,
    ram: u64,
    disk: u64,
}

async fn flavors(admin: &mut Conn) -> anyhow::Result<BTreeMap<String, FlavorSize>> {
    let a = admin
        .send(Method::GET, &format!("{COMPUTE}/flavors/detail"), None)
        .await?
        .expect(200, "listing flavors")?;
    let mut out = BTreeMap::new();
    for f in a.body["flavors"].as_array().into_iter().flatten() {
        let id = f["id"].as_str().unwrap_or_default().to_string();
        out.insert(
            id,
            FlavorSize {
                name: f["name"].as_str().unwrap_or_default().to_string(),
                vcpus: f["vcpus"].as_u64().unwrap_or(0),
                ram: f["ram"].as_u64().unwrap_or(0),
                disk: f["disk"].as_u64().unwrap_or(0),
            },
        );
    }
    Ok(out)
}

/// `total` creates over `clients` connections; each waits for ACTIVE.
async fn create_many(ctx: &Target, clients: usize, total: usize) -> anyhow::Result<Vec<Outcome>> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..clients.max(1).min(total.max(1)) {
        let (ctx, next) = (ctx.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = ctx.open().await?;
            let mut out = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                out.push(
                    create_to_active(&mut conn, &ctx, "bench")
                        .await?
                        .map(|(_, ms)| ms),
                );
            }
            anyhow::Ok(out)
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

/// `GET /servers/detail?limit=1000`, `runs` times.
async fn list_detail(admin: &mut Conn, runs: usize) -> anyhow::Result<Value> {
    let mut lat = Vec::with_capacity(runs);
    let mut returned = 0;
    for _ in 0..runs.max(1) {
        let t0 = Instant::now();
        let a = admin
            .send(
                Method::GET,
                &format!("{COMPUTE}/servers/detail?limit=1000"),
                None,
            )
            .await?
            .expect(200, "listing servers")?;
        lat.push(t0.elapsed().as_secs_f64() * 1000.0);
        returned = a.body["servers"].as_array().map_or(0, Vec::len);
    }
    let s = summarize(&lat).ok_or_else(|| anyhow!("no list timings"))?;
    Ok(json!({"requests": lat.len(), "servers_returned": returned,
              "p50_ms": r3(s.median), "p99_ms": r3(s.p99), "min_ms": r3(s.min),
              "max_ms": r3(s.max), "spread": r3(s.spread)}))
}

/// Sum every placed server's flavor per host and compare with the host's
/// capacity times Nova's default allocation ratios (16 vCPU, 1.5 RAM, 1.0 disk).
async fn audit(admin: &mut Conn, flavors: &BTreeMap<String, FlavorSize>) -> anyhow::Result<Value> {
    let mut used: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
    let mut servers = 0usize;
    let mut unplaced = 0usize;
    let mut marker: Option<String> = None;
    loop {
        let path = match &marker {
            Some(m) => format!("{COMPUTE}/servers/detail?all_tenants=1&limit=1000&marker={m}"),
            None => format!("{COMPUTE}/servers/detail?all_tenants=1&limit=1000"),
        };
        let a = admin
            .send(Method::GET, &path, None)
            .await?
            .expect(200, "listing servers")?;
        let page = a.body["servers"].as_array().cloned().unwrap_or_default();
        for s in &page {
            servers += 1;
            let host = s["OS-EXT-SRV-ATTR:hypervisor_hostname"]
                .as_str()
                .or_else(|| s["OS-EXT-SRV-ATTR:host"].as_str());
            let flavor = s["flavor"]["id"].as_str().and_then(|id| flavors.get(id));
            match (host, flavor) {
                (Some(h), Some(f)) => {
                    let u = used.entry(h.to_string()).or_default();
                    u.0 += f.vcpus;
                    u.1 += f.ram;
                    u.2 += f.disk;
                }
                _ => unplaced += 1,
            }
        }
        marker = match page.last().and_then(|s| s["id"].as_str()) {
            Some(id) if page.len() == 1000 => Some(id.to_string()),
            _ => break,
        };
    }
    let a = admin
        .send(
            Method::GET,
            &format!("{COMPUTE}/os-hypervisors/detail"),
            None,
        )
        .await?
        .expect(200, "listing hypervisors")?;
    let mut over = Vec::new();
    let mut hosts = 0;
    for h in a.body["hypervisors"].as_array().into_iter().flatten() {
        hosts += 1;
        let name = h["hypervisor_hostname"].as_str().unwrap_or_default();
        let (v, r, d) = used.get(name).copied().unwrap_or_default();
        let cap_v = h["vcpus"].as_f64().unwrap_or(0.0) * 16.0;
        let cap_r = h["memory_mb"].as_f64().unwrap_or(0.0) * 1.5;
        let cap_d = h["local_gb"].as_f64().unwrap_or(0.0);
        if v as f64 > cap_v || r as f64 > cap_r || d as f64 > cap_d {
            over.push(name.to_string());
        }
    }
    Ok(
        json!({"servers": servers, "hosts": hosts, "hosts_used": used.len(),
              "unplaced_servers": unplaced, "overcommitted_hosts": over.len(),
              "overcommitted_examples": over.iter().take(5).collect::<Vec<_>>()}),
    )
}

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}
fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
