//! Starting node agents: `kiln-node serve` runs N nodes against a controller
//! (ids and host names `PREFIX-0..N-1`, ONE listener for all of them, the node
//! id in the path), and `kiln-node up` uses the same to run one node in the
//! all-in-one process. A single kvm node is named like Nova's compute host:
//! `--node-id`, else the host name. The driver is `kvm` (real guests) when /dev/kvm is
//! usable and one node runs, else `sim`; `--driver` overrides.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use kiln_controller::compute::servers::link::HEARTBEAT_SECS;
use kiln_controller::protocol::{load_or_create_secret, NODE_PREFIX};
use tokio::net::TcpListener;

use crate::agent::api::{router, NodeApi};
use crate::agent::{Agent, NodeIdentity};
use crate::driver::{Capacity, Driver};
use crate::kvm::images::ImageSource;
use crate::kvm::{host, KvmDriver, KvmOptions, DEFAULT_IMAGE_CACHE_BYTES};
use crate::net::{NetConfig, NodeNet};
use crate::sim::{SimDelays, SimDriver};

/// Which driver runs the guests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DriverKind {
    /// Simulated guests (no VMs; realistic delays).
    Sim,
    /// Real KVM guests, one kiln-vmm process each.
    Kvm,
}

/// The driver to use: the one asked for, else `kvm` when /dev/kvm is usable
/// and this process runs one node, else `sim` (with one warning line when
/// /dev/kvm is the reason).
pub fn choose_driver(asked: Option<DriverKind>, count: usize) -> anyhow::Result<DriverKind> {
    match asked {
        Some(DriverKind::Kvm) if count != 1 => {
            anyhow::bail!("the kvm driver runs one node per process (--count 1)")
        }
        Some(DriverKind::Kvm) if !host::kvm_usable() => {
            anyhow::bail!("the kvm driver needs a usable /dev/kvm (use --driver sim)")
        }
        Some(k) => Ok(k),
        None if count != 1 => Ok(DriverKind::Sim),
        None if host::kvm_usable() => Ok(DriverKind::Kvm),
        None => {
            eprintln!("kiln: warning: /dev/kvm is not usable here; falling back to the simulated driver (no real guests)");
            Ok(DriverKind::Sim)
        }
    }
}

/// Options shared by `serve` and `up` for the nodes this process runs.
#[derive(Debug, Clone, Args)]
pub struct NodeArgs {
    /// The guest driver (default: kvm when /dev/kvm is usable and one node
    /// runs, else sim).
    #[arg(long, value_enum)]
    pub driver: Option<DriverKind>,
    /// kiln-vmm for the kvm driver (default: next to this executable).
    #[arg(long)]
    pub vmm_path: Option<PathBuf>,
    /// The kvm driver's image cache bound in GiB (unused images are evicted
    /// beyond it, least recently used first).
    #[arg(long)]
    pub image_cache_gb: Option<u64>,
    /// Simulated operation time in ms (spawn; other actions a third). Default:
    /// spawn 300 ms, actions 100 ms. 0 for benchmarks.
    #[arg(long)]
    pub sim_delay_ms: Option<u64>,
    /// vCPUs each simulated node offers.
    #[arg(long, default_value_t = 64)]
    pub node_vcpus: u64,
    /// RAM (MiB) each simulated node offers.
    #[arg(long, default_value_t = 262_144)]
    pub node_ram_mb: u64,
    /// Disk (GiB) each simulated node offers.
    #[arg(long, default_value_t = 4096)]
    pub node_disk_gb: u64,
    /// Availability zone of the nodes.
    #[arg(long, default_value = "nova")]
    pub az: String,
    /// This host's VXLAN endpoint address (kvm driver); without it tenant
    /// networks stay local to the host.
    #[arg(long)]
    pub tunnel_ip: Option<std::net::Ipv4Addr>,
    /// The node's id and host name (one node only; letters, digits, `.`,
    /// `_`, `-`). Default: the host name for the kvm driver, else
    /// `PREFIX-<i>`.
    #[arg(long)]
    pub node_id: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// The controller's base URL (e.g. http://10.0.0.1:5000).
    #[arg(long)]
    pub controller: String,
    /// How many simulated nodes to run in this process.
    #[arg(long, default_value_t = 1)]
    pub count: usize,
    /// Where the node API listens (one listener for all nodes).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// The URL the controller reaches this listener at (default: http://<bound address>).
    #[arg(long)]
    pub advertise_url: Option<String>,
    /// The shared node secret file (the controller's DATA_DIR/node-secret).
    #[arg(long, env = "KILN_NODE_SECRET_FILE")]
    pub secret_file: PathBuf,
    /// Node id / host name prefix.
    #[arg(long, default_value = "sim")]
    pub prefix: String,
    /// The kvm driver's data directory (instances/ and images/).
    #[arg(long, env = "KILN_NODE_DIR", default_value = "/var/lib/kiln-node")]
    pub node_dir: PathBuf,
    #[command(flatten)]
    pub node: NodeArgs,
}

