//! Routers (external gateway, interfaces) and floating IPs (allocated from an
//! external network, associated to a port reachable through a router).

use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{NetError, NetResult};
use super::ipam::{parse_ip, Cidr};
use super::model::{owners, FloatingIp, GatewayInfo, Network, Port, Router, StdAttrs, Subnet};
use super::ops::{asked_project, check_tag, find, find_owned, get, write};
use super::ports::{self, FixedIpReq, PortCreate};
use super::subnets::nullable;
use super::{new_id, quota, tables, Ctx};
use crate::store::{Store, WriteTxn};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayReq {
    /// Absent (`{}`, as `router unset --external-gateway` sends) clears the gateway.
    pub network_id: Option<String>,
    pub enable_snat: Option<bool>,
    pub external_fixed_ips: Option<Vec<FixedIpReq>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterCreate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub external_gateway_info: Option<GatewayReq>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouterUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    #[serde(default, deserialize_with = "nullable")]
    pub external_gateway_info: Option<Option<GatewayReq>>,
    pub routes: Option<Vec<super::model::HostRoute>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterfaceReq {
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FipCreate {
    pub floating_network_id: String,
    pub floating_ip_address: Option<String>,
    pub subnet_id: Option<String>,
    pub port_id: Option<String>,
    pub fixed_ip_address: Option<String>,
    pub description: Option<String>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FipUpdate {
    #[serde(default, deserialize_with = "nullable")]
    pub port_id: Option<Option<String>>,
    pub fixed_ip_address: Option<String>,
    pub description: Option<String>,
}

fn external(w: &dyn WriteTxn, id: &str, what: &str) -> NetResult<Network> {
    let net: Network = get(w.as_read(), id)?;
    if !net.router_external {
        return Err(NetError::BadRequest(format!(
            "Bad {what} request: Network {id} is not a valid external network."
        )));
    }
    Ok(net)
}

fn set_gateway(
    w: &mut dyn WriteTxn,
    ctx: &Ctx,
    router: &mut Router,
    gw: Option<GatewayReq>,
) -> NetResult<()> {
    let gw = gw.and_then(|g| g.network_id.clone().map(|id| (id, g)));
    let same = match (&gw, &router.external_gateway_info) {
        (Some((id, g)), Some(cur)) => *id == cur.network_id && g.external_fixed_ips.is_none(),
        _ => false,
    };
    if same {
        if let (Some((_, g)), Some(cur)) = (&gw, &mut router.external_gateway_info) {
            cur.enable_snat = g.enable_snat.unwrap_or(cur.enable_snat);
        }
        return Ok(());
    }
    if let Some(cur) = &router.external_gateway_info {
        let used = tables::FLOATING_IPS
            .values(w.as_read())?
            .iter()
            .any(|f| f.router_id.as_deref() == Some(router.id.as_str()));
        if used {
            return Err(NetError::conflict(
                "RouterExternalGatewayInUseByFloatingIp",
                format!(
                    "Gateway cannot be updated for router {}, since a gateway to external network {} is required by one or more floating IPs.",
                    router.id, cur.network_id
                ),
            ));
        }
        if let Some(pid) = router.kiln_gw_port_id.take() {
            if let Some(p) = tables::PORTS.get(w.as_read(), &pid)? {
                ports::delete_in(w, &p)?;
            }
        }
        router.external_gateway_info = None;
    }
    if let Some((net_id, g)) = gw {
        let net = external(w, &net_id, "router")?;
        let _ = ctx;
        let port = ports::create_in(
            w,
            ctx,
            PortCreate {
                network_id: net.id.clone(),
                device_id: Some(router.id.clone()),
                device_owner: Some(owners::ROUTER_GATEWAY.into()),
                fixed_ips: g.external_fixed_ips.clone(),
                security_groups: Some(Vec::new()),
                port_security_enabled: Some(false),
                ..Default::default()
            },
            true,
        )?;
        router.external_gateway_info = Some(GatewayInfo {
            network_id: net.id,
            enable_snat: g.enable_snat.unwrap_or(true),
            external_fixed_ips: port.fixed_ips.clone(),
        });
        router.kiln_gw_port_id = Some(port.id);
    }
    Ok(())
}

pub fn create_router(store: &dyn Store, ctx: &Ctx, b: RouterCreate) -> NetResult<Router> {
    ctx.require_write()?;
    let project = ctx.target_project(asked_project(&b.project_id, &b.tenant_id)?.as_deref())?;
    let mut std = StdAttrs::new();
    for t in b.tags.iter().flatten() {
        check_tag(t)?;
        std.tags.push(t.clone());
    }
    write(store, |w| {
        quota::check::<Router>(w.as_read(), &project, 1)?;
        let mut r = Router {
            id: new_id(),
            name: b.name.unwrap_or_default(),
            description: b.description.unwrap_or_default(),
            project_id: project.clone(),
            admin_state_up: b.admin_state_up.unwrap_or(true),
            status: "ACTIVE".into(),
            external_gateway_info: None,
            routes: Vec::new(),
            std,
            kiln_gw_port_id: None,
        };
        set_gateway(w, ctx, &mut r, b.external_gateway_info)?;
        tables::ROUTERS.put(w, &r.id, &r)?;
        Ok(r)
    })
}

pub fn update_router(store: &dyn Store, ctx: &Ctx, id: &str, b: RouterUpdate) -> NetResult<Router> {
    if b.routes.as_ref().is_some_and(|r| !r.is_empty()) {
        return Err(NetError::NotImplemented(
            "Static routes on routers (extraroute) are not implemented in kiln.".into(),
        ));
    }
    write(store, |w| {
        let mut r: Router = find_owned(w.as_read(), ctx, id)?;
        if let Some(v) = b.name {
            r.name = v;
        }
        if let Some(v) = b.description {
            r.description = v;
        }
        if let Some(v) = b.admin_state_up {
            r.admin_state_up = v;
        }
        if let Some(gw) = b.external_gateway_info {
            set_gateway(w, ctx, &mut r, gw)?;
        }
        r.std.bump();
        tables::ROUTERS.put(w, id, &r)?;
        Ok(r)
    })
}

fn interfaces(w: &dyn WriteTxn, router_id: &str) -> NetResult<Vec<Port>> {
    Ok(tables::PORTS
        .values(w.as_read())?
        .into_iter()
        .filter(|p| p.device_id == router_id && p.device_owner == owners::ROUTER_INTERFACE)
        .collect())
}

pub fn delete_router(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let mut r: Router = find_owned(w.as_read(), ctx, id)?;
        if !interfaces(w, id)?.is_empty() {
            return Err(NetError::conflict(
                "RouterInUse",
                format!("Router {id} still has ports"),
            ));
        }
        set_gateway(w, ctx, &mut r, None)?;
        tables::ROUTERS.delete(w, id)?;
        Ok(())
    })
}

fn interface_body(r: &Router, port: &Port) -> Value {
    let subnets: Vec<&str> = port
        .fixed_ips
        .iter()
        .map(|f| f.subnet_id.as_str())
        .collect();
    json!({
        "id": r.id,
        "tenant_id": r.project_id,
        "project_id": r.project_id,
        "port_id": port.id,
        "network_id": port.network_id,
        "subnet_id": subnets.first().copied().unwrap_or_default(),
        "subnet_ids": subnets,
        "tags": [],
    })
}

/// Connects a subnet (through a new port on its gateway address) or an existing
/// port to the router. The subnet's network must belong to the router's
/// project (or be admin-shared).
pub fn add_interface(store: &dyn Store, ctx: &Ctx, id: &str, b: InterfaceReq) -> NetResult<Value> {
    write(store, |w| {
        let r: Router = find_owned(w.as_read(), ctx, id)?;
        let existing = interfaces(w, id)?;
        let port = match (&b.subnet_id, &b.port_id) {
            (Some(_), Some(_)) => {
                return Err(NetError::BadRequest(
                    "Bad router request: Cannot specify both subnet-id and port-id.".into(),
                ))
            }
            (None, None) => {
                return Err(NetError::BadRequest(
                    "Bad router request: Either subnet_id or port_id must be specified.".into(),
                ))
            }
            (Some(sid), None) => {
                let s: Subnet = find(w.as_read(), ctx, sid)?;
                let net: Network = get(w.as_read(), &s.network_id)?;
                if net.project_id != r.project_id && !net.shared {
                    return Err(NetError::CrossProject(format!(
                        "Subnet {sid} belongs to a network of another project; router {id} cannot be connected to it."
                    )));
                }
                let gw = s.gateway_ip.clone().ok_or_else(|| {
                    NetError::BadRequest(
                        "Bad router request: Subnet for router interface must have a gateway IP."
                            .into(),
                    )
                })?;
                check_new_subnet(w, &r, &existing, &s)?;
                ports::create_in(
                    w,
                    ctx,
                    PortCreate {
                        network_id: net.id.clone(),
                        project_id: Some(r.project_id.clone()),
                        device_id: Some(r.id.clone()),
                        device_owner: Some(owners::ROUTER_INTERFACE.into()),
                        fixed_ips: Some(vec![FixedIpReq {
                            subnet_id: Some(s.id.clone()),
                            ip_address: Some(gw),
                        }]),
                        security_groups: Some(Vec::new()),
                        port_security_enabled: Some(false),
                        ..Default::default()
                    },
                    true,
                )?
            }
            (None, Some(pid)) => {
                let mut p: Port = find_owned(w.as_read(), ctx, pid)?;
                if !p.device_id.is_empty() || !p.device_owner.is_empty() {
                    return Err(NetError::conflict(
                        "PortInUse",
                        format!(
                            "Unable to complete operation on port {pid} for network {}. Port already has an attached device {}.",
                            p.network_id, p.device_id
                        ),
                    ));
                }
                let net: Network = get(w.as_read(), &p.network_id)?;
                if (net.project_id != r.project_id && !net.shared) || p.project_id != r.project_id {
                    return Err(NetError::CrossProject(format!(
                        "Port {pid} belongs to another project than router {id}."
                    )));
                }
                if p.fixed_ips.is_empty() {
                    return Err(NetError::BadRequest(
                        "Bad router request: Router port must have at least one fixed IP.".into(),
                    ));
                }
                for f in &p.fixed_ips {
                    let s: Subnet = get(w.as_read(), &f.subnet_id)?;
                    check_new_subnet(w, &r, &existing, &s)?;
                }
                p.device_id = r.id.clone();
                p.device_owner = owners::ROUTER_INTERFACE.into();
                p.security_groups.clear();
                p.std.bump();
                tables::PORTS.put(w, &p.id, &p)?;
                p
            }
        };
        Ok(interface_body(&r, &port))
    })
}

fn check_new_subnet(w: &dyn WriteTxn, r: &Router, existing: &[Port], s: &Subnet) -> NetResult<()> {
    let cidr = Cidr::parse(&s.cidr, false)?;
    for p in existing {
        for f in &p.fixed_ips {
            if f.subnet_id == s.id {
                return Err(NetError::BadRequest(format!(
                    "Bad router request: Router already has a port on subnet {}.",
                    s.id
                )));
            }
            let other: Subnet = get(w.as_read(), &f.subnet_id)?;
            if Cidr::parse(&other.cidr, false)?.overlaps(&cidr) {
                return Err(NetError::BadRequest(format!(
                    "Bad router request: Cidr {} of subnet {} overlaps with cidr {} of subnet {}.",
                    s.cidr, s.id, other.cidr, other.id
                )));
            }
        }
    }
    let _ = r;
    Ok(())
}

pub fn remove_interface(
    store: &dyn Store,
    ctx: &Ctx,
    id: &str,
    b: InterfaceReq,
) -> NetResult<Value> {
    write(store, |w| {
        let r: Router = find_owned(w.as_read(), ctx, id)?;
        let existing = interfaces(w, id)?;
        let port =
            match (&b.subnet_id, &b.port_id) {
                (None, None) => {
                    return Err(NetError::BadRequest(
                        "Bad router request: Either subnet_id or port_id must be specified.".into(),
                    ))
                }
                (_, Some(pid)) => {
                    let p = existing.iter().find(|p| &p.id == pid).ok_or_else(|| {
                        NetError::NotFound {
                            kind: "RouterInterfaceNotFound",
                            message: format!(
                                "Router {id} does not have an interface with id {pid}"
                            ),
                        }
                    })?;
                    if let Some(sid) = &b.subnet_id {
                        if !p.fixed_ips.iter().any(|f| &f.subnet_id == sid) {
                            return Err(NetError::conflict(
                                "SubnetMismatchForPort",
                                format!("Subnet {sid} does not match with the port {pid}."),
                            ));
                        }
                    }
                    p.clone()
                }
                (Some(sid), None) => existing
                    .iter()
                    .find(|p| p.fixed_ips.iter().any(|f| &f.subnet_id == sid))
                    .cloned()
                    .ok_or_else(|| NetError::NotFound {
                        kind: "RouterInterfaceNotFoundForSubnet",
                        message: format!("Router {id} has no interface on subnet {sid}"),
                    })?,
            };
        // Floating IPs reaching a fixed IP through this interface keep it.
        let subnets: Vec<&str> = port
            .fixed_ips
            .iter()
            .map(|f| f.subnet_id.as_str())
            .collect();
        for fip in tables::FLOATING_IPS.values(w.as_read())? {
            if fip.router_id.as_deref() != Some(id) {
                continue;
            }
            let Some(pid) = &fip.port_id else { continue };
            if let Some(p) = tables::PORTS.get(w.as_read(), pid)? {
                if let Some(f) = p
                    .fixed_ips
                    .iter()
                    .find(|f| Some(&f.ip_address) == fip.fixed_ip_address.as_ref())
                {
                    if subnets.contains(&f.subnet_id.as_str()) {
                        return Err(NetError::conflict(
                            "RouterInterfaceInUseByFloatingIP",
                            format!(
                                "Router interface for subnet {} on router {id} cannot be deleted, as it is required by one or more floating IPs.",
                                f.subnet_id
                            ),
                        ));
                    }
                }
            }
        }
        let body = interface_body(&r, &port);
        ports::delete_in(w, &port)?;
        Ok(body)
    })
}

/// The router that connects `subnet` to external network `ext`, if any.
fn router_for(w: &dyn WriteTxn, ext: &str, subnet: &str) -> NetResult<Option<Router>> {
    for r in tables::ROUTERS.values(w.as_read())? {
        if r.external_gateway_info
            .as_ref()
            .map(|g| g.network_id.as_str())
            != Some(ext)
        {
            continue;
        }
        if interfaces(w, &r.id)?
            .iter()
            .any(|p| p.fixed_ips.iter().any(|f| f.subnet_id == subnet))
        {
            return Ok(Some(r));
        }
    }
    Ok(None)
}

fn associate(
    w: &mut dyn WriteTxn,
    ctx: &Ctx,
    fip: &mut FloatingIp,
    port_id: &str,
    fixed: Option<&str>,
) -> NetResult<()> {
    let port: Port = find(w.as_read(), ctx, port_id)?;
    if port.project_id != fip.project_id {
        return Err(NetError::CrossProject(format!(
            "Port {port_id} belongs to another project than floating IP {}.",
            fip.id
        )));
    }
    let f = match fixed {
        Some(ip) => {
            let ip = parse_ip(ip, "fixed_ip_address")?.to_string();
            port.fixed_ips
                .iter()
                .find(|f| f.ip_address == ip)
                .cloned()
                .ok_or_else(|| {
                    NetError::BadRequest(format!(
                        "Bad floatingip request: Port {port_id} does not have fixed ip {ip}."
                    ))
                })?
        }
        None => port
            .fixed_ips
            .iter()
            .find(|f| parse_ip(&f.ip_address, "").is_ok_and(|a| a.is_ipv4()))
            .cloned()
            .ok_or_else(|| {
                NetError::BadRequest(format!(
                    "Bad floatingip request: Port {port_id} does not have any IPv4 fixed IP."
                ))
            })?,
    };
    for other in tables::FLOATING_IPS.values(w.as_read())? {
        if other.id != fip.id
            && other.port_id.as_deref() == Some(port_id)
            && other.fixed_ip_address.as_deref() == Some(f.ip_address.as_str())
        {
            return Err(NetError::conflict(
                "FloatingIPPortAlreadyAssociated",
                format!(
                    "Cannot associate floating IP {} ({}) with port {port_id} using fixed IP {}, as that fixed IP already has a floating IP on external network {}.",
                    fip.floating_ip_address, fip.id, f.ip_address, other.floating_network_id
                ),
            ));
        }
    }
    let router = router_for(w, &fip.floating_network_id, &f.subnet_id)?.ok_or_else(|| NetError::NotFound {
        kind: "ExternalGatewayForFloatingIPNotFound",
        message: format!(
            "External network {} is not reachable from subnet {}.  Therefore, cannot associate Port {port_id} with a Floating IP.",
            fip.floating_network_id, f.subnet_id
        ),
    })?;
    fip.port_id = Some(port_id.to_string());
    fip.fixed_ip_address = Some(f.ip_address);
    fip.router_id = Some(router.id);
    fip.status = "ACTIVE".into();
    Ok(())
}

fn disassociate(fip: &mut FloatingIp) {
    fip.port_id = None;
    fip.fixed_ip_address = None;
    fip.router_id = None;
    fip.status = "DOWN".into();
}

pub fn create_fip(store: &dyn Store, ctx: &Ctx, b: FipCreate) -> NetResult<FloatingIp> {
    ctx.require_write()?;
    let project = ctx.target_project(asked_project(&b.project_id, &b.tenant_id)?.as_deref())?;
    write(store, |w| {
        let net = match tables::NETWORKS.get(w.as_read(), &b.floating_network_id)? {
            Some(_) => external(w, &b.floating_network_id, "floatingip")?,
            None => return Err(NetError::network_not_found(&b.floating_network_id)),
        };
        quota::check::<FloatingIp>(w.as_read(), &project, 1)?;
        let id = new_id();
        let req = match (&b.subnet_id, &b.floating_ip_address) {
            (None, None) => None,
            (s, a) => Some(vec![FixedIpReq {
                subnet_id: s.clone(),
                ip_address: a.clone(),
            }]),
        };
        let port = ports::create_in(
            w,
            ctx,
            PortCreate {
                network_id: net.id.clone(),
                device_id: Some(id.clone()),
                device_owner: Some(owners::FLOATING_IP.into()),
                fixed_ips: req,
                security_groups: Some(Vec::new()),
                port_security_enabled: Some(false),
                ..Default::default()
            },
            true,
        )?;
        let address = ports::primary_ip(&port)
            .map(|f| f.ip_address.clone())
            .ok_or_else(|| {
                NetError::BadRequest(format!(
                    "Bad floatingip request: Network {} has no subnet to allocate a floating IP from.",
                    net.id
                ))
            })?;
        let mut std = StdAttrs::new();
        for t in b.tags.iter().flatten() {
            check_tag(t)?;
            std.tags.push(t.clone());
        }
        let mut fip = FloatingIp {
            id,
            description: b.description.clone().unwrap_or_default(),
            project_id: project.clone(),
            floating_network_id: net.id.clone(),
            floating_ip_address: address,
            fixed_ip_address: None,
            port_id: None,
            router_id: None,
            status: "DOWN".into(),
            std,
            kiln_fip_port_id: port.id,
        };
        if let Some(pid) = &b.port_id {
            associate(w, ctx, &mut fip, pid, b.fixed_ip_address.as_deref())?;
        }
        tables::FLOATING_IPS.put(w, &fip.id, &fip)?;
        Ok(fip)
    })
}

pub fn update_fip(store: &dyn Store, ctx: &Ctx, id: &str, b: FipUpdate) -> NetResult<FloatingIp> {
    write(store, |w| {
        let mut fip: FloatingIp = find_owned(w.as_read(), ctx, id)?;
        if let Some(d) = b.description {
            fip.description = d;
        }
        match b.port_id {
            Some(Some(pid)) => associate(w, ctx, &mut fip, &pid, b.fixed_ip_address.as_deref())?,
            Some(None) => disassociate(&mut fip),
            None => {}
        }
        fip.std.bump();
        tables::FLOATING_IPS.put(w, id, &fip)?;
        Ok(fip)
    })
}

pub fn delete_fip(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let fip: FloatingIp = find_owned(w.as_read(), ctx, id)?;
        if let Some(p) = tables::PORTS.get(w.as_read(), &fip.kiln_fip_port_id)? {
            ports::delete_in(w, &p)?;
        }
        tables::FLOATING_IPS.delete(w, id)?;
        Ok(())
    })
}
