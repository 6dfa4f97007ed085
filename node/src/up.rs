//! `kiln-node up`: the all-in-one cloud. Binds, bootstraps on first start, writes
//! `openrc`/`clouds.yaml`, prints `kiln: ready at URL`, and stops cleanly on
//! SIGINT/SIGTERM.

use std::path::PathBuf;

use clap::Args;
use kiln_controller::config::{
    Config, SecurityComplianceConfig, DEFAULT_DATA_DIR, DEFAULT_LISTEN, DEFAULT_TOKEN_TTL_SECS,
};
use kiln_controller::identity::compliance::Preset;
use kiln_controller::server::{announce_client_files, ready, shutdown_signal, Server};

#[derive(Debug, Clone, Args)]
pub struct UpArgs {
    /// Where state and client files live.
    #[arg(long, env = "KILN_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = DEFAULT_LISTEN)]
    pub listen: String,
    /// Password rules: `default` (Keystone's, all off) or `strict` (the provider policy).
    #[arg(long, default_value = "default")]
    pub security_compliance: Preset,
    /// The admin password on first start (default: generated; kept in DIR/admin-password).
    #[arg(long)]
    pub admin_password: Option<String>,
    /// Token lifetime in seconds.
    #[arg(long, default_value_t = DEFAULT_TOKEN_TTL_SECS)]
    pub token_ttl: u64,
    /// Base URL the catalog and client files advertise (default: http://<bound address>).
    #[arg(long)]
    pub public_url: Option<String>,
    /// Seconds a node may go without a heartbeat before it counts as down
    /// (Nova's `service_down_time`).
    #[arg(long, default_value_t = 60)]
    pub node_down_after: u64,
    /// Nova's `reclaim_instance_interval` in seconds: 0 deletes servers at once,
    /// more soft-deletes them (restorable until reclaimed).
    #[arg(long, default_value_t = 0)]
    pub reclaim_instance_interval: u64,
    /// This host's node: driver (`kvm` when /dev/kvm is usable, else `sim`) and sizes.
    #[command(flatten)]
    pub node: crate::serve::NodeArgs,
}

impl UpArgs {
    pub fn config(&self) -> Config {
        Config {
            listen: self.listen.clone(),
            data_dir: self.data_dir.clone(),
            token_ttl: self.token_ttl,
            public_url: self.public_url.clone(),
            bootstrap_admin_password: self.admin_password.clone(),
            reclaim_instance_interval: self.reclaim_instance_interval,
            security_compliance: SecurityComplianceConfig {
                preset: self.security_compliance,
                ..SecurityComplianceConfig::default()
            },
            ..Config::default()
        }
    }
}

/// The controller's address as this process reaches it (loopback for a wildcard).
fn loopback(mut addr: std::net::SocketAddr) -> std::net::SocketAddr {
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    addr
}

/// Runs the all-in-one cloud until SIGINT/SIGTERM.
pub async fn run(args: UpArgs) -> anyhow::Result<()> {
    kiln_controller::scheduler::set_down_after_secs(args.node_down_after);
    let server = Server::bind(&args.config()).await?;
    if server.bootstrap.created {
        println!(
            "kiln: bootstrapped a new cloud in {}",
            server.data_dir.display()
        );
    } else {
        println!("kiln: reusing the cloud in {}", server.data_dir.display());
        if args.admin_password.is_some() {
            println!("kiln: note: --admin-password applies to the first start only; ignored");
        }
    }
    let files = server.write_client_files().await?;
    announce_client_files(&files);
    let controller = format!("http://{}", loopback(server.local_addr));
    let secret = kiln_controller::protocol::load_or_create_secret(&server.data_dir)?;
    let volume_dir = server.data_dir.join("sim-volumes");
    let node_dir = server.data_dir.join("node");
    let auth_url = server.auth_url();
    let listen_host = loopback(server.local_addr).ip();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut running = tokio::spawn(server.run(async move {
        let _ = stop_rx.await;
    }));
    let nodes = crate::serve::start(crate::serve::Start {
        controller: &controller,
        secret: &secret,
        listen: &format!("{listen_host}:0"),
        advertise: None,
        prefix: "sim",
        count: 1,
        args: &args.node,
        volume_dir: Some(volume_dir),
        node_dir,
    })
    .await?;
    println!(
        "kiln: node {} uses the {:?} driver",
        nodes
            .agents
            .iter()
            .map(|a| a.id.node_id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        nodes.driver
    );
    ready(&auth_url);
    tokio::select! {
        _ = shutdown_signal() => {
            let _ = stop_tx.send(());
            running.await??;
        }
        r = &mut running => r??,
    }
    println!("kiln: stopped");
    Ok(())
}