/// Running agents and the address of their listener.
pub struct Nodes {
    pub agents: Vec<Arc<Agent>>,
    pub addr: SocketAddr,
    pub driver: DriverKind,
}

/// Where and how many nodes to start.
pub struct Start<'a> {
    pub controller: &'a str,
    pub secret: &'a str,
    pub listen: &'a str,
    pub advertise: Option<&'a str>,
    pub prefix: &'a str,
    pub count: usize,
    pub args: &'a NodeArgs,
    /// Where the simulated driver creates sparse volume files.
    pub volume_dir: Option<PathBuf>,
    /// The kvm driver's data directory.
    pub node_dir: PathBuf,
}

/// Binds the node listener, starts `count` agents, registers each (waiting for
/// the controller), and starts their heartbeats.
pub async fn start(s: Start<'_>) -> anyhow::Result<Nodes> {
    let Start {
        controller,
        secret,
        listen,
        advertise,
        prefix,
        count,
        args,
        volume_dir,
        node_dir,
    } = s;
    let kind = choose_driver(args.driver, count)?;
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let base = advertise
        .map(|a| a.trim_end_matches('/').to_string())
        .unwrap_or_else(|| format!("http://{addr}"));
    let delays = args
        .sim_delay_ms
        .map(SimDelays::uniform)
        .unwrap_or_else(SimDelays::default_delays);
    let cap = Capacity {
        vcpus: args.node_vcpus,
        ram_mb: args.node_ram_mb,
        disk_gb: args.node_disk_gb,
    };
    let mut agents = Vec::new();
    let mut map = HashMap::new();
    let named = node_name(args.node_id.as_deref(), kind, count)?;
    for i in 0..count {
        let node_id = named.clone().unwrap_or_else(|| format!("{prefix}-{i}"));
        let driver: Arc<dyn Driver> = match kind {
            DriverKind::Sim => Arc::new(SimDriver::new(&node_id, cap, delays, volume_dir.clone())),
            DriverKind::Kvm => Arc::new(
                KvmDriver::new(KvmOptions {
                    data_dir: node_dir.clone(),
                    vmm_path: args.vmm_path.clone(),
                    images: Some(ImageSource {
                        controller: controller.to_string(),
                        node_id: node_id.clone(),
                        secret: secret.to_string(),
                    }),
                    image_cache_bytes: args
                        .image_cache_gb
                        .map(|g| g << 30)
                        .unwrap_or(DEFAULT_IMAGE_CACHE_BYTES),
                    plumbing: host_network(controller, &node_id, secret, args).await,
                })
                .with_context(|| {
                    format!("cannot start the kvm driver in {}", node_dir.display())
                })?,
            ),
        };
        let agent = Agent::new(
            NodeIdentity {
                node_id: node_id.clone(),
                host: node_id.clone(),
                az: args.az.clone(),
                url: format!("{base}{NODE_PREFIX}/{node_id}"),
                tunnel_ip: args.tunnel_ip,
            },
            controller,
            secret,
            driver,
        );
        agent.watch_driver();
        map.insert(node_id, agent.clone());
        agents.push(agent);
    }
    let app = router(NodeApi {
        agents: Arc::new(map),
        secret: Arc::new(secret.to_string()),
    });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "node API stopped");
        }
    });
    for a in &agents {
        let r = a.join().await;
        let every = Duration::from_secs(r.heartbeat_secs.clamp(1, HEARTBEAT_SECS * 6));
        tokio::spawn(a.clone().heartbeat_loop(every));
    }
    Ok(Nodes {
        agents,
        addr,
        driver: kind,
    })
}

