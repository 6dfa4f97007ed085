//! Helpers shared by the link and DHCP tests: capability checks, unique namespace names, guests behind veths, commands inside namespaces.
#![allow(dead_code)]

use std::net::IpAddr;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use kiln_netdp::link::{LinkError, Links};
use kiln_netdp::netns::OwnedNetns;

/// Whether this process can create namespaces and links; prints why not.
pub fn can_run(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping {test}: needs root (network namespaces, links)");
        return false;
    }
    if Command::new("ip").arg("-V").output().is_err() {
        eprintln!("skipping {test}: needs iproute2 (`ip netns exec`)");
        return false;
    }
    true
}

/// A name unique to this process and call: `klk-<pid>-<n>`.
pub fn unique() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "klk-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A fresh namespace (deleted on drop) with its loopback up.
pub async fn namespace() -> OwnedNetns {
    let ns = OwnedNetns::create(&unique()).expect("create namespace");
    let l = Links::open_in(ns.name()).expect("open netlink in namespace");
    l.set_up("lo", true).await.expect("lo up");
    ns
}

/// Run a command inside a namespace.
pub fn exec(ns: &str, args: &[&str]) -> Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
        .expect("spawn ip netns exec")
}

/// Ping `dst` once from inside `ns`; whether it answered.
pub fn ping(ns: &str, dst: &str) -> bool {
    exec(ns, &["ping", "-c", "1", "-W", "2", dst])
        .status
        .success()
}

/// Like [`ping`], but retried a few times (bridges and neighbours settle).
pub fn ping_eventually(ns: &str, dst: &str) -> bool {
    (0..5).any(|_| ping(ns, dst))
}

/// Put a "guest" in `guest_ns` behind a veth: `host_end` stays in `host`'s
/// namespace (down, not enslaved), the other end becomes `eth0` in the guest,
/// up, with `addr` (if any) and `mtu`.
pub async fn veth_guest(
    host: &Links,
    host_end: &str,
    guest_ns: &str,
    addr: Option<(IpAddr, u8)>,
    mtu: u32,
) -> Result<(), LinkError> {
    let peer = format!("{host_end}p");
    host.add_veth(host_end, &peer).await?;
    host.set_mtu(host_end, mtu).await?;
    host.set_mtu(&peer, mtu).await?;
    host.move_to_netns(&peer, guest_ns, Some("eth0")).await?;
    let g = Links::open_in(guest_ns)?;
    if let Some((ip, p)) = addr {
        g.add_address("eth0", ip, p).await?;
    }
    g.set_up("eth0", true).await?;
    Ok(())
}
