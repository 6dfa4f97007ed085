//! Start-up probe of the kernel features the data plane needs; reports what is missing in one clear message.
//!
//! Every check that creates something does so in a throwaway network
//! namespace (an unshared thread), so probing leaves nothing behind: nf_tables
//! tables of the inet, bridge and netdev families (created, then deleted), a
//! `ct zone set` rule (conntrack zones), the br_netfilter sysctl, a VXLAN link
//! and a TAP. `/dev/vhost-net` is only opened.

use std::fmt;
use std::fs::OpenOptions;
use std::net::Ipv4Addr;
use std::path::Path;

use crate::link::tap::{self, TapConfig};
use crate::link::{self, Links, VxlanConfig};
use crate::netns;
use crate::nft::sys::{NFPROTO_BRIDGE, NFPROTO_INET, NFT_CT_ZONE};
use crate::nft::{reg32, Batch, ChainDef, Data, Expr, Socket};

/// nf_tables' netdev family.
const NFPROTO_NETDEV: u8 = 5;
/// Name of the scratch table.
const TABLE: &str = "kiln_probe";
/// The per-namespace sysctl br_netfilter adds.
const BR_NF_SYSCTL: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";
/// The vhost-net device.
const VHOST_NET: &str = "/dev/vhost-net";

/// A kernel feature kiln uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Feature {
    /// nf_tables `inet` family (security groups through br_netfilter).
    NftInet,
    /// nf_tables `bridge` family (anti-spoofing, port marks).
    NftBridge,
    /// nf_tables `netdev` family.
    NftNetdev,
    /// br_netfilter: bridged IP traffic through the inet hooks.
    BrNetfilter,
    /// Conntrack zones (one per network).
    ConntrackZones,
    /// VXLAN links.
    Vxlan,
    /// TAPs through `/dev/net/tun`.
    Tun,
    /// In-kernel virtio-net backend `/dev/vhost-net`.
    VhostNet,
}

impl Feature {
    /// Every feature, in report order.
    pub const ALL: [Feature; 8] = [
        Feature::NftInet,
        Feature::NftBridge,
        Feature::NftNetdev,
        Feature::BrNetfilter,
        Feature::ConntrackZones,
        Feature::Vxlan,
        Feature::Tun,
        Feature::VhostNet,
    ];

    /// Whether kiln cannot run its data plane without it (vhost-net is an
    /// optional fast path: the VMM serves virtio-net from the TAP itself).
    pub fn required(self) -> bool {
        !matches!(self, Feature::VhostNet | Feature::NftNetdev)
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Feature::NftInet => "nf_tables inet",
            Feature::NftBridge => "nf_tables bridge",
            Feature::NftNetdev => "nf_tables netdev",
            Feature::BrNetfilter => "br_netfilter",
            Feature::ConntrackZones => "conntrack zones",
            Feature::Vxlan => "VXLAN",
            Feature::Tun => "/dev/net/tun",
            Feature::VhostNet => "vhost-net",
        })
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// What was checked.
    pub feature: Feature,
    /// `Err` says why it is missing.
    pub result: Result<(), String>,
}

/// The outcome of every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// One entry per [`Feature::ALL`] member, in that order.
    pub checks: Vec<Check>,
}

impl ProbeReport {
    /// Whether `f` is present.
    pub fn has(&self, f: Feature) -> bool {
        self.checks
            .iter()
            .any(|c| c.feature == f && c.result.is_ok())
    }

    /// The missing features.
    pub fn missing(&self) -> Vec<Feature> {
        self.checks
            .iter()
            .filter(|c| c.result.is_err())
            .map(|c| c.feature)
            .collect()
    }

    /// Whether a required feature is missing (the node should not start).
    pub fn fatal(&self) -> bool {
        self.missing().iter().any(|f| f.required())
    }

    /// One message naming every missing feature and why, or `None` if
    /// nothing is missing.
    pub fn missing_message(&self) -> Option<String> {
        let parts: Vec<String> = self
            .checks
            .iter()
            .filter_map(|c| match &c.result {
                Err(why) => Some(format!(
                    "{} ({}{why})",
                    c.feature,
                    if c.feature.required() {
                        "required: "
                    } else {
                        "optional: "
                    }
                )),
                Ok(()) => None,
            })
            .collect();
        if parts.is_empty() {
            return None;
        }
        Some(format!("kernel features missing: {}", parts.join("; ")))
    }
}

impl fmt::Display for ProbeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.missing_message() {
            Some(m) => f.write_str(&m),
            None => f.write_str("kernel features: all present"),
        }
    }
}

fn nft_table(family: u8) -> Result<(), String> {
    let mut sock = Socket::open().map_err(|e| e.to_string())?;
    let mut add = Batch::new();
    add.add_table(family, TABLE, None);
    sock.send_batch(&add).map_err(|e| e.to_string())?;
    let mut del = Batch::new();
    del.del_table(family, TABLE);
    sock.send_batch(&del).map_err(|e| e.to_string())
}

