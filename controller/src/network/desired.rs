//! The desired state nodes fetch and reconcile: per network (VNI, MTU, subnets)
//! and per port (MAC, addresses, anti-spoofing pairs, security-group rules with
//! remote groups resolved to addresses), plus routers and floating IPs.
//!
//! It is computed from the authoritative records in one read transaction, so
//! it is always consistent and a node that restarts rebuilds from it alone.
//! Served at `GET /network/kiln/v1/desired[?host=H]` (admin/service token; the
//! node authenticates with the service credentials). `revision` grows with
//! every change a node must realise, so a node can skip unchanged states.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::error::NetResult;
use super::model::{owners, Port};
use super::tables;
use crate::store::Store;

fn port_view(p: &Port) -> Value {
    json!({
        "id": p.id,
        "network_id": p.network_id,
        "project_id": p.project_id,
        "mac_address": p.mac_address,
        "fixed_ips": p.fixed_ips,
        "admin_state_up": p.admin_state_up,
        "device_id": p.device_id,
        "device_owner": p.device_owner,
        "host": p.binding_host_id,
        "port_security_enabled": p.port_security_enabled,
        "allowed_address_pairs": p.allowed_address_pairs,
        "security_groups": p.security_groups,
        "status": p.status,
    })
}

/// The desired state for `host` (every bound port when `None`), with the
/// networks, groups, routers and floating IPs those ports need.
pub fn desired(store: &dyn Store, host: Option<&str>) -> NetResult<Value> {
    let r = store.read()?;
    let all_ports = tables::PORTS.values(&*r)?;
    let mut revision: u64 = 0;
    let mut bump = |n: u64| revision = revision.saturating_add(n + 1);
    let ports: Vec<&Port> = all_ports
        .iter()
        .filter(|p| match host {
            Some(h) => p.binding_host_id == h,
            None => true,
        })
        .collect();
    let net_ids: BTreeSet<&str> = ports.iter().map(|p| p.network_id.as_str()).collect();
    let mut networks = Vec::new();
    for n in tables::NETWORKS.values(&*r)? {
        if host.is_some() && !net_ids.contains(n.id.as_str()) {
            continue;
        }
        bump(n.std.revision_number);
        let mut subnets = Vec::new();
        for sid in &n.subnets {
            if let Some(s) = tables::SUBNETS.get(&*r, sid)? {
                bump(s.std.revision_number);
                subnets.push(json!({
                    "id": s.id, "ip_version": s.ip_version, "cidr": s.cidr,
                    "gateway_ip": s.gateway_ip, "enable_dhcp": s.enable_dhcp,
                    "dns_nameservers": s.dns_nameservers, "host_routes": s.host_routes,
                    "allocation_pools": s.allocation_pools,
                }));
            }
        }
        networks.push(json!({
            "id": n.id, "project_id": n.project_id, "vni": n.kiln_vni, "mtu": n.mtu,
            "admin_state_up": n.admin_state_up, "router_external": n.router_external,
            "subnets": subnets,
        }));
    }
    // Members of every group, as addresses, for remote-group rules.
    let mut members: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for p in &all_ports {
        for g in &p.security_groups {
            let e = members.entry(g.as_str()).or_default();
            e.extend(p.fixed_ips.iter().map(|f| f.ip_address.clone()));
            e.extend(p.allowed_address_pairs.iter().map(|a| a.ip_address.clone()));
        }
    }
    let wanted: BTreeSet<&str> = ports
        .iter()
        .flat_map(|p| p.security_groups.iter().map(String::as_str))
        .collect();
    let rules = tables::SG_RULES.values(&*r)?;
    let mut groups = Vec::new();
    for g in tables::SECURITY_GROUPS.values(&*r)? {
        if host.is_some() && !wanted.contains(g.id.as_str()) {
            continue;
        }
        bump(g.std.revision_number);
        let mut list = Vec::new();
        for rule in rules.iter().filter(|x| x.security_group_id == g.id) {
            bump(rule.std.revision_number);
            let remote_ips = rule
                .remote_group_id
                .as_deref()
                .map(|rg| members.get(rg).cloned().unwrap_or_default());
            list.push(json!({
                "id": rule.id, "direction": rule.direction, "ethertype": rule.ethertype,
                "protocol": rule.protocol, "port_range_min": rule.port_range_min,
                "port_range_max": rule.port_range_max, "remote_ip_prefix": rule.remote_ip_prefix,
                "remote_group_id": rule.remote_group_id, "remote_group_ips": remote_ips,
            }));
        }
        groups.push(json!({"id": g.id, "rules": list}));
    }
    let mut port_views = Vec::new();
    for p in &ports {
        bump(p.std.revision_number);
        port_views.push(port_view(p));
    }
    let mut routers = Vec::new();
    for rt in tables::ROUTERS.values(&*r)? {
        bump(rt.std.revision_number);
        let interfaces: Vec<Value> = all_ports
            .iter()
            .filter(|p| p.device_id == rt.id && p.device_owner == owners::ROUTER_INTERFACE)
            .map(port_view)
            .collect();
        routers.push(json!({
            "id": rt.id, "project_id": rt.project_id, "admin_state_up": rt.admin_state_up,
            "gateway": rt.external_gateway_info, "interfaces": interfaces,
        }));
    }
    let mut fips = Vec::new();
    for f in tables::FLOATING_IPS.values(&*r)? {
        bump(f.std.revision_number);
        fips.push(json!({
            "id": f.id, "floating_ip_address": f.floating_ip_address,
            "floating_network_id": f.floating_network_id, "port_id": f.port_id,
            "fixed_ip_address": f.fixed_ip_address, "router_id": f.router_id,
        }));
    }
    Ok(json!({
        "desired": {
            "host": host,
            "revision": revision,
            "networks": networks,
            "ports": port_views,
            "security_groups": groups,
            "routers": routers,
            "floatingips": fips,
        }
    }))
}
