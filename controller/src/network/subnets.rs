//! Subnets: CIDR, gateway, allocation pools, DNS, host routes, IPv6 modes.

use serde::{Deserialize, Deserializer};

use super::error::{NetError, NetResult};
use super::ipam::{self, from_num, parse_ip, to_num, Cidr};
use super::model::{HostRoute, Network, Pool, StdAttrs, Subnet};
use super::ops::{asked_project, check_tag, find, find_owned, write};
use super::{new_id, quota, tables, Ctx};
use crate::store::Store;

/// `Some(None)` for an explicit JSON null, `None` when the key is absent.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetCreate {
    pub network_id: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub ip_version: Option<u8>,
    pub cidr: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub gateway_ip: Option<Option<String>>,
    pub allocation_pools: Option<Vec<Pool>>,
    pub enable_dhcp: Option<bool>,
    pub dns_nameservers: Option<Vec<String>>,
    pub host_routes: Option<Vec<HostRoute>>,
    pub ipv6_ra_mode: Option<String>,
    pub ipv6_address_mode: Option<String>,
    pub subnetpool_id: Option<String>,
    pub service_types: Option<Vec<String>>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubnetUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub gateway_ip: Option<Option<String>>,
    pub allocation_pools: Option<Vec<Pool>>,
    pub enable_dhcp: Option<bool>,
    pub dns_nameservers: Option<Vec<String>>,
    pub host_routes: Option<Vec<HostRoute>>,
    pub service_types: Option<Vec<String>>,
}

const V6_MODES: &[&str] = &["slaac", "dhcpv6-stateful", "dhcpv6-stateless"];

/// The subnet's pools as numbers.
pub fn pools(s: &Subnet) -> NetResult<Vec<(u128, u128)>> {
    s.allocation_pools
        .iter()
        .map(|p| {
            Ok((
                to_num(parse_ip(&p.start, "allocation_pools")?),
                to_num(parse_ip(&p.end, "allocation_pools")?),
            ))
        })
        .collect()
}

fn check_dns(cidr: &Cidr, list: &[String]) -> NetResult<Vec<String>> {
    let _ = cidr;
    let mut out: Vec<String> = Vec::new();
    for d in list {
        let ip = parse_ip(d, "dns_nameservers")?.to_string();
        if out.contains(&ip) {
            return Err(NetError::invalid(format!("Duplicate nameserver '{d}'")));
        }
        out.push(ip);
    }
    Ok(out)
}

fn check_routes(cidr: &Cidr, routes: &[HostRoute]) -> NetResult<Vec<HostRoute>> {
    let mut out: Vec<HostRoute> = Vec::new();
    for r in routes {
        let dest = Cidr::parse(&r.destination, false)?;
        let hop = parse_ip(&r.nexthop, "host_routes")?;
        if dest.version != cidr.version || ipam::version_of(&hop) != cidr.version {
            return Err(NetError::invalid(format!(
                "Host route {}/{} does not match the subnet's IP version",
                r.destination, r.nexthop
            )));
        }
        let route = HostRoute {
            destination: dest.text(),
            nexthop: hop.to_string(),
        };
        if out.contains(&route) {
            return Err(NetError::invalid(format!(
                "Duplicate hostroute '{} {}'",
                r.destination, r.nexthop
            )));
        }
        out.push(route);
    }
    Ok(out)
}

fn gateway_of(cidr: &Cidr, asked: &Option<Option<String>>) -> NetResult<Option<u128>> {
    match asked {
        None => Ok(cidr.default_gateway()),
        Some(None) => Ok(None),
        Some(Some(g)) => {
            let ip = parse_ip(g, "gateway_ip")?;
            if !cidr.contains(&ip) {
                return Err(NetError::BadRequest(format!(
                    "Invalid input for operation: Gateway is not valid on subnet {} ({g}).",
                    cidr.text()
                )));
            }
            Ok(Some(to_num(ip)))
        }
    }
}

fn pools_view(cidr: &Cidr, pools: &[(u128, u128)]) -> Vec<Pool> {
    pools
        .iter()
        .map(|(s, e)| Pool {
            start: from_num(*s, cidr.version).to_string(),
            end: from_num(*e, cidr.version).to_string(),
        })
        .collect()
}