/// Load a rule that sets conntrack key `key` from a register (in a scratch
/// table, deleted in the same batch).
fn ct_set_rule(key: u32) -> Result<(), String> {
    let mut sock = Socket::open().map_err(|e| e.to_string())?;
    let mut b = Batch::new();
    b.add_table(NFPROTO_INET, TABLE, None);
    b.add_chain(
        NFPROTO_INET,
        TABLE,
        &ChainDef {
            name: "zone".into(),
            hook: None,
            userdata: None,
        },
    );
    let zone = Expr::Immediate {
        dreg: reg32(0),
        data: Data::Value(1u16.to_ne_bytes().to_vec()),
    };
    let set = Expr::CtSet {
        key,
        sreg: reg32(0),
    };
    b.add_rule(NFPROTO_INET, TABLE, "zone", &[zone, set], None);
    b.del_table(NFPROTO_INET, TABLE);
    sock.send_batch(&b).map_err(|e| e.to_string())
}

fn br_netfilter() -> Result<(), String> {
    if Path::new(BR_NF_SYSCTL).exists() {
        Ok(())
    } else {
        Err(format!("{BR_NF_SYSCTL} does not exist"))
    }
}

fn vxlan() -> Result<(), String> {
    let cfg = VxlanConfig {
        name: "kvx-probe".into(),
        vni: 1,
        local: Ipv4Addr::LOCALHOST,
        dstport: 4789,
        underlay: None,
        mtu: None,
    };
    link::block_on(async {
        let l = Links::open()?;
        l.add_vxlan(&cfg).await?;
        l.delete(&cfg.name).await
    })
    .and_then(|r| r)
    .map_err(|e| e.to_string())
}

fn tun() -> Result<(), String> {
    tap::create(&TapConfig::new("ktap-probe"))
        .map(drop)
        .map_err(|e| e.to_string())
}

fn vhost_net() -> Result<(), String> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(VHOST_NET)
        .map(drop)
        .map_err(|e| format!("open {VHOST_NET}: {e}"))
}

fn check(f: Feature) -> Result<(), String> {
    match f {
        Feature::NftInet => nft_table(NFPROTO_INET),
        Feature::NftBridge => nft_table(NFPROTO_BRIDGE),
        Feature::NftNetdev => nft_table(NFPROTO_NETDEV),
        Feature::BrNetfilter => br_netfilter(),
        Feature::ConntrackZones => ct_set_rule(NFT_CT_ZONE),
        Feature::Vxlan => vxlan(),
        Feature::Tun => tun(),
        Feature::VhostNet => vhost_net(),
    }
}

/// Probe every feature inside a throwaway network namespace. Needs root
/// (CAP_SYS_ADMIN for the namespace, CAP_NET_ADMIN inside it); without it
/// every check reports the permission error.
pub fn probe() -> ProbeReport {
    let run = netns::run_in_scratch(|| {
        Feature::ALL
            .iter()
            .map(|&feature| Check {
                feature,
                result: check(feature),
            })
            .collect::<Vec<_>>()
    });
    let checks = match run {
        Ok(c) => c,
        Err(e) => Feature::ALL
            .iter()
            .map(|&feature| Check {
                feature,
                result: Err(format!("cannot create a scratch network namespace: {e}")),
            })
            .collect(),
    };
    ProbeReport { checks }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(missing: &[Feature]) -> ProbeReport {
        ProbeReport {
            checks: Feature::ALL
                .iter()
                .map(|&feature| Check {
                    feature,
                    result: if missing.contains(&feature) {
                        Err("gone".into())
                    } else {
                        Ok(())
                    },
                })
                .collect(),
        }
    }

    #[test]
    fn one_message_names_everything_missing() {
        let r = report(&[Feature::VhostNet, Feature::Vxlan]);
        assert_eq!(
            r.missing_message().as_deref(),
            Some("kernel features missing: VXLAN (required: gone); vhost-net (optional: gone)")
        );
        assert!(r.fatal());
        assert!(!r.has(Feature::Vxlan) && r.has(Feature::Tun));
        let ok = report(&[Feature::VhostNet]);
        assert!(!ok.fatal());
        let all = report(&[]);
        assert_eq!(all.missing_message(), None);
        assert_eq!(all.to_string(), "kernel features: all present");
    }

    #[test]
    fn probe_on_this_machine() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipping probe_on_this_machine: needs root");
            return;
        }
        let r = probe();
        eprintln!("{r}");
        // PLATFORM.md: this kernel lacks /dev/vhost-net and has the rest.
        assert_eq!(r.missing(), vec![Feature::VhostNet], "{r}");
        assert!(!r.fatal());
        let msg = r.missing_message().unwrap_or_default();
        assert!(
            msg.contains("vhost-net") && msg.contains("/dev/vhost-net"),
            "{msg}"
        );

        // The zone check is a real kernel check: setting a key that cannot be
        // set (the ct state) is refused the same way missing zones would be.
        let state = netns::run_in_scratch(|| ct_set_rule(crate::nft::sys::NFT_CT_STATE)).unwrap();
        assert!(state.is_err());
    }
}
