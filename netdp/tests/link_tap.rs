//! TAPs through /dev/net/tun on the real kernel: multi-queue, vnet header, persist, enslaved to a bridge and up.
#![allow(clippy::unwrap_used)]

mod link_support;

use kiln_netdp::link::tap::{self, TapConfig, TapError};
use kiln_netdp::link::{LinkKind, Links, TunState};
use link_support::{can_run, exec, namespace};

fn tun_available(test: &str) -> bool {
    if !std::path::Path::new(tap::TUN_PATH).exists() {
        eprintln!("skipping {test}: {} is missing", tap::TUN_PATH);
        return false;
    }
    true
}

#[tokio::test]
async fn multiqueue_vnet_hdr_tap_enslaved_and_up() {
    if !can_run("multiqueue_vnet_hdr_tap_enslaved_and_up") || !tun_available("tap test") {
        return;
    }
    let ns = namespace().await;
    let links = Links::open_in(ns.name()).unwrap();
    links.add_bridge("kbr-t", None).await.unwrap();

    let cfg = TapConfig {
        queues: 4,
        vnet_hdr_size: Some(tap::VNET_HDR_V1_LEN),
        offloads: Some(libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6),
        persist: true,
        owner: Some(0),
        group: Some(0),
        ..TapConfig::new("ktap-t")
    };
    let t = links.create_tap(&cfg).unwrap();
    assert_eq!(t.name(), "ktap-t");
    assert_eq!(t.queues().len(), 4);
    for q in t.queues() {
        let flags = tap::flags_of(q).unwrap();
        let want = libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE;
        assert_eq!(flags & want, want, "flags {flags:#x}");
    }
    links.enslave("ktap-t", "kbr-t").await.unwrap();
    links.set_up("ktap-t", true).await.unwrap();

    let br = links.require("kbr-t").await.unwrap();
    let l = links.require("ktap-t").await.unwrap();
    assert_eq!(
        l.kind,
        LinkKind::Tun(TunState {
            tap: true,
            vnet_hdr: true,
            multi_queue: true,
            persist: true,
            owner: Some(0),
            group: Some(0),
            queues: 4,
        })
    );
    assert!(l.up);
    assert_eq!(l.controller, Some(br.index));

    // The kernel agrees on flags and the number of queues.
    let out = exec(ns.name(), &["cat", "/sys/class/net/ktap-t/tun_flags"]);
    let flags = i64::from_str_radix(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .trim_start_matches("0x"),
        16,
    )
    .unwrap();
    assert_ne!(flags & i64::from(libc::IFF_VNET_HDR), 0);
    assert_ne!(flags & i64::from(libc::IFF_MULTI_QUEUE), 0);
    let out = exec(ns.name(), &["ls", "/sys/class/net/ktap-t/queues"]);
    let rx = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter(|q| q.starts_with("rx-"))
        .count();
    assert_eq!(rx, 4);

    // Persistent: closing every queue keeps the device, and a VMM can attach
    // again by name with the same flags.
    drop(t);
    assert!(links.get("ktap-t").await.unwrap().is_some());
    let again = kiln_netdp::netns::run_in(ns.name(), || tap::attach(&cfg))
        .unwrap()
        .unwrap();
    assert_eq!(again.queues().len(), 4);
    // Attaching with different flags (single queue) is refused.
    let single = TapConfig {
        queues: 1,
        ..cfg.clone()
    };
    let err = kiln_netdp::netns::run_in(ns.name(), || tap::attach(&single)).unwrap();
    assert!(matches!(
        err,
        Err(TapError::Ioctl {
            ioctl: "TUNSETIFF",
            ..
        })
    ));
    drop(again);

    links.delete("ktap-t").await.unwrap();
    assert!(links.get("ktap-t").await.unwrap().is_none());
}

#[tokio::test]
async fn non_persistent_tap_goes_with_its_fds() {
    if !can_run("non_persistent_tap_goes_with_its_fds") || !tun_available("tap test") {
        return;
    }
    let ns = namespace().await;
    let links = Links::open_in(ns.name()).unwrap();
    let t = links.create_tap(&TapConfig::new("ktap-e")).unwrap();
    assert_eq!(t.queues().len(), 1);
    assert!(links.get("ktap-e").await.unwrap().is_some());
    drop(t);
    // The kernel unregisters the device as the last fd closes, but the
    // netdev can outlive close() briefly (it failed once in CI): allow 2 s.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while links.get("ktap-e").await.unwrap().is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "ktap-e still there 2 s after its last fd closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
