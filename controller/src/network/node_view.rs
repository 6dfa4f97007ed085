//! What one node's network side asks of the controller: its host's desired
//! state with the VXLAN endpoints of the other nodes, port status reports
//! limited to its own ports, and the DHCP port it serves on each network.
//!
//! The handlers are in `api::compute::node_network` (node-secret auth).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::error::{NetError, NetResult};
use super::model::{Network, Port};
use super::ops::{get, write};
use super::ports::{create_in, delete_in, set_status, PortCreate};
use super::{desired, tables, Ctx};
use crate::store::{Store, Table};

/// node id → the address other nodes reach its VXLAN endpoint at.
pub const NODE_TUNNELS: Table<String> = Table::new("compute.node_tunnels");

/// `device_owner` of the port holding a network's DHCP address on a host.
pub const DHCP_OWNER: &str = "network:dhcp";

/// `device_id` of a host's DHCP port (Neutron uses `dhcp<host uuid>-<network>`).
pub fn dhcp_device_id(host: &str, network_id: &str) -> String {
    format!("dhcp{host}-{network_id}")
}

/// The host part of a node's URL (`http://10.0.0.5:7000/...` → `10.0.0.5`),
/// the default tunnel address.
pub fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next()?;
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    (!host.is_empty()).then(|| host.to_string())
}

/// The desired state of `host`, each network with `vteps`: the tunnel
/// addresses of the other hosts that have ports bound on it.
/// `tunnels` maps host → tunnel address.
pub fn node_desired(
    store: &dyn Store,
    host: &str,
    tunnels: &BTreeMap<String, String>,
) -> NetResult<Value> {
    let mut v = desired::desired(store, Some(host))?;
    let r = store.read()?;
    let mut hosts_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in tables::PORTS.values(&*r)? {
        if !p.binding_host_id.is_empty() && p.binding_host_id != host {
            hosts_of
                .entry(p.network_id.clone())
                .or_default()
                .insert(p.binding_host_id.clone());
        }
    }
    if let Some(nets) = v
        .get_mut("desired")
        .and_then(|d| d.get_mut("networks"))
        .and_then(Value::as_array_mut)
    {
        for n in nets {
            let id = n.get("id").and_then(Value::as_str).unwrap_or_default();
            let vteps: BTreeSet<&String> = hosts_of
                .get(id)
                .into_iter()
                .flatten()
                .filter_map(|h| tunnels.get(h))
                .collect();
            n["vteps"] = Value::from(vteps.into_iter().cloned().collect::<Vec<_>>());
        }
    }
    Ok(v)
}

/// Sets the status of a port bound to `host` (404 for any other port).
pub fn node_port_status(store: &dyn Store, host: &str, id: &str, status: &str) -> NetResult<Port> {
    let p: Port = get(&*store.read()?, id)?;
    if p.binding_host_id != host {
        return Err(NetError::NotFound {
            kind: "PortNotFound",
            message: format!("Port {id} is not bound to this node."),
        });
    }
    set_status(store, id, status)
}

fn find_dhcp(store: &dyn Store, host: &str, network_id: &str) -> NetResult<Option<Port>> {
    let device = dhcp_device_id(host, network_id);
    Ok(tables::PORTS
        .values(&*store.read()?)?
        .into_iter()
        .find(|p| p.device_owner == DHCP_OWNER && p.device_id == device))
}

/// The DHCP port of `network_id` on `host`, created (address from the
/// network's IPv4 subnet through IPAM, bound to `host`) when missing.
pub fn ensure_dhcp_port(store: &dyn Store, host: &str, network_id: &str) -> NetResult<Port> {
    if let Some(p) = find_dhcp(store, host, network_id)? {
        return Ok(p);
    }
    write(store, |w| {
        let net: Network = get(w.as_read(), network_id)?;
        let body = PortCreate {
            network_id: network_id.to_string(),
            name: Some(String::new()),
            device_id: Some(dhcp_device_id(host, network_id)),
            device_owner: Some(DHCP_OWNER.to_string()),
            binding_host_id: Some(host.to_string()),
            project_id: Some(net.project_id.clone()),
            port_security_enabled: Some(false),
            ..PortCreate::default()
        };
        create_in(w, &Ctx::admin(&net.project_id), body, true)
    })
}

/// Deletes `host`'s DHCP port of `network_id`; true when there was one.
pub fn release_dhcp_port(store: &dyn Store, host: &str, network_id: &str) -> NetResult<bool> {
    let Some(p) = find_dhcp(store, host, network_id)? else {
        return Ok(false);
    };
    write(store, |w| delete_in(w, &p))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_host_takes_the_authority_host() {
        assert_eq!(
            url_host("http://10.0.0.5:7000/kiln-node/v1/a").as_deref(),
            Some("10.0.0.5")
        );
        assert_eq!(
            url_host("http://[fd00::1]:80/x").as_deref(),
            Some("fd00::1")
        );
        assert_eq!(url_host("http://h/x").as_deref(), Some("h"));
        assert_eq!(url_host("http:///x"), None);
    }
}
