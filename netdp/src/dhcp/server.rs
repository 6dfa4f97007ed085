//! The per-network DHCP server: a UDP socket on port 67 bound to the network's bridge, served by one thread; leases change at run time.

use std::collections::HashMap;
use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::lease::{respond, Destination, Lease, LeaseTable, NetworkOptions};
use super::packet::parse;
use super::DhcpError;
use crate::netns;

/// DHCP server port.
pub const SERVER_PORT: u16 = 67;
/// DHCP client port.
pub const CLIENT_PORT: u16 = 68;

/// How often the serving thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(200);

/// What the server of one network needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// The network's bridge; the server answers on it only.
    pub bridge: String,
    /// Namespace the bridge lives in (`None`: the caller's).
    pub netns: Option<String>,
    /// Options of the network's subnet.
    pub options: NetworkOptions,
}

#[derive(Debug)]
struct Shared {
    leases: RwLock<LeaseTable>,
    options: RwLock<NetworkOptions>,
    stop: AtomicBool,
}

/// A running DHCP server; stops (and joins its thread) on drop.
#[derive(Debug)]
pub struct DhcpServer {
    shared: Arc<Shared>,
    server_id: Ipv4Addr,
    thread: Option<JoinHandle<()>>,
}

#[repr(C)]
struct IfReqAddr {
    name: [libc::c_char; libc::IFNAMSIZ],
    addr: libc::sockaddr_in,
    _pad: [u8; 8],
}

/// The first IPv4 address of `dev` (SIOCGIFADDR), looked up on `sock`'s namespace.
fn device_address(sock: &Socket, dev: &str) -> io::Result<Ipv4Addr> {
    // SAFETY: an all-zero ifreq is a valid value of this plain C struct.
    let mut req: IfReqAddr = unsafe { MaybeUninit::zeroed().assume_init() };
    if dev.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "device name too long",
        ));
    }
    for (d, s) in req.name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: SIOCGIFADDR reads the name and writes a sockaddr into `req`,
    // which has struct ifreq's size and layout.
    let rc = unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCGIFADDR,
            &mut req as *mut IfReqAddr,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Ipv4Addr::from(u32::from_be(req.addr.sin_addr.s_addr)))
}

fn open_socket(bridge: &str) -> Result<(Socket, Ipv4Addr), DhcpError> {
    let sock =
        Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).map_err(DhcpError::Socket)?;
    sock.set_reuse_address(true).map_err(DhcpError::Socket)?;
    sock.set_broadcast(true).map_err(DhcpError::Socket)?;
    // Bound to the device before the port, so servers of other bridges can
    // share port 67.
    sock.bind_device(Some(bridge.as_bytes()))
        .map_err(|e| DhcpError::Device(bridge.to_string(), e))?;
    let server_id =
        device_address(&sock, bridge).map_err(|e| DhcpError::NoAddress(bridge.to_string(), e))?;
    let any = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, SERVER_PORT);
    sock.bind(&SockAddr::from(any)).map_err(DhcpError::Socket)?;
    sock.set_read_timeout(Some(POLL))
        .map_err(DhcpError::Socket)?;
    Ok((sock, server_id))
}

impl DhcpServer {
    /// Open the socket (inside `cfg.netns` if set), take the bridge's IPv4
    /// address as server identifier, and start serving `leases`.
    pub fn start(cfg: ServerConfig, leases: Vec<Lease>) -> Result<Self, DhcpError> {
        let bridge = cfg.bridge.clone();
        let (sock, server_id) = match &cfg.netns {
            Some(ns) => netns::run_in(ns, || open_socket(&bridge)).map_err(DhcpError::Socket)??,
            None => open_socket(&bridge)?,
        };
        let table: HashMap<_, _> = leases.into_iter().map(|l| (l.mac, l)).collect();
        let shared = Arc::new(Shared {
            leases: RwLock::new(table),
            options: RwLock::new(cfg.options),
            stop: AtomicBool::new(false),
        });
        let worker = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("dhcp-{bridge}"))
            .spawn(move || serve(&UdpSocket::from(sock), server_id, &worker))
            .map_err(DhcpError::Socket)?;
        Ok(Self {
            shared,
            server_id,
            thread: Some(thread),
        })
    }

    /// The server identifier (the bridge's address).
    pub fn server_id(&self) -> Ipv4Addr {
        self.server_id
    }

    /// Add a lease, replacing any lease of the same MAC.
    pub fn add_lease(&self, lease: Lease) {
        if let Ok(mut t) = self.shared.leases.write() {
            t.insert(lease.mac, lease);
        }
    }

    /// Remove the lease of `mac`; returns it if there was one.
    pub fn remove_lease(&self, mac: &[u8; 6]) -> Option<Lease> {
        self.shared.leases.write().ok()?.remove(mac)
    }

    /// The current leases, sorted by address.
    pub fn leases(&self) -> Vec<Lease> {
        let mut v: Vec<Lease> = self
            .shared
            .leases
            .read()
            .map(|t| t.values().cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|l| l.ip);
        v
    }

    /// Replace the network options (router, DNS, MTU, ...).
    pub fn set_options(&self, options: NetworkOptions) {
        if let Ok(mut o) = self.shared.options.write() {
            *o = options;
        }
    }

    /// Stop serving and wait for the thread.
    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DhcpServer {
    fn drop(&mut self) {
        self.halt();
    }
}

fn serve(sock: &UdpSocket, server_id: Ipv4Addr, shared: &Shared) {
    let mut buf = [0u8; 4096];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match sock.recv_from(&mut buf) {
            Ok((n, _)) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::warn!(error = %e, "DHCP receive failed");
                std::thread::sleep(POLL);
                continue;
            }
        };
        let req = match parse(&buf[..n]) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(error = %e, "ignoring malformed DHCP packet");
                continue;
            }
        };
        let reply = {
            let (Ok(leases), Ok(options)) = (shared.leases.read(), shared.options.read()) else {
                continue;
            };
            respond(&req, server_id, &options, &leases)
        };
        let Some(reply) = reply else { continue };
        let dst = match reply.to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Unicast(ip) => ip,
        };
        let to = SocketAddrV4::new(dst, CLIENT_PORT);
        if let Err(e) = sock.send_to(&reply.message.encode(), to) {
            tracing::warn!(error = %e, %dst, "DHCP send failed");
        }
    }
}
