//! `kiln-bench e2e`: real guests end to end. Starts `kiln-node up --driver kvm`
//! on a scratch dir and a free port, uploads the firmware (`kiln_firmware=true`)
//! through Glance, then through the real HTTP API: `POST /servers` (without
//! ports, or with `--ports` each with a port on one tenant network) → polled until ACTIVE, which the kvm driver reports only
//! once the guest printed `kiln-firmware: booted` — `sequential` creates one
//! at a time, then `concurrent` creates at once; every server is deleted and
//! polled until gone (404).
//!
//! Polling: 1 ms, then ×1.5 per poll up to 10 ms (as in `kiln-bench api`).

use anyhow::{anyhow, bail};
use bytes::Bytes;
use clap::Args;
use hyper::Method;
use serde_json::json;

use crate::cloud::{sibling_binary, Cloud};
use crate::http::Conn;
use crate::report::Report;
use crate::servers::{
    create_to_active, delete_to_gone, lift_quotas, upload_image, Target, COMPUTE,
};
use crate::stats::summarize;

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
    /// Give every server a port on a tenant network (a TAP on its bridge,
    /// security groups in nf_tables, a DHCP lease), as a real server has.
    #[arg(long)]
    pub ports: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
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

async fn measure(args: &E2eArgs, cloud: &Cloud, firmware: &[u8]) -> anyhow::Result<Report> {
    let (token, project) = crate::auth::issue_token(&cloud.addr, cloud).await?;
    let mut admin = Conn::open(&cloud.addr, Some(&token)).await?;
    lift_quotas(&mut admin, &project).await?;
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
    let image = upload_image(
        &mut admin,
        "kiln-firmware",
        json!({"kiln_firmware": "true"}),
        Bytes::copy_from_slice(firmware),
    )
    .await?;
    let network = match args.ports {
        true => Some(tenant_network(&mut admin).await?),
        false => None,
    };
    let ctx = Target {
        addr: cloud.addr.clone(),
        token,
        image,
        flavor,
        network,
    };

    // Warm-up: the node fetches the image into its cache on the first create.
    let mut conn = ctx.open().await?;
    let warm = create_to_active(&mut conn, &ctx, "e2e").await?;
    let (id, _) = warm.map_err(|e| anyhow!("warm-up create failed: {e}"))?;
    delete_to_gone(&mut conn, &id)
        .await?
        .map_err(|e| anyhow!("warm-up delete: {e}"))?;

    let mut create = Vec::new();
    let mut delete = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for _ in 0..args.sequential {
        match create_to_active(&mut conn, &ctx, "e2e").await? {
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
            let mut c = ctx.open().await?;
            create_to_active(&mut c, &ctx, "e2e").await
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
            let mut c = ctx.open().await?;
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
        json!({"driver": "kvm", "ports": args.ports, "guest": "kiln-firmware (kiln_firmware=true, default command line)",
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

/// A tenant network with a /16 subnet (room for every server of the run);
/// returns the network's id.
async fn tenant_network(admin: &mut Conn) -> anyhow::Result<String> {
    let a = admin
        .send(
            Method::POST,
            "/network/v2.0/networks",
            Some(&json!({"network": {"name": "e2e-net"}})),
        )
        .await?
        .expect(201, "creating the tenant network")?;
    let net = a.body["network"]["id"]
        .as_str()
        .ok_or_else(|| anyhow!("network without id"))?
        .to_string();
    admin
        .send(
            Method::POST,
            "/network/v2.0/subnets",
            Some(&json!({"subnet": {"name": "e2e-subnet", "network_id": net,
                                    "ip_version": 4, "cidr": "10.99.0.0/16"}})),
        )
        .await?
        .expect(201, "creating the subnet")?;
    Ok(net)
}

fn r3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