/// The one node's own name (`--node-id`, else the host name for the kvm
/// driver), or None when nodes are named `PREFIX-<i>`.
fn node_name(
    asked: Option<&str>,
    kind: DriverKind,
    count: usize,
) -> anyhow::Result<Option<String>> {
    let name = match asked {
        Some(_) if count != 1 => anyhow::bail!("--node-id names one node (--count 1)"),
        Some(id) => id.to_string(),
        None if kind == DriverKind::Kvm => kiln_controller::compute::services::controller_host(),
        None => return Ok(None),
    };
    let valid = !name.is_empty()
        && name.len() <= 255
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !valid {
        anyhow::bail!("node id {name:?}: use letters, digits, '.', '_' and '-' (at most 255)");
    }
    Ok(Some(name))
}

/// The node's network side for the kvm driver: netdp driven by the
/// controller's desired state. When this host cannot do it (netdp's kernel
/// probe says what is missing), the node still runs servers without ports and
/// says why once.
async fn host_network(
    controller: &str,
    node_id: &str,
    secret: &str,
    args: &NodeArgs,
) -> Option<Arc<dyn crate::plumbing::Plumbing>> {
    let cfg = NetConfig {
        controller: controller.to_string(),
        node_id: node_id.to_string(),
        secret: secret.to_string(),
        tunnel_ip: args.tunnel_ip,
        period: crate::net::DEFAULT_PERIOD,
        netns: None,
        probe: true,
    };
    match NodeNet::start(cfg).await {
        Ok(net) => Some(Arc::new(net)),
        Err(e) => {
            eprintln!("kiln: node {node_id} runs without host networking: {e}");
            None
        }
    }
}

/// `kiln-node serve`: runs until SIGINT/SIGTERM.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let dir = args
        .secret_file
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default();
    let secret = if args.secret_file.exists() {
        std::fs::read_to_string(&args.secret_file)
            .with_context(|| format!("cannot read {}", args.secret_file.display()))?
            .trim()
            .to_string()
    } else {
        load_or_create_secret(&dir)?
    };
    let nodes = start(Start {
        controller: &args.controller,
        secret: &secret,
        listen: &args.listen,
        advertise: args.advertise_url.as_deref(),
        prefix: &args.prefix,
        count: args.count,
        args: &args.node,
        volume_dir: None,
        node_dir: args.node_dir.clone(),
    })
    .await?;
    println!(
        "kiln: {} {:?} node(s) registered with {}, serving on {}",
        nodes.agents.len(),
        nodes.driver,
        args.controller,
        nodes.addr
    );
    kiln_controller::server::shutdown_signal().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_single_kvm_node_is_named_after_its_host_or_node_id() {
        let name = |asked, kind, count| node_name(asked, kind, count).ok().flatten();
        assert_eq!(name(Some("n2"), DriverKind::Kvm, 1), Some("n2".into()));
        assert_eq!(
            name(Some("n-2.lab_a"), DriverKind::Sim, 1),
            Some("n-2.lab_a".into())
        );
        let host = kiln_controller::compute::services::controller_host();
        assert_eq!(name(None, DriverKind::Kvm, 1), Some(host));
        // Sim nodes keep PREFIX-<i>.
        assert_eq!(name(None, DriverKind::Sim, 1), None);
        assert_eq!(name(None, DriverKind::Sim, 4), None);
        // One name for several nodes, or one unfit for a URL path: refused.
        assert!(node_name(Some("n2"), DriverKind::Sim, 2).is_err());
        assert!(node_name(Some("a/b"), DriverKind::Kvm, 1).is_err());
        assert!(node_name(Some(""), DriverKind::Kvm, 1).is_err());
    }
}
