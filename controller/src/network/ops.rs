//! Generic record access (lookup with visibility, tags) and the network
//! operations themselves.

use serde::Deserialize;

use super::error::{NetError, NetResult};
use super::model::{view, Network, Record, StdAttrs};
use super::{new_id, quota, tables, Ctx};
use crate::store::{ReadTxn, Store, WriteTxn};

/// The default MTU of a tenant network: 1500 minus VXLAN's 50 bytes.
pub const DEFAULT_MTU: u32 = 1450;
/// The first VXLAN network identifier handed out.
const FIRST_VNI: u64 = 1000;

/// A record by id, or its 404.
pub fn get<R: Record>(r: &dyn ReadTxn, id: &str) -> NetResult<R> {
    R::table().get(r, id)?.ok_or_else(|| R::not_found(id))
}

/// Whether the caller sees a network: its own, admin-shared or external ones.
pub fn network_visible(ctx: &Ctx, n: &Network) -> bool {
    ctx.owns(&n.project_id) || n.shared || n.router_external
}

/// Whether the caller sees a record. Subnets of shared/external networks are
/// visible to everyone, like their networks.
pub fn visible<R: Record>(r: &dyn ReadTxn, ctx: &Ctx, rec: &R) -> NetResult<bool> {
    let mut v = view(rec);
    if ctx.owns(rec.project_id()) {
        return Ok(true);
    }
    match R::MEMBER {
        "network" => Ok(v["shared"] == true || v["router:external"] == true),
        "subnet" => {
            let net_id = v["network_id"].take();
            let net_id = net_id.as_str().unwrap_or_default();
            Ok(tables::NETWORKS
                .get(r, net_id)?
                .is_some_and(|n| network_visible(ctx, &n)))
        }
        _ => Ok(false),
    }
}

/// A record the caller may see, else its 404 (never a 403: Neutron hides what
/// is not yours).
pub fn find<R: Record>(r: &dyn ReadTxn, ctx: &Ctx, id: &str) -> NetResult<R> {
    let rec: R = get(r, id)?;
    if visible(r, ctx, &rec)? {
        Ok(rec)
    } else {
        Err(R::not_found(id))
    }
}

/// A record the caller may change: visible and owned (else 404 / 403).
pub fn find_owned<R: Record>(r: &dyn ReadTxn, ctx: &Ctx, id: &str) -> NetResult<R> {
    let rec: R = find(r, ctx, id)?;
    ctx.require_write()?;
    if ctx.owns(rec.project_id()) {
        Ok(rec)
    } else {
        Err(NetError::Forbidden(format!(
            "rule:update_{} is disallowed by policy",
            R::MEMBER
        )))
    }
}

/// Every record of a kind the caller may see, in key order.
pub fn list<R: Record>(store: &dyn Store, ctx: &Ctx) -> NetResult<Vec<R>> {
    let r = store.read()?;
    let mut out = Vec::new();
    for rec in R::table().values(&*r)? {
        if visible(&*r, ctx, &rec)? {
            out.push(rec);
        }
    }
    Ok(out)
}

pub fn show<R: Record>(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<R> {
    let r = store.read()?;
    find(&*r, ctx, id)
}

/// Runs `f` in one write transaction and commits it when it succeeds.
pub fn write<T>(
    store: &dyn Store,
    f: impl FnOnce(&mut dyn WriteTxn) -> NetResult<T>,
) -> NetResult<T> {
    let mut w = store.write()?;
    let out = f(&mut *w)?;
    w.commit()?;
    Ok(out)
}

/// Checks a tag: 1–60 characters, no comma or slash (Neutron's rule).
pub fn check_tag(tag: &str) -> NetResult<()> {
    if tag.is_empty() || tag.chars().count() > 60 || tag.contains(',') || tag.contains('/') {
        return Err(NetError::invalid(format!("'{tag}' is not a valid tag")));
    }
    Ok(())
}

/// How a tag request changes a record's tags.
pub enum TagChange {
    Add(String),
    Remove(String),
    Replace(Vec<String>),
    Clear,
}

/// Applies a tag change to an owned record; returns the new tags.
pub fn change_tags<R: Record>(
    store: &dyn Store,
    ctx: &Ctx,
    id: &str,
    change: TagChange,
) -> NetResult<Vec<String>> {
    write(store, |w| {
        let mut rec: R = find_owned(w.as_read(), ctx, id)?;
        let attrs: &mut StdAttrs = rec.std();
        match change {
            TagChange::Add(t) => {
                check_tag(&t)?;
                if !attrs.tags.contains(&t) {
                    attrs.tags.push(t);
                }
            }
            TagChange::Remove(t) => {
                let before = attrs.tags.len();
                attrs.tags.retain(|x| *x != t);
                if attrs.tags.len() == before {
                    return Err(NetError::NotFound {
                        kind: "TagNotFound",
                        message: format!("Tag {t} could not be found for {} {id}.", R::MEMBER),
                    });
                }
            }
            TagChange::Replace(tags) => {
                for t in &tags {
                    check_tag(t)?;
                }
                let mut uniq: Vec<String> = Vec::new();
                for t in tags {
                    if !uniq.contains(&t) {
                        uniq.push(t);
                    }
                }
                attrs.tags = uniq;
            }
            TagChange::Clear => attrs.tags.clear(),
        }
        attrs.bump();
        let tags = attrs.tags.clone();
        R::table().put(w, id, &rec)?;
        Ok(tags)
    })
}

/// `POST /networks` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    #[serde(rename = "router:external")]
    pub router_external: Option<bool>,
    pub mtu: Option<u32>,
    pub port_security_enabled: Option<bool>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub tags: Option<Vec<String>>,
    pub availability_zone_hints: Option<Vec<String>>,
}

