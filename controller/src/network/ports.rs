//! Ports: MAC generation, fixed IP allocation (by subnet or address, recorded in
//! the IPAM ledger within the port's write transaction), bindings, port
//! security, allowed address pairs and security groups.

use serde::Deserialize;
use serde_json::{Map, Value};

use super::error::{NetError, NetResult};
use super::ipam::{self, from_num, parse_ip, to_num, Cidr};
use super::model::{owners, AddressPair, FixedIp, Network, Port, StdAttrs, Subnet};
use super::ops::{asked_project, check_tag, find, find_owned, get, write};
use super::subnets::pools;
use super::{new_id, quota, secgroups, tables, Ctx};
use crate::store::{Store, WriteTxn};

/// How many candidate addresses one allocation examines at most.
const SCAN_BUDGET: usize = 1 << 16;

/// A requested fixed IP: by subnet, by address, or both.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FixedIpReq {
    pub subnet_id: Option<String>,
    pub ip_address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairReq {
    pub ip_address: String,
    pub mac_address: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortCreate {
    pub network_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub mac_address: Option<String>,
    pub fixed_ips: Option<Vec<FixedIpReq>>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub security_groups: Option<Vec<String>>,
    pub port_security_enabled: Option<bool>,
    pub allowed_address_pairs: Option<Vec<PairReq>>,
    #[serde(rename = "binding:host_id")]
    pub binding_host_id: Option<String>,
    #[serde(rename = "binding:vnic_type")]
    pub binding_vnic_type: Option<String>,
    #[serde(rename = "binding:profile")]
    pub binding_profile: Option<Map<String, Value>>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub fixed_ips: Option<Vec<FixedIpReq>>,
    pub device_id: Option<String>,
    pub device_owner: Option<String>,
    pub security_groups: Option<Vec<String>>,
    pub port_security_enabled: Option<bool>,
    pub allowed_address_pairs: Option<Vec<PairReq>>,
    #[serde(rename = "binding:host_id")]
    pub binding_host_id: Option<String>,
    #[serde(rename = "binding:vnic_type")]
    pub binding_vnic_type: Option<String>,
    #[serde(rename = "binding:profile")]
    pub binding_profile: Option<Map<String, Value>>,
}

fn taken(w: &dyn WriteTxn, subnet: &str, ip: &str) -> NetResult<bool> {
    Ok(tables::IP_ALLOCATIONS.contains(w.as_read(), &tables::ip_key(subnet, ip))?)
}

fn auto_v6(s: &Subnet) -> bool {
    matches!(
        s.ipv6_address_mode.as_deref(),
        Some("slaac") | Some("dhcpv6-stateless")
    )
}

/// Allocates the port's addresses and records them in the ledger. With no
/// request: one address of the first IPv4 subnet with room, one of the first
/// stateful IPv6 subnet, and the EUI-64 address on every SLAAC subnet.
pub fn allocate(
    w: &mut dyn WriteTxn,
    net: &Network,
    port_id: &str,
    mac: &str,
    requested: Option<&[FixedIpReq]>,
) -> NetResult<Vec<FixedIp>> {
    let mut subnets = Vec::new();
    for id in &net.subnets {
        subnets.push(get::<Subnet>(w.as_read(), id)?);
    }
    let mut out: Vec<FixedIp> = Vec::new();
    match requested {
        Some(reqs) => {
            for r in reqs {
                let subnet = match (&r.subnet_id, &r.ip_address) {
                    (Some(sid), _) => subnets.iter().find(|s| &s.id == sid).ok_or_else(|| {
                        NetError::invalid(format!(
                            "Failed to create port on network {}, because fixed_ips included invalid subnet {sid}",
                            net.id
                        ))
                    })?,
                    (None, Some(ip)) => {
                        let addr = parse_ip(ip, "fixed_ips")?;
                        let mut found = None;
                        for s in &subnets {
                            if Cidr::parse(&s.cidr, false)?.contains(&addr) {
                                found = Some(s);
                                break;
                            }
                        }
                        found.ok_or_else(|| {
                            NetError::BadRequest(format!(
                                "IP address {ip} is not a valid IP for any subnet on network {}.",
                                net.id
                            ))
                        })?
                    }
                    (None, None) => {
                        return Err(NetError::invalid(
                            "Exact IP address or a subnet_id is required in fixed_ips",
                        ))
                    }
                };
                let cidr = Cidr::parse(&subnet.cidr, false)?;
                let ip = match &r.ip_address {
                    Some(ip) => {
                        let addr = parse_ip(ip, "fixed_ips")?;
                        let n = to_num(addr);
                        let edge = cidr.version == 4
                            && cidr.prefix < 31
                            && (n == cidr.base || n == cidr.last());
                        if !cidr.contains(&addr) || edge {
                            return Err(NetError::BadRequest(format!(
                                "IP address {ip} is not a valid IP for the specified subnet."
                            )));
                        }
                        let text = addr.to_string();
                        if taken(w, &subnet.id, &text)? || out.iter().any(|f| f.ip_address == text)
                        {
                            return Err(NetError::conflict(
                                "IpAddressAlreadyAllocated",
                                format!(
                                    "IP address {text} already allocated in subnet {}",
                                    subnet.id
                                ),
                            ));
                        }
                        text
                    }
                    None => next_address(w, subnet, &cidr, mac)?.ok_or_else(|| {
                        NetError::conflict(
                            "IpAddressGenerationFailure",
                            format!("No more IP addresses available on network {}.", net.id),
                        )
                    })?,
                };
                out.push(FixedIp {
                    subnet_id: subnet.id.clone(),
                    ip_address: ip,
                });
            }
        }
        None => {
            let mut have_v4 = false;
            let mut have_v6 = false;
            for s in &subnets {
                let cidr = Cidr::parse(&s.cidr, false)?;
                let wanted = if s.ip_version == 4 {
                    !have_v4
                } else {
                    auto_v6(s) || !have_v6
                };
                if !wanted {
                    continue;
                }
                if let Some(ip) = next_address(w, s, &cidr, mac)? {
                    if s.ip_version == 4 {
                        have_v4 = true;
                    } else if !auto_v6(s) {
                        have_v6 = true;
                    }
                    out.push(FixedIp {
                        subnet_id: s.id.clone(),
                        ip_address: ip,
                    });
                }
            }
            if !subnets.is_empty() && out.is_empty() {
                return Err(NetError::conflict(
                    "IpAddressGenerationFailure",
                    format!("No more IP addresses available on network {}.", net.id),
                ));
            }
        }
    }
    for f in &out {
        tables::IP_ALLOCATIONS.put(
            w,
            &tables::ip_key(&f.subnet_id, &f.ip_address),
            &port_id.to_string(),
        )?;
    }
    Ok(out)
}

fn next_address(w: &dyn WriteTxn, s: &Subnet, cidr: &Cidr, mac: &str) -> NetResult<Option<String>> {
    if s.ip_version == 6 && auto_v6(s) {
        let Some(n) = ipam::eui64(cidr, mac) else {
            return Ok(None);
        };
        let text = from_num(n, 6).to_string();
        return Ok((!taken(w, &s.id, &text)?).then_some(text));
    }
    let found = ipam::first_free(&pools(s)?, SCAN_BUDGET, |n| {
        taken(w, &s.id, &from_num(n, cidr.version).to_string())
    })?;
    Ok(found.map(|n| from_num(n, cidr.version).to_string()))
}

/// Frees a port's addresses and MAC.
pub fn release(w: &mut dyn WriteTxn, port: &Port) -> NetResult<()> {
    for f in &port.fixed_ips {
        tables::IP_ALLOCATIONS.delete(w, &tables::ip_key(&f.subnet_id, &f.ip_address))?;
    }
    tables::MACS.delete(w, &format!("{}|{}", port.network_id, port.mac_address))?;
    Ok(())
}

fn claim_mac(
    w: &mut dyn WriteTxn,
    net_id: &str,
    asked: Option<&str>,
    port_id: &str,
) -> NetResult<String> {
    let mac = match asked {
        Some(m) => {
            let m = ipam::normalize_mac(m)?;
            if tables::MACS.contains(w.as_read(), &format!("{net_id}|{m}"))? {
                return Err(NetError::conflict(
                    "MacAddressInUse",
                    format!("Unable to complete operation for network {net_id}. The mac address {m} is in use."),
                ));
            }
            m
        }
        None => {
            let mut m = ipam::random_mac();
            let mut tries = 0;
            while tables::MACS.contains(w.as_read(), &format!("{net_id}|{m}"))? {
                tries += 1;
                if tries > 16 {
                    return Err(NetError::conflict(
                        "MacAddressGenerationFailure",
                        format!("Unable to generate unique mac on network {net_id}."),
                    ));
                }
                m = ipam::random_mac();
            }
            m
        }
    };
    tables::MACS.put(w, &format!("{net_id}|{mac}"), &port_id.to_string())?;
    Ok(mac)
}

fn pairs(reqs: &[PairReq], mac: &str) -> NetResult<Vec<AddressPair>> {
    let mut out: Vec<AddressPair> = Vec::new();
    for p in reqs {
        let ip = if p.ip_address.contains('/') {
            Cidr::parse(&p.ip_address, false)?.text()
        } else {
            parse_ip(&p.ip_address, "allowed_address_pairs")?.to_string()
        };
        let pair = AddressPair {
            ip_address: ip,
            mac_address: match &p.mac_address {
                Some(m) => ipam::normalize_mac(m)?,
                None => mac.to_string(),
            },
        };
        if out.contains(&pair) {
            return Err(NetError::BadRequest(
                "Request contains duplicate address pair".into(),
            ));
        }
        out.push(pair);
    }
    Ok(out)
}

/// The port's security groups: the ones asked for (each must belong to the
/// port's project), else the project's default group.
fn groups(
    w: &mut dyn WriteTxn,
    ctx: &Ctx,
    project: &str,
    asked: Option<&[String]>,
    security: bool,
    owner: &str,
) -> NetResult<Vec<String>> {
    match asked {
        Some(ids) => {
            if !ids.is_empty() && !security {
                return Err(NetError::BadRequest(
                    "Port security must be enabled and port must have an IP address in order to use security groups.".into(),
                ));
            }
            let mut out: Vec<String> = Vec::new();
            for id in ids {
                let sg: super::model::SecurityGroup = find(w.as_read(), ctx, id)?;
                if sg.project_id != project {
                    return Err(NetError::sg_not_found(id));
                }
                if !out.contains(id) {
                    out.push(id.clone());
                }
            }
            Ok(out)
        }
        None if security && !owner.starts_with("network:") => {
            Ok(vec![secgroups::ensure_default(w, project)?])
        }
        None => Ok(Vec::new()),
    }
}

fn vif_type(host: &str) -> String {
    if host.is_empty() {
        "unbound".into()
    } else {
        "bridge".into()
    }
}

fn admin_field(ctx: &Ctx, set: bool, field: &str) -> NetResult<()> {
    if set && !ctx.admin {
        return Err(NetError::Forbidden(format!(
            "rule:create_port:{field} is disallowed by policy"
        )));
    }
    Ok(())
}

/// Creates a port in an open transaction (routers and floating IPs use it for
/// their own ports with `internal` set, which skips the owner checks).
pub fn create_in(
    w: &mut dyn WriteTxn,
    ctx: &Ctx,
    b: PortCreate,
    internal: bool,
) -> NetResult<Port> {
    let project = if internal {
        asked_project(&b.project_id, &b.tenant_id)?.unwrap_or_default()
    } else {
        ctx.target_project(asked_project(&b.project_id, &b.tenant_id)?.as_deref())?
    };
    let net: Network = if internal {
        get(w.as_read(), &b.network_id)?
    } else {
        find(w.as_read(), ctx, &b.network_id)?
    };
    if !internal && net.project_id != project && !net.shared {
        return Err(NetError::CrossProject(format!(
            "Network {} belongs to another project and is not shared; a port of project {project} cannot be attached to it.",
            net.id
        )));
    }
    if !internal {
        quota::check::<Port>(w.as_read(), &project, 1)?;
    }
    let id = new_id();
    let mac = claim_mac(w, &net.id, b.mac_address.as_deref(), &id)?;
    let owner = b.device_owner.clone().unwrap_or_default();
    let security = b.port_security_enabled.unwrap_or(net.port_security_enabled)
        && !owner.starts_with("network:");
    let pairs = pairs(b.allowed_address_pairs.as_deref().unwrap_or_default(), &mac)?;
    if !pairs.is_empty() && !security {
        return Err(NetError::conflict(
            "AddressPairAndPortSecurityRequired",
            "Port Security must be enabled in order to have allowed address pairs on a port.",
        ));
    }
    let sgs = groups(
        w,
        ctx,
        &project,
        b.security_groups.as_deref(),
        security,
        &owner,
    )?;
    let fixed_ips = allocate(w, &net, &id, &mac, b.fixed_ips.as_deref())?;
    let mut std = StdAttrs::new();
    for t in b.tags.iter().flatten() {
        check_tag(t)?;
        std.tags.push(t.clone());
    }
    let host = b.binding_host_id.unwrap_or_default();
    let port = Port {
        id,
        name: b.name.unwrap_or_default(),
        description: b.description.unwrap_or_default(),
        project_id: project,
        network_id: net.id.clone(),
        admin_state_up: b.admin_state_up.unwrap_or(true),
        mac_address: mac,
        fixed_ips,
        device_id: b.device_id.unwrap_or_default(),
        device_owner: owner,
        status: "DOWN".into(),
        security_groups: sgs,
        port_security_enabled: security,
        allowed_address_pairs: pairs,
        binding_vif_type: vif_type(&host),
        binding_host_id: host,
        binding_vnic_type: b.binding_vnic_type.unwrap_or_else(|| "normal".into()),
        binding_vif_details: Map::new(),
        binding_profile: b.binding_profile.unwrap_or_default(),
        std,
    };
    tables::PORTS.put(w, &port.id, &port)?;
    Ok(port)
}

pub fn create_port(store: &dyn Store, ctx: &Ctx, b: PortCreate) -> NetResult<Port> {
    ctx.require_write()?;
    admin_field(ctx, b.binding_host_id.is_some(), "binding:host_id")?;
    write(store, |w| create_in(w, ctx, b, false))
}

pub fn update_port(store: &dyn Store, ctx: &Ctx, id: &str, b: PortUpdate) -> NetResult<Port> {
    admin_field(ctx, b.binding_host_id.is_some(), "binding:host_id")?;
    write(store, |w| {
        let mut p: Port = find_owned(w.as_read(), ctx, id)?;
        if let Some(v) = b.name {
            p.name = v;
        }
        if let Some(v) = b.description {
            p.description = v;
        }
        if let Some(v) = b.admin_state_up {
            p.admin_state_up = v;
        }
        if let Some(v) = b.device_id {
            p.device_id = v;
        }
        if let Some(v) = b.device_owner {
            p.device_owner = v;
        }
        if let Some(v) = b.binding_host_id {
            p.binding_vif_type = vif_type(&v);
            p.binding_host_id = v;
        }
        if let Some(v) = b.binding_vnic_type {
            p.binding_vnic_type = v;
        }
        if let Some(v) = b.binding_profile {
            p.binding_profile = v;
        }
        if let Some(v) = b.port_security_enabled {
            p.port_security_enabled = v;
        }
        if let Some(reqs) = &b.allowed_address_pairs {
            p.allowed_address_pairs = pairs(reqs, &p.mac_address)?;
        }
        if let Some(ids) = &b.security_groups {
            p.security_groups = groups(
                w,
                ctx,
                &p.project_id.clone(),
                Some(ids),
                p.port_security_enabled,
                &p.device_owner,
            )?;
        }
        if !p.port_security_enabled {
            if !p.security_groups.is_empty() {
                return Err(NetError::conflict(
                    "PortSecurityPortHasSecurityGroup",
                    "Port has security group associated. Cannot disable port security or ip address until security group is removed",
                ));
            }
            if !p.allowed_address_pairs.is_empty() {
                return Err(NetError::conflict(
                    "AddressPairAndPortSecurityRequired",
                    "Port Security must be enabled in order to have allowed address pairs on a port.",
                ));
            }
        }
        if let Some(reqs) = &b.fixed_ips {
            let net: Network = get(w.as_read(), &p.network_id)?;
            for f in &p.fixed_ips {
                tables::IP_ALLOCATIONS.delete(w, &tables::ip_key(&f.subnet_id, &f.ip_address))?;
            }
            p.fixed_ips = allocate(w, &net, &p.id, &p.mac_address, Some(reqs))?;
        }
        p.std.bump();
        tables::PORTS.put(w, id, &p)?;
        Ok(p)
    })
}

/// Deletes a port (not router or floating IP ports: 409 `L3PortInUse`) and
/// disassociates floating IPs from it.
pub fn delete_port(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let p: Port = find_owned(w.as_read(), ctx, id)?;
        if owners::is_l3(&p.device_owner) {
            return Err(NetError::conflict(
                "L3PortInUse",
                format!(
                    "Port {id} cannot be deleted directly via the port API: has device owner {}.",
                    p.device_owner
                ),
            ));
        }
        delete_in(w, &p)
    })
}

