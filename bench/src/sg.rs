//! `kiln-bench sg`: security groups on the data path and on the control path.
//!
//! In namespaces it creates (and always deletes): a host namespace with a
//! bridge and two guest namespaces behind veths, plus a model of N ports × R
//! rules (remote groups included; all but the two real guests are synthetic
//! ports whose interfaces need not exist).
//! - throughput: iperf3 TCP from guest a to guest b with no nftables tables
//!   vs with the whole model installed (runs interleaved ABBA, client and
//!   server pinned to different CPUs, the slow-start second left out);
//! - control path: one port's update (it moves to another group: two member
//!   sets and two remote-group sets change, one batch) and one remote-group
//!   member change (it joins or leaves a rule-less group), p50/p99 over U updates,
//!   timed until the batch is acknowledged (the rules are then in force); the
//!   conntrack cleanup that follows each is timed separately,
//!   against the `nft` binary applying the same port change with `nft -f` to an
//!   identical ruleset in another namespace, in the same run;
//! - reconcile: N ports from an empty kernel, and a no-op reconcile after a restart.

use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use clap::Args;
use kiln_netdp::model::{
    Direction, Ethertype, FixedIp, Model, Network, Port, SecurityGroup, SecurityGroupRule,
};
use kiln_netdp::netns;
use kiln_netdp::nft::sys::{NFPROTO_BRIDGE, NFPROTO_INET};
use kiln_netdp::nft::{Batch, Socket};
use kiln_netdp::secgroup::SecurityGroups;
use serde_json::json;

use crate::report::Report;
use crate::stats::summarize;

#[derive(Args, Debug)]
pub struct SgArgs {
    /// Ports in the model.
    #[arg(long, default_value_t = 1000)]
    pub ports: usize,
    /// Rules per security group (each port is in one such group).
    #[arg(long, default_value_t = 20)]
    pub rules: usize,
    /// Timed updates of each kind (kiln port update, member change, nft -f).
    #[arg(long, default_value_t = 1000)]
    pub updates: usize,
    /// iperf3 runs per condition, and reconcile repetitions.
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Seconds per iperf3 run.
    #[arg(long, default_value_t = 4.0)]
    pub seconds: f64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}

const GROUPS: usize = 50;
const BRIDGE: &str = "br0";
const IPERF_PORT: u16 = 5201;

/// Namespaces of one run; deleted on drop, whatever happened.
struct Namespaces {
    tag: String,
    made: Vec<String>,
}

impl Namespaces {
    fn new() -> Namespaces {
        Namespaces {
            tag: format!("kbsg-{}", std::process::id()),
            made: Vec::new(),
        }
    }