/// `PUT /networks/{id}` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub admin_state_up: Option<bool>,
    pub shared: Option<bool>,
    #[serde(rename = "router:external")]
    pub router_external: Option<bool>,
    pub mtu: Option<u32>,
    pub port_security_enabled: Option<bool>,
}

fn admin_only(ctx: &Ctx, set: bool, rule: &str) -> NetResult<()> {
    if set && !ctx.admin {
        return Err(NetError::Forbidden(format!(
            "rule:{rule} is disallowed by policy"
        )));
    }
    Ok(())
}

fn check_mtu(mtu: u32) -> NetResult<u32> {
    if (68..=9000).contains(&mtu) {
        Ok(mtu)
    } else {
        Err(NetError::invalid(format!(
            "'{mtu}' is not in range 68 through 9000 for mtu"
        )))
    }
}

/// The project a create body names (`project_id` or `tenant_id`), which must agree.
pub fn asked_project(
    project_id: &Option<String>,
    tenant_id: &Option<String>,
) -> NetResult<Option<String>> {
    match (project_id, tenant_id) {
        (Some(p), Some(t)) if p != t => Err(NetError::invalid(
            "'project_id' and 'tenant_id' do not match",
        )),
        (Some(p), _) | (None, Some(p)) => Ok(Some(p.clone())),
        (None, None) => Ok(None),
    }
}

pub fn create_network(store: &dyn Store, ctx: &Ctx, b: NetworkCreate) -> NetResult<Network> {
    ctx.require_write()?;
    let project = ctx.target_project(asked_project(&b.project_id, &b.tenant_id)?.as_deref())?;
    admin_only(ctx, b.shared == Some(true), "create_network:shared")?;
    admin_only(
        ctx,
        b.router_external == Some(true),
        "create_network:router:external",
    )?;
    let mtu = check_mtu(b.mtu.unwrap_or(DEFAULT_MTU))?;
    let mut std = StdAttrs::new();
    for t in b.tags.iter().flatten() {
        check_tag(t)?;
        if !std.tags.contains(t) {
            std.tags.push(t.clone());
        }
    }
    write(store, |w| {
        quota::check::<Network>(w.as_read(), &project, 1)?;
        let vni = tables::META
            .get(w.as_read(), "vni")?
            .unwrap_or(FIRST_VNI - 1)
            + 1;
        tables::META.put(w, "vni", &vni)?;
        let n = Network {
            id: new_id(),
            name: b.name.unwrap_or_default(),
            description: b.description.unwrap_or_default(),
            project_id: project.clone(),
            admin_state_up: b.admin_state_up.unwrap_or(true),
            shared: b.shared.unwrap_or(false),
            status: "ACTIVE".into(),
            subnets: Vec::new(),
            mtu,
            router_external: b.router_external.unwrap_or(false),
            port_security_enabled: b.port_security_enabled.unwrap_or(true),
            std,
            kiln_vni: u32::try_from(vni).unwrap_or(u32::MAX),
        };
        tables::NETWORKS.put(w, &n.id, &n)?;
        Ok(n)
    })
}

pub fn update_network(
    store: &dyn Store,
    ctx: &Ctx,
    id: &str,
    b: NetworkUpdate,
) -> NetResult<Network> {
    admin_only(ctx, b.shared.is_some(), "update_network:shared")?;
    admin_only(
        ctx,
        b.router_external.is_some(),
        "update_network:router:external",
    )?;
    write(store, |w| {
        let mut n: Network = find_owned(w.as_read(), ctx, id)?;
        if b.shared == Some(false) && n.shared {
            let foreign = tables::PORTS.values(w.as_read())?.into_iter().any(|p| {
                p.network_id == n.id && p.project_id != n.project_id && !p.project_id.is_empty()
            });
            if foreign {
                return Err(NetError::conflict(
                    "InvalidSharedSetting",
                    format!(
                        "Unable to reconfigure sharing settings for network {id}. Multiple tenants are using it."
                    ),
                ));
            }
        }
        if let Some(v) = b.name {
            n.name = v;
        }
        if let Some(v) = b.description {
            n.description = v;
        }
        if let Some(v) = b.admin_state_up {
            n.admin_state_up = v;
        }
        if let Some(v) = b.shared {
            n.shared = v;
        }
        if let Some(v) = b.router_external {
            n.router_external = v;
        }
        if let Some(v) = b.mtu {
            n.mtu = check_mtu(v)?;
        }
        if let Some(v) = b.port_security_enabled {
            n.port_security_enabled = v;
        }
        n.std.bump();
        tables::NETWORKS.put(w, id, &n)?;
        Ok(n)
    })
}

/// Deletes a network and its subnets; 409 `NetworkInUse` while ports remain.
pub fn delete_network(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let n: Network = find_owned(w.as_read(), ctx, id)?;
        let in_use = tables::PORTS
            .values(w.as_read())?
            .into_iter()
            .any(|p| p.network_id == n.id);
        if in_use {
            return Err(NetError::conflict(
                "NetworkInUse",
                format!(
                    "Unable to complete operation on network {id}. There are one or more ports still in use on the network."
                ),
            ));
        }
        for s in &n.subnets {
            tables::SUBNETS.delete(w, s)?;
            tables::IP_ALLOCATIONS.delete_prefix(w, &format!("{s}|"))?;
        }
        tables::MACS.delete_prefix(w, &format!("{id}|"))?;
        tables::NETWORKS.delete(w, id)?;
        Ok(())
    })
}