pub fn create_subnet(store: &dyn Store, ctx: &Ctx, b: SubnetCreate) -> NetResult<Subnet> {
    ctx.require_write()?;
    let project = ctx.target_project(asked_project(&b.project_id, &b.tenant_id)?.as_deref())?;
    if b.subnetpool_id.is_some() {
        return Err(NetError::NotImplemented(
            "Subnet pools are not implemented in kiln; give a cidr.".into(),
        ));
    }
    let cidr_text = b.cidr.as_deref().ok_or_else(|| {
        NetError::BadRequest(
            "Bad subnets request: a cidr must be specified in the absence of a subnet pool".into(),
        )
    })?;
    let cidr = Cidr::parse(cidr_text, false)?;
    let version = b.ip_version.unwrap_or(4);
    if version != 4 && version != 6 {
        return Err(NetError::invalid(format!("'{version}' is not in [4, 6]")));
    }
    if version != cidr.version {
        return Err(NetError::invalid(
            "Cannot use a CIDR of one IP version with ip_version of the other",
        ));
    }
    if (cidr.version == 4 && cidr.prefix > 30) || (cidr.version == 6 && cidr.prefix > 126) {
        return Err(NetError::invalid(format!(
            "The subnet {cidr_text} is too small to hold addresses"
        )));
    }
    for (mode, field) in [
        (&b.ipv6_ra_mode, "ipv6_ra_mode"),
        (&b.ipv6_address_mode, "ipv6_address_mode"),
    ] {
        if let Some(m) = mode {
            if version != 6 {
                return Err(NetError::invalid(format!(
                    "{field} set to '{m}' with ip_version set to '4' is not valid. Modes are only valid for IPv6"
                )));
            }
            if !V6_MODES.contains(&m.as_str()) {
                return Err(NetError::invalid(format!("'{m}' is not in {V6_MODES:?}")));
            }
        }
    }
    let gateway = gateway_of(&cidr, &b.gateway_ip)?;
    let pools = match &b.allocation_pools {
        Some(p) => ipam::parse_pools(&cidr, p, gateway)?,
        None => cidr.default_pools(gateway),
    };
    let dns = check_dns(&cidr, b.dns_nameservers.as_deref().unwrap_or_default())?;
    let routes = check_routes(&cidr, b.host_routes.as_deref().unwrap_or_default())?;
    let mut std = StdAttrs::new();
    for t in b.tags.iter().flatten() {
        check_tag(t)?;
        std.tags.push(t.clone());
    }
    write(store, |w| {
        let mut net: Network = find(w.as_read(), ctx, &b.network_id)?;
        if !ctx.owns(&net.project_id) {
            return Err(NetError::Forbidden(
                "rule:create_subnet is disallowed by policy".into(),
            ));
        }
        if net.project_id != project {
            return Err(NetError::CrossProject(format!(
                "Network {} belongs to another project; a subnet of project {project} cannot be created on it.",
                net.id
            )));
        }
        quota::check::<Subnet>(w.as_read(), &project, 1)?;
        for other in &net.subnets {
            if let Some(o) = tables::SUBNETS.get(w.as_read(), other)? {
                if Cidr::parse(&o.cidr, false)?.overlaps(&cidr) {
                    return Err(NetError::invalid(format!(
                        "Requested subnet with cidr: {} for network: {} overlaps with another subnet",
                        cidr.text(),
                        net.id
                    )));
                }
            }
        }
        let s = Subnet {
            id: new_id(),
            name: b.name.clone().unwrap_or_default(),
            description: b.description.clone().unwrap_or_default(),
            project_id: project.clone(),
            network_id: net.id.clone(),
            ip_version: version,
            cidr: cidr.text(),
            gateway_ip: gateway.map(|g| from_num(g, version).to_string()),
            allocation_pools: pools_view(&cidr, &pools),
            enable_dhcp: b.enable_dhcp.unwrap_or(true),
            dns_nameservers: dns,
            host_routes: routes,
            ipv6_ra_mode: b.ipv6_ra_mode.clone(),
            ipv6_address_mode: b.ipv6_address_mode.clone(),
            subnetpool_id: None,
            service_types: b.service_types.clone().unwrap_or_default(),
            std,
        };
        net.subnets.push(s.id.clone());
        net.std.bump();
        tables::NETWORKS.put(w, &net.id, &net)?;
        tables::SUBNETS.put(w, &s.id, &s)?;
        Ok(s)
    })
}

pub fn update_subnet(store: &dyn Store, ctx: &Ctx, id: &str, b: SubnetUpdate) -> NetResult<Subnet> {
    write(store, |w| {
        let mut s: Subnet = find_owned(w.as_read(), ctx, id)?;
        let cidr = Cidr::parse(&s.cidr, false)?;
        if let Some(v) = b.name {
            s.name = v;
        }
        if let Some(v) = b.description {
            s.description = v;
        }
        if b.gateway_ip.is_some() {
            let g = gateway_of(&cidr, &b.gateway_ip)?;
            if let Some(g) = g {
                if pools(&s)?.iter().any(|(a, e)| g >= *a && g <= *e)
                    && b.allocation_pools.is_none()
                {
                    return Err(NetError::conflict(
                        "GatewayConflictWithAllocationPools",
                        format!(
                            "Gateway ip {} conflicts with allocation pool of subnet {id}.",
                            from_num(g, cidr.version)
                        ),
                    ));
                }
            }
            s.gateway_ip = g.map(|g| from_num(g, cidr.version).to_string());
        }
        if let Some(p) = &b.allocation_pools {
            let g = match &s.gateway_ip {
                Some(g) => Some(to_num(parse_ip(g, "gateway_ip")?)),
                None => None,
            };
            let parsed = ipam::parse_pools(&cidr, p, g)?;
            s.allocation_pools = pools_view(&cidr, &parsed);
        }
        if let Some(v) = b.enable_dhcp {
            s.enable_dhcp = v;
        }
        if let Some(v) = &b.dns_nameservers {
            s.dns_nameservers = check_dns(&cidr, v)?;
        }
        if let Some(v) = &b.host_routes {
            s.host_routes = check_routes(&cidr, v)?;
        }
        if let Some(v) = b.service_types {
            s.service_types = v;
        }
        s.std.bump();
        tables::SUBNETS.put(w, id, &s)?;
        Ok(s)
    })
}

/// Deletes a subnet; 409 `SubnetInUse` while any port holds an address of it.
pub fn delete_subnet(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let s: Subnet = find_owned(w.as_read(), ctx, id)?;
        if !tables::IP_ALLOCATIONS
            .scan(w.as_read(), &format!("{id}|"))?
            .is_empty()
        {
            return Err(NetError::conflict(
                "SubnetInUse",
                format!(
                    "Unable to complete operation on subnet {id}: One or more ports have an IP allocation from this subnet."
                ),
            ));
        }
        if let Some(mut net) = tables::NETWORKS.get(w.as_read(), &s.network_id)? {
            net.subnets.retain(|x| x != id);
            net.std.bump();
            tables::NETWORKS.put(w, &net.id, &net)?;
        }
        tables::SUBNETS.delete(w, id)?;
        Ok(())
    })
}