    fn add(&mut self, suffix: &str) -> anyhow::Result<String> {
        let name = format!("{}-{suffix}", self.tag);
        ip(&["netns", "add", &name])?;
        self.made.push(name.clone());
        Ok(name)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

fn ns_ip(ns: &str, args: &[&str]) -> anyhow::Result<()> {
    let mut v = vec!["-n", ns];
    v.extend_from_slice(args);
    ip(&v)
}

fn mac(j: usize) -> String {
    format!("02:00:0b:00:{:02x}:{:02x}", (j >> 8) & 0xff, j & 0xff)
}

fn addr(j: usize) -> Ipv4Addr {
    let n = j + 10;
    Ipv4Addr::new(10, 200, (n >> 8) as u8, (n & 0xff) as u8)
}

fn ifname(j: usize) -> String {
    match j {
        0 => "kbva".into(),
        1 => "kbvb".into(),
        _ => format!("kb{j}"),
    }
}

fn group(i: usize) -> String {
    format!("g{i}")
}

fn r(
    id: String,
    direction: Direction,
    ethertype: Ethertype,
    protocol: &str,
    ports: (u32, u32),
    prefix: Option<String>,
    remote: Option<String>,
) -> SecurityGroupRule {
    SecurityGroupRule {
        id,
        direction,
        ethertype,
        protocol: Some(protocol.to_string()),
        port_range_min: Some(ports.0),
        port_range_max: Some(ports.1),
        remote_ip_prefix: prefix,
        remote_group_id: remote,
    }
}

/// Group `i`'s rules: a mix of port ranges, ICMP, prefixes and remote groups.
fn group_rules(i: usize, n: usize) -> Vec<SecurityGroupRule> {
    use Direction::{Egress, Ingress};
    use Ethertype::{IPv4, IPv6};
    (0..n)
        .map(|k| {
            let id = format!("g{i}-r{k}");
            let k32 = k as u32;
            match k % 5 {
                0 => r(
                    id,
                    Ingress,
                    IPv4,
                    "tcp",
                    (1000 + k32, 1010 + k32),
                    None,
                    Some(group((i + 1) % GROUPS)),
                ),
                1 => r(
                    id,
                    Ingress,
                    IPv4,
                    "udp",
                    (2000 + k32, 2000 + k32),
                    Some(format!("10.{k}.0.0/16")),
                    None,
                ),
                2 => r(
                    id,
                    Ingress,
                    IPv4,
                    "icmp",
                    (8, 0),
                    Some(format!("192.168.{k}.0/24")),
                    None,
                ),
                3 => r(
                    id,
                    Egress,
                    IPv4,
                    "tcp",
                    (3000 + k32, 3000 + k32),
                    None,
                    Some(group(i)),
                ),
                _ => r(
                    id,
                    Ingress,
                    IPv6,
                    "tcp",
                    (4000 + k32, 4000 + k32),
                    Some(format!("2001:db8:{k}::/48")),
                    None,
                ),
            }
        })
        .collect()
}

fn bench_model(ports: usize, rules: usize) -> Model {
    let mut m = Model::default();
    m.add_network(Network {
        id: "net".into(),
        bridge: BRIDGE.into(),
        ct_zone: 1,
    });
    for i in 0..GROUPS {
        m.add_security_group(SecurityGroup {
            id: group(i),
            rules: group_rules(i, rules),
        });
    }
    m.add_security_group(SecurityGroup {
        id: "app".into(),
        rules: vec![],
    });
    let mut iperf = r(
        "iperf".into(),
        Direction::Ingress,
        Ethertype::IPv4,
        "tcp",
        (u32::from(IPERF_PORT), u32::from(IPERF_PORT)),
        None,
        Some("iperf".into()),
    );
    let mut out = iperf.clone();
    out.id = "iperf-out".into();
    out.direction = Direction::Egress;
    out.remote_group_id = None;
    out.protocol = None;
    (out.port_range_min, out.port_range_max) = (None, None);
    iperf.id = "iperf-in".into();
    m.add_security_group(SecurityGroup {
        id: "iperf".into(),
        rules: vec![iperf, out],
    });
    for j in 0..ports {
        let mut groups = vec![group(j % GROUPS)];
        if j < 2 {
            groups.push("iperf".into());
        }
        m.add_port(Port {
            id: format!("p{j}"),
            network_id: "net".into(),
            ifname: ifname(j),
            mac_address: mac(j),
            fixed_ips: vec![FixedIp {
                subnet_id: None,
                ip_address: addr(j).into(),
            }],
            allowed_address_pairs: vec![],
            port_security_enabled: true,
            security_groups: groups,
        });
    }
    m
}

/// The `nft -f` script making the same change as kiln's port update: port
/// `j` (packet mark `mark`) moves from group `from` to group `to`, i.e. its
/// mark leaves and joins the groups' member sets and its address their
/// remote-group sets, in one transaction.
fn nft_port_update(j: usize, mark: u32, from: &str, to: &str) -> String {
    let ip = addr(j);
    // kiln stores marks in host byte order; nft reads a set of type mark
    // without byte-order metadata as big-endian, so give it the same bytes.
    let mark = u32::from_be_bytes(mark.to_ne_bytes());
    let mut s = String::new();
    let _ = writeln!(s, "delete element inet kiln pg-{from} {{ {mark:#010x} }}");
    let _ = writeln!(s, "add element inet kiln pg-{to} {{ {mark:#010x} }}");
    let _ = writeln!(s, "delete element inet kiln rg4-{from} {{ {ip} }}");
    let _ = writeln!(s, "add element inet kiln rg4-{to} {{ {ip} }}");
    s
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// CPUs for the iperf3 server and client: pinned apart when there are two
/// or more (on two cores an unpinned pair sometimes shares one, which made
/// runs differ by more than the effect measured).
fn iperf_cpus() -> Option<(String, String)> {
    let n = std::thread::available_parallelism().map_or(1, |n| n.get());
    (n >= 2).then(|| ("1".to_string(), "0".to_string()))
}

/// One iperf3 run from `client_ns` to `server` in `server_ns`; bits per
/// second received, the first (slow-start) second left out.
fn iperf(server_ns: &str, client_ns: &str, server: Ipv4Addr, seconds: f64) -> anyhow::Result<f64> {
    let cpus = iperf_cpus();
    let mut srv = netns::run_in(server_ns, || {
        let mut cmd = Command::new("iperf3");
        cmd.args([
            "-s",
            "-1",
            "-B",
            &server.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
        ]);
        if let Some((s, _)) = &cpus {
            cmd.args(["-A", s]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn()
    })??;
    std::thread::sleep(Duration::from_millis(300));
    let out = netns::run_in(client_ns, || {
        let mut cmd = Command::new("iperf3");
        cmd.args([
            "-c",
            &server.to_string(),
            "-p",
            &IPERF_PORT.to_string(),
            "-t",
            &format!("{seconds}"),
            "-O",
            "1",
            "-J",
        ]);
        if let Some((_, c)) = &cpus {
            cmd.args(["-A", c]);
        }
        cmd.output()
    })??;
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("iperf3 -J output is not JSON")?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .ok_or_else(|| anyhow!("iperf3 failed: {}", v["error"]))
}

fn delete_tables(ns: &str) -> anyhow::Result<()> {
    netns::run_in(ns, || -> anyhow::Result<()> {
        let mut sock = Socket::open()?;
        for fam in [NFPROTO_BRIDGE, NFPROTO_INET] {
            if sock.list_tables(fam)?.iter().any(|t| t.name == "kiln") {
                let mut b = Batch::new();
                b.del_table(fam, "kiln");
                sock.send_batch(&b)?;
            }
        }
        Ok(())
    })?
}

fn has_tool(t: &str) -> bool {
    Command::new(t)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

pub fn run(args: SgArgs) -> anyhow::Result<()> {
    if args.ports < 4 {
        bail!("--ports must be at least 4");
    }
    let mut report = Report::new("sg", args.runs);
    let model = bench_model(args.ports, args.rules);
    let mut nss = Namespaces::new();
    let host = nss.add("h")?;
    let a = nss.add("a")?;
    let b = nss.add("b")?;
    let refns = nss.add("r")?;
    let clean = nss.add("c")?;
    ns_ip(&host, &["link", "add", BRIDGE, "type", "bridge"])?;
    ns_ip(&host, &["link", "set", BRIDGE, "up"])?;
    for (j, g) in [(0usize, &a), (1, &b)] {
        let host_if = ifname(j);
        ip(&[
            "link", "add", &host_if, "netns", &host, "type", "veth", "peer", "name", "eth0",
            "netns", g,
        ])?;
        ns_ip(&host, &["link", "set", &host_if, "master", BRIDGE, "up"])?;
        ns_ip(g, &["link", "set", "eth0", "address", &mac(j)])?;
        ns_ip(
            g,
            &["addr", "add", &format!("{}/16", addr(j)), "dev", "eth0"],
        )?;
        ns_ip(g, &["link", "set", "eth0", "up"])?;
        ns_ip(g, &["link", "set", "lo", "up"])?;
    }

    // --- throughput: no tables vs the whole model -------------------------------
    let mut sg = netns::run_in(&host, SecurityGroups::open)??;
    if has_tool("iperf3") {
        let (mut plain, mut ruled) = (Vec::new(), Vec::new());
        // Interleaved in ABBA order, so a drift of the machine over the run
        // weighs on both conditions alike.
        for i in 0..args.runs {
            for with_rules in [i % 2 == 1, i % 2 == 0] {
                if with_rules {
                    sg.reconcile(&model)?;
                    ruled.push(iperf(&b, &a, addr(1), args.seconds)? / 1e9);
                } else {
                    delete_tables(&host)?;
                    plain.push(iperf(&b, &a, addr(1), args.seconds)? / 1e9);
                }
            }
        }
        let p = summarize(&plain).ok_or_else(|| anyhow!("no iperf3 runs"))?;
        let q = summarize(&ruled).ok_or_else(|| anyhow!("no iperf3 runs"))?;
        report.result(
            "norules",
            json!({ "throughput_gbps": round3(p.median), "spread": round3(p.spread),
                    "samples_gbps": plain.iter().map(|x| round3(*x)).collect::<Vec<_>>() }),
        );
        report.result(
            "rules",
            json!({ "throughput_gbps": round3(q.median), "spread": round3(q.spread),
                    "samples_gbps": ruled.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
                    "ports": args.ports, "rules_per_port": args.rules }),
        );
        report.ratio("rules_over_norules_throughput", q.median, p.median);
    } else {
        report.unavailable("throughput", "iperf3 is not installed (apt: iperf3)");
        report.ratios.insert(
            "rules_over_norules_throughput".into(),
            serde_json::Value::Null,
        );
    }

    // --- control path: kiln ------------------------------------------------------
    sg.reconcile(&model)?;
    let mut m = model.clone();
    let (pj, qj) = (2usize, 3usize);
    let (p_id, q_id) = (format!("p{pj}"), format!("p{qj}"));
    let ga = group(pj % GROUPS);
    let gb = group((pj + 1) % GROUPS);
    let mut port_ms = Vec::with_capacity(args.updates);
    let mut ct_ms = Vec::with_capacity(2 * args.updates);
    let mut port_msgs = 0;
    for i in 0..args.updates {
        let to = if i % 2 == 0 { &gb } else { &ga };
        if let Some(p) = m.ports.get_mut(&p_id) {
            p.security_groups = vec![to.clone()];
        }
        let t = Instant::now();
        let pending = sg.apply_ports_deferred(&m, &[&p_id])?;
        port_ms.push(ms(t.elapsed()));
        port_msgs = pending.messages;
        let t = Instant::now();
        sg.flush_conntrack(&pending.conntrack)?;
        ct_ms.push(ms(t.elapsed()));
    }
    let mut member_ms = Vec::with_capacity(args.updates);
    for i in 0..args.updates {
        if let Some(p) = m.ports.get_mut(&q_id) {
            p.security_groups = if i % 2 == 0 {
                vec![group(qj % GROUPS), "app".into()]
            } else {
                vec![group(qj % GROUPS)]
            };
        }
        let t = Instant::now();
        let pending = sg.apply_ports_deferred(&m, &[&q_id])?;
        member_ms.push(ms(t.elapsed()));
        let t = Instant::now();
        sg.flush_conntrack(&pending.conntrack)?;
        ct_ms.push(ms(t.elapsed()));
    }
    let pu = summarize(&port_ms).ok_or_else(|| anyhow!("no updates"))?;
    let mc = summarize(&member_ms).ok_or_else(|| anyhow!("no updates"))?;
    let ct = summarize(&ct_ms).ok_or_else(|| anyhow!("no updates"))?;

    // --- reconcile ------------------------------------------------------------------
    let mut full_ms = Vec::new();
    let mut noop_ms = Vec::new();
    for _ in 0..args.runs {
        delete_tables(&clean)?;
        let mut fresh = netns::run_in(&clean, SecurityGroups::open)??;
        let t = Instant::now();
        fresh.reconcile(&model)?;
        full_ms.push(ms(t.elapsed()));
        drop(fresh);
        let mut restarted = netns::run_in(&clean, SecurityGroups::open)??;
        let t = Instant::now();
        let applied = restarted.reconcile(&model)?;
        noop_ms.push(ms(t.elapsed()));
        if applied.messages != 0 {
            bail!("a no-op reconcile sent {} messages", applied.messages);
        }
    }
    let full = summarize(&full_ms).ok_or_else(|| anyhow!("no reconciles"))?;
    let noop = summarize(&noop_ms).ok_or_else(|| anyhow!("no reconciles"))?;

    report.result(
        "kiln",
        json!({
            "port_update_p50_ms": round3(pu.median), "port_update_p99_ms": round3(pu.p99),
            "port_update_messages": port_msgs,
            "member_change_p50_ms": round3(mc.median), "member_change_p99_ms": round3(mc.p99),
            "conntrack_cleanup_p50_ms": round3(ct.median), "conntrack_cleanup_p99_ms": round3(ct.p99),
            "reconcile_full_ms": round3(full.median), "reconcile_noop_ms": round3(noop.median),
            "ports": args.ports, "updates": args.updates,
        }),
    );
    report.result("port_update_p50_ms", json!(round3(pu.median)));

    // --- control path: the nft binary, same change, identical ruleset -------------
    if has_tool("nft") {
        let mut rs = netns::run_in(&refns, SecurityGroups::open)??;
        rs.reconcile(&model)?;
        let dir = std::env::temp_dir().join(format!("kbsg-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mark = rs
            .mark_of(&p_id)
            .ok_or_else(|| anyhow!("port {p_id} has no mark"))?;
        let scripts = [
            (dir.join("to_b.nft"), nft_port_update(pj, mark, &ga, &gb)),
            (dir.join("to_a.nft"), nft_port_update(pj, mark, &gb, &ga)),
        ];
        for (p, s) in &scripts {
            std::fs::write(p, s)?;
        }
        let mut nft_ms = Vec::with_capacity(args.updates);
        let result = netns::run_in(&refns, || -> anyhow::Result<()> {
            for i in 0..args.updates {
                let path = &scripts[i % 2].0;
                let t = Instant::now();
                let out = Command::new("nft").arg("-f").arg(path).output()?;
                nft_ms.push(ms(t.elapsed()));
                if !out.status.success() {
                    bail!("nft -f failed: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
            Ok(())
        })?;
        let _ = std::fs::remove_dir_all(&dir);
        result?;
        let n = summarize(&nft_ms).ok_or_else(|| anyhow!("no nft updates"))?;
        report.result(
            "nft",
            json!({ "port_update_p50_ms": round3(n.median), "port_update_p99_ms": round3(n.p99) }),
        );
        report.ratio("nft_over_kiln_port_update", n.median, pu.median);
    } else {
        report.unavailable("nft", "the nft binary is not installed (apt: nftables)");
        report
            .ratios
            .insert("nft_over_kiln_port_update".into(), serde_json::Value::Null);
    }
    drop(sg);
    drop(nss);
    report.print(args.json);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_has_the_asked_size() {
        let m = bench_model(10, 20);
        assert_eq!(m.ports.len(), 10);
        assert!(m
            .security_groups
            .values()
            .filter(|g| g.id.starts_with('g'))
            .all(|g| g.rules.len() == 20));
        assert_eq!(addr(0), Ipv4Addr::new(10, 200, 0, 10));
    }

    #[test]
    fn nft_script_moves_the_port_between_groups() {
        let script = nft_port_update(2, 7, "g2", "g3");
        let want = format!(
            "pg-g2 {{ {:#010x} }}",
            u32::from_be_bytes(7u32.to_ne_bytes())
        );
        assert!(script.contains(&want), "{script}");
        assert!(script.contains("add element inet kiln rg4-g3 { 10.200.0.12 }"));
    }
}
