//! The node's network side: netdp driven by the controller's desired state.
//! [`NodeNet`] implements [`Plumbing`] for the KVM driver and runs the
//! reconcile loop (on start, every [`NetConfig::period`], and at once on
//! plug/unplug).
//!
//! - [`desired`]: the desired state as read from the controller, and its
//!   translation to netdp's model and links;
//! - [`client`]: the node-protocol calls (desired state, port status, DHCP ports);
//! - [`reconcile`]: one pass making the kernel match;
//! - [`dhcpns`]: per network, the namespace with DHCP and metadata;
//! - [`metadata`]: the metadata service (OpenStack and EC2 layouts).

pub mod client;
pub mod desired;
pub mod dhcpns;
pub mod metadata;
pub mod reconcile;

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use kiln_controller::protocol::Spawn;
use kiln_netdp::link::{names, LinkError, LinkKind, Links};
use kiln_netdp::secgroup::{ApplyError, SecurityGroups};

use crate::driver::{DriverError, DriverFuture};
use crate::plumbing::{Plugged, Plumbing};
use client::{ClientError, Controller};
use metadata::Registry;
use reconcile::{Pass, State};

/// How often the loop looks for changes by default.
pub const DEFAULT_PERIOD: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("host network is not usable: {0}")]
    Probe(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("links: {0}")]
    Link(#[from] LinkError),
    #[error("security groups: {0}")]
    SecurityGroups(#[from] ApplyError),
    #[error("DHCP: {0}")]
    Dhcp(#[from] kiln_netdp::dhcp::DhcpError),
    #[error("I/O: {0}")]
    Io(#[source] std::io::Error),
    #[error("invalid desired state: {0}")]
    Invalid(String),
    #[error("port {0} is not bound to this host")]
    NotBound(String),
    #[error("TAP {ifname} is {} while its port asks for {queues} queue pair(s); another process still holds it", queue_mode(.multi_queue))]
    QueueMode {
        ifname: String,
        multi_queue: bool,
        queues: u16,
    },
}

fn queue_mode(multi_queue: &bool) -> &'static str {
    if *multi_queue {
        "multi-queue"
    } else {
        "single-queue"
    }
}

/// Where the node's network side gets its state from.
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// The controller's base URL (`http://host:port`).
    pub controller: String,
    pub node_id: String,
    /// The node secret (bearer).
    pub secret: String,
    /// This node's VXLAN endpoint address (none: no VXLAN).
    pub tunnel_ip: Option<Ipv4Addr>,
    pub period: Duration,
    /// The namespace holding this node's host network (None: the caller's;
    /// tests pass a namespace of their own).
    pub netns: Option<String>,
    /// Run netdp's kernel probe first and refuse to start when something
    /// required is missing.
    pub probe: bool,
}

struct Inner {
    client: Controller,
    registry: Arc<Registry>,
    tunnel: Option<Ipv4Addr>,
    state: tokio::sync::Mutex<State>,
}

/// netdp wired to the controller: see the module docs.
pub struct NodeNet {
    inner: Arc<Inner>,
    kick: Arc<tokio::sync::Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Inner {
    async fn pass(&self, force: bool) -> Result<Pass, NetError> {
        let mut st = self.state.lock().await;
        let r = reconcile::pass(&mut st, &self.client, &self.registry, self.tunnel, force).await;
        if r.is_err() {
            // Retry in full next time.
            st.last = None;
        }
        r
    }
}

impl NodeNet {
    /// Probe the kernel (when asked), open netlink and nf_tables in this
    /// namespace, run a first pass and start the loop.
    pub async fn start(cfg: NetConfig) -> Result<NodeNet, NetError> {
        if cfg.probe {
            let report = tokio::task::spawn_blocking(kiln_netdp::probe::probe)
                .await
                .map_err(|e| NetError::Probe(e.to_string()))?;
            if report.fatal() {
                return Err(NetError::Probe(
                    report
                        .missing_message()
                        .unwrap_or_else(|| "a required kernel feature is missing".into()),
                ));
            }
        }
        let links = Links::open_maybe_in(cfg.netns.as_deref())?;
        let sg = match &cfg.netns {
            Some(ns) => {
                kiln_netdp::netns::run_in(ns, SecurityGroups::open).map_err(NetError::Io)??
            }
            None => SecurityGroups::open()?,
        };
        let inner = Arc::new(Inner {
            client: Controller::new(&cfg.controller, &cfg.node_id, &cfg.secret),
            registry: Arc::new(Registry::default()),
            tunnel: cfg.tunnel_ip,
            state: tokio::sync::Mutex::new(State::new(dhcpns::node_tag(&cfg.node_id), links, sg)),
        });
        if let Err(e) = inner.pass(true).await {
            tracing::warn!(error = %e, "first network reconcile failed; the loop retries");
        }
        let kick = Arc::new(tokio::sync::Notify::new());
        let task = tokio::spawn(run(inner.clone(), kick.clone(), cfg.period));
        Ok(NodeNet { inner, kick, task })
    }

    /// One pass now (`force`: even if the desired state did not change).
    pub async fn reconcile(&self, force: bool) -> Result<Pass, NetError> {
        self.inner.pass(force).await
    }

    /// Ask the loop for a pass soon.
    pub fn kick(&self) {
        self.kick.notify_one();
    }

    /// The metadata registry (which guest is which server).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.inner.registry
    }

    /// The leases a network's DHCP server holds now (empty if none runs).
    pub async fn leases(&self, network_id: &str) -> Vec<kiln_netdp::dhcp::Lease> {
        let st = self.inner.state.lock().await;
        st.namespaces
            .get(network_id)
            .map(|n| n.leases())
            .unwrap_or_default()
    }

    /// Stop the loop and remove everything this node wired: namespaces,
    /// links and rules (the kernel as if no port were bound here).
    pub async fn shutdown(self) -> Result<(), NetError> {
        self.task.abort();
        let mut st = self.inner.state.lock().await;
        let nss: Vec<_> = std::mem::take(&mut st.namespaces).into_values().collect();
        for n in nss {
            n.stop(&st.links).await?;
        }
        for ns in dhcpns::existing(&st.tag)? {
            dhcpns::remove_namespace(&st.links, &ns).await?;
        }
        kiln_netdp::link::converge(&st.links, &[]).await?;
        st.sg.remove()?;
        Ok(())
    }

    async fn plug_spec(&self, spec: &Spawn) -> Result<Vec<Plugged>, NetError> {
        self.inner.registry.insert(spec);
        {
            let mut st = self.inner.state.lock().await;
            for p in &spec.ports {
                st.unplugged.remove(&p.port_id);
            }
        }
        self.inner.pass(true).await?;
        let st = self.inner.state.lock().await;
        let mut out = Vec::new();
        for p in &spec.ports {
            let ifname = names::tap(&p.port_id);
            let Some(link) = st.links.get(&ifname).await? else {
                return Err(NetError::NotBound(p.port_id.clone()));
            };
            let queues = desired::tap_queues(p.queues);
            // The desired state and the spawn both carry the server's count;
            // a TAP of the other mode is one a guest still holds (converge
            // does not tear that down), and kiln-vmm could not open it.
            if let LinkKind::Tun(t) = &link.kind {
                if t.multi_queue != (queues > 1) {
                    return Err(NetError::QueueMode {
                        ifname,
                        multi_queue: t.multi_queue,
                        queues,
                    });
                }
            }
            out.push(Plugged {
                port_id: p.port_id.clone(),
                ifname,
                mac: p.mac.clone(),
                queues,
            });
        }
        Ok(out)
    }

    async fn unplug_server(&self, server_id: &str) -> Result<(), NetError> {
        let mut ports = self.inner.registry.ports_of(server_id);
        {
            let st = self.inner.state.lock().await;
            ports.extend(
                st.desired
                    .guest_ports()
                    .filter(|p| p.device_id == server_id)
                    .map(|p| p.id.clone()),
            );
        }
        self.inner.registry.remove(server_id);
        {
            let mut st = self.inner.state.lock().await;
            st.unplugged.extend(ports);
        }
        self.inner.pass(true).await?;
        Ok(())
    }
}

impl Drop for NodeNet {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(inner: Arc<Inner>, kick: Arc<tokio::sync::Notify>, period: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = kick.notified() => {}
        }
        if let Err(e) = inner.pass(false).await {
            tracing::warn!(error = %e, "network reconcile failed");
        }
    }
}

fn driver_error(e: NetError) -> DriverError {
    DriverError::Failed(e.to_string())
}

impl Plumbing for NodeNet {
    fn plug<'a>(&'a self, spec: &'a Spawn) -> DriverFuture<'a, Vec<Plugged>> {
        Box::pin(async move { self.plug_spec(spec).await.map_err(driver_error) })
    }

    fn unplug<'a>(&'a self, server_id: &'a str) -> DriverFuture<'a, ()> {
        Box::pin(async move { self.unplug_server(server_id).await.map_err(driver_error) })
    }
}