/// Removes a port and everything pointing at it, in an open transaction.
pub fn delete_in(w: &mut dyn WriteTxn, p: &Port) -> NetResult<()> {
    for mut fip in tables::FLOATING_IPS.values(w.as_read())? {
        if fip.port_id.as_deref() == Some(p.id.as_str()) {
            fip.port_id = None;
            fip.fixed_ip_address = None;
            fip.router_id = None;
            fip.status = "DOWN".into();
            fip.std.bump();
            tables::FLOATING_IPS.put(w, &fip.id.clone(), &fip)?;
        }
    }
    release(w, p)?;
    tables::PORTS.delete(w, &p.id)?;
    Ok(())
}

/// Sets a port's status as the node reports it (`ACTIVE` once wired, `DOWN`).
pub fn set_status(store: &dyn Store, id: &str, status: &str) -> NetResult<Port> {
    if status != "ACTIVE" && status != "DOWN" && status != "BUILD" && status != "ERROR" {
        return Err(NetError::invalid(format!(
            "'{status}' is not a port status"
        )));
    }
    write(store, |w| {
        let mut p: Port = get(w.as_read(), id)?;
        p.status = status.to_string();
        p.std.bump();
        tables::PORTS.put(w, id, &p)?;
        Ok(p)
    })
}

/// The first IPv4 fixed address of a port, else the first address.
pub fn primary_ip(p: &Port) -> Option<&FixedIp> {
    p.fixed_ips
        .iter()
        .find(|f| parse_ip(&f.ip_address, "").is_ok_and(|a| a.is_ipv4()))
        .or_else(|| p.fixed_ips.first())
}
