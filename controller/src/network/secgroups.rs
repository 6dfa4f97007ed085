//! Security groups and their rules: the per-project `default` group (created on
//! first use with Neutron's default rules), rule validation and normalisation,
//! duplicate detection.

use serde::Deserialize;

use super::error::{NetError, NetResult};
use super::ipam::Cidr;
use super::model::{SecurityGroup, SecurityGroupRule, StdAttrs};
use super::ops::{asked_project, find, find_owned, write};
use super::{new_id, quota, tables, Ctx};
use crate::store::{Store, WriteTxn};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupCreate {
    pub name: Option<String>,
    pub description: Option<String>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
    pub stateful: Option<bool>,
    pub tags: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupUpdate {
    pub name: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleCreate {
    pub security_group_id: String,
    pub direction: String,
    pub ethertype: Option<String>,
    pub protocol: Option<serde_json::Value>,
    pub port_range_min: Option<serde_json::Value>,
    pub port_range_max: Option<serde_json::Value>,
    pub remote_ip_prefix: Option<String>,
    pub remote_group_id: Option<String>,
    pub description: Option<String>,
    pub tenant_id: Option<String>,
    pub project_id: Option<String>,
}

/// Protocol names Neutron knows, with their IP protocol numbers.
const PROTOCOLS: &[(&str, u8)] = &[
    ("ah", 51),
    ("dccp", 33),
    ("egp", 8),
    ("esp", 50),
    ("gre", 47),
    ("icmp", 1),
    ("icmpv6", 58),
    ("igmp", 2),
    ("ipip", 4),
    ("ipv6-encap", 41),
    ("ipv6-frag", 44),
    ("ipv6-icmp", 58),
    ("ipv6-nonxt", 59),
    ("ipv6-opts", 60),
    ("ipv6-route", 43),
    ("ospf", 89),
    ("pgm", 113),
    ("rsvp", 46),
    ("sctp", 132),
    ("tcp", 6),
    ("udp", 17),
    ("udplite", 136),
    ("vrrp", 112),
];

/// Protocols whose port range is a range of ports.
const PORTED: &[u8] = &[6, 17, 33, 132, 136];

/// The protocol's number; `None` for "any".
pub fn protocol_number(p: &str) -> NetResult<Option<u8>> {
    let p = p.to_ascii_lowercase();
    if p.is_empty() || p == "any" {
        return Ok(None);
    }
    if let Some((_, n)) = PROTOCOLS.iter().find(|(name, _)| *name == p) {
        return Ok(Some(*n));
    }
    p.parse::<u8>().map(Some).map_err(|_| {
        NetError::BadRequest(format!(
            "Security group rule protocol {p} not supported. Only protocol values [{}] and integer representations [0 to 255] are supported.",
            PROTOCOLS.iter().map(|(n, _)| format!("'{n}'")).collect::<Vec<_>>().join(", ")
        ))
    })
}

fn int(v: &Option<serde_json::Value>, field: &str) -> NetResult<Option<u32>> {
    match v {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(serde_json::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| NetError::invalid(format!("'{n}' is not an integer for {field}"))),
        Some(serde_json::Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| NetError::invalid(format!("'{s}' is not an integer for {field}"))),
        Some(other) => Err(NetError::invalid(format!(
            "'{other}' is not an integer for {field}"
        ))),
    }
}

/// A rule for a new group (egress any, or ingress from the group itself).
fn rule(
    sg: &SecurityGroup,
    direction: &str,
    ethertype: &str,
    remote_group: Option<&str>,
) -> SecurityGroupRule {
    SecurityGroupRule {
        id: new_id(),
        security_group_id: sg.id.clone(),
        project_id: sg.project_id.clone(),
        direction: direction.into(),
        ethertype: ethertype.into(),
        protocol: None,
        port_range_min: None,
        port_range_max: None,
        remote_ip_prefix: None,
        remote_group_id: remote_group.map(str::to_string),
        description: String::new(),
        std: StdAttrs::new(),
    }
}

fn insert_group(
    w: &mut dyn WriteTxn,
    project: &str,
    name: &str,
    description: &str,
    default: bool,
) -> NetResult<SecurityGroup> {
    let sg = SecurityGroup {
        id: new_id(),
        name: name.into(),
        description: description.into(),
        project_id: project.into(),
        std: StdAttrs::new(),
    };
    tables::SECURITY_GROUPS.put(w, &sg.id, &sg)?;
    let mut rules = vec![
        rule(&sg, "egress", "IPv4", None),
        rule(&sg, "egress", "IPv6", None),
    ];
    if default {
        rules.push(rule(&sg, "ingress", "IPv4", Some(&sg.id)));
        rules.push(rule(&sg, "ingress", "IPv6", Some(&sg.id)));
    }
    for r in &rules {
        tables::SG_RULES.put(w, &r.id, r)?;
    }
    Ok(sg)
}

/// The project's `default` group id, created (with Neutron's default rules) in
/// this transaction if the project has none yet.
pub fn ensure_default(w: &mut dyn WriteTxn, project: &str) -> NetResult<String> {
    if project.is_empty() {
        return Ok(String::new());
    }
    if let Some(id) = tables::DEFAULT_SG.get(w.as_read(), project)? {
        return Ok(id);
    }
    let sg = insert_group(w, project, "default", "Default security group", true)?;
    tables::DEFAULT_SG.put(w, project, &sg.id)?;
    Ok(sg.id)
}

/// Creates the caller's default group if missing (list/show do this first, as
/// Neutron does). Costs a write only the first time.
pub fn ensure_default_for(store: &dyn Store, ctx: &Ctx) -> NetResult<()> {
    if ctx.project_id.is_empty() {
        return Ok(());
    }
    let r = store.read()?;
    if tables::DEFAULT_SG.contains(&*r, &ctx.project_id)? {
        return Ok(());
    }
    drop(r);
    write(store, |w| ensure_default(w, &ctx.project_id).map(|_| ()))
}

/// The rules of a group, in key order.
pub fn rules_of(store: &dyn Store, sg_id: &str) -> NetResult<Vec<SecurityGroupRule>> {
    let r = store.read()?;
    Ok(tables::SG_RULES
        .values(&*r)?
        .into_iter()
        .filter(|x| x.security_group_id == sg_id)
        .collect())
}

pub fn create_group(store: &dyn Store, ctx: &Ctx, b: GroupCreate) -> NetResult<SecurityGroup> {
    ctx.require_write()?;
    let project = ctx.target_project(asked_project(&b.project_id, &b.tenant_id)?.as_deref())?;
    if b.stateful == Some(false) {
        return Err(NetError::NotImplemented(
            "Stateless security groups are not implemented in kiln.".into(),
        ));
    }
    let name = b.name.unwrap_or_default();
    write(store, |w| {
        ensure_default(w, &project)?;
        if name == "default" {
            return Err(NetError::conflict(
                "SecurityGroupDefaultAlreadyExists",
                "Default security group already exists.",
            ));
        }
        quota::check::<SecurityGroup>(w.as_read(), &project, 1)?;
        let mut sg = insert_group(
            w,
            &project,
            &name,
            &b.description.unwrap_or_default(),
            false,
        )?;
        if let Some(tags) = b.tags {
            for t in &tags {
                super::ops::check_tag(t)?;
            }
            sg.std.tags = tags;
            tables::SECURITY_GROUPS.put(w, &sg.id, &sg)?;
        }
        Ok(sg)
    })
}

pub fn update_group(
    store: &dyn Store,
    ctx: &Ctx,
    id: &str,
    b: GroupUpdate,
) -> NetResult<SecurityGroup> {
    write(store, |w| {
        let mut sg: SecurityGroup = find_owned(w.as_read(), ctx, id)?;
        if let Some(n) = b.name {
            if sg.name == "default" && n != "default" {
                return Err(NetError::conflict(
                    "SecurityGroupCannotUpdateDefault",
                    "Updating default security group not allowed.",
                ));
            }
            if n == "default" && sg.name != "default" {
                return Err(NetError::conflict(
                    "SecurityGroupDefaultAlreadyExists",
                    "Default security group already exists.",
                ));
            }
            sg.name = n;
        }
        if let Some(d) = b.description {
            sg.description = d;
        }
        sg.std.bump();
        tables::SECURITY_GROUPS.put(w, id, &sg)?;
        Ok(sg)
    })
}

/// Deletes a group: 409 while ports use it; the default group only by an admin.
/// Its rules, and rules elsewhere naming it as remote group, go with it.
pub fn delete_group(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let sg: SecurityGroup = find_owned(w.as_read(), ctx, id)?;
        let is_default = tables::DEFAULT_SG
            .get(w.as_read(), &sg.project_id)?
            .as_deref()
            == Some(id);
        if is_default && !ctx.admin {
            return Err(NetError::conflict(
                "SecurityGroupCannotRemoveDefault",
                "Insufficient rights for removing default security group.",
            ));
        }
        if tables::PORTS
            .values(w.as_read())?
            .iter()
            .any(|p| p.security_groups.iter().any(|g| g == id))
        {
            return Err(NetError::conflict(
                "SecurityGroupInUse",
                format!("Security Group {id} in use."),
            ));
        }
        for r in tables::SG_RULES.values(w.as_read())? {
            if r.security_group_id == id || r.remote_group_id.as_deref() == Some(id) {
                tables::SG_RULES.delete(w, &r.id)?;
            }
        }
        if is_default {
            tables::DEFAULT_SG.delete(w, &sg.project_id)?;
        }
        tables::SECURITY_GROUPS.delete(w, id)?;
        Ok(())
    })
}

/// What makes two rules the same: direction, ethertype, protocol number, port
/// range, remote prefix ("any" as none) and remote group.
type Fingerprint = (
    String,
    String,
    Option<u8>,
    Option<u32>,
    Option<u32>,
    Option<String>,
    Option<String>,
);

/// The comparable identity of a rule (protocol by number, "any" prefixes as none).
fn fingerprint(r: &SecurityGroupRule) -> NetResult<Fingerprint> {
    let proto = match &r.protocol {
        Some(p) => protocol_number(p)?,
        None => None,
    };
    let prefix = r
        .remote_ip_prefix
        .clone()
        .filter(|p| p != "0.0.0.0/0" && p != "::/0");
    Ok((
        r.direction.clone(),
        r.ethertype.clone(),
        proto,
        r.port_range_min,
        r.port_range_max,
        prefix,
        r.remote_group_id.clone(),
    ))
}

pub fn create_rule(store: &dyn Store, ctx: &Ctx, b: RuleCreate) -> NetResult<SecurityGroupRule> {
    ctx.require_write()?;
    if b.direction != "ingress" && b.direction != "egress" {
        return Err(NetError::invalid(format!(
            "'{}' is not in ['ingress', 'egress']",
            b.direction
        )));
    }
    let ethertype = match b.ethertype.as_deref().unwrap_or("IPv4") {
        e if e.eq_ignore_ascii_case("ipv4") => "IPv4",
        e if e.eq_ignore_ascii_case("ipv6") => "IPv6",
        e => {
            return Err(NetError::invalid(format!(
                "'{e}' is not in ['IPv4', 'IPv6']"
            )))
        }
    };
    let protocol = match &b.protocol {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.to_ascii_lowercase()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        Some(other) => return Err(NetError::invalid(format!("'{other}' is not a protocol"))),
    };
    let number = match &protocol {
        Some(p) => protocol_number(p)?,
        None => None,
    };
    let protocol = protocol.filter(|p| p != "any" && !p.is_empty());
    let (min, max) = (
        int(&b.port_range_min, "port_range_min")?,
        int(&b.port_range_max, "port_range_max")?,
    );
    if (min.is_some() || max.is_some()) && number.is_none() {
        return Err(NetError::BadRequest(
            "Must also specify protocol if port range is given.".into(),
        ));
    }
    match number {
        Some(n) if PORTED.contains(&n) => {
            for v in [min, max].into_iter().flatten() {
                if !(1..=65535).contains(&v) {
                    return Err(NetError::BadRequest(format!("Invalid value for port {v}.")));
                }
            }
            if let (Some(a), Some(z)) = (min, max) {
                if a > z {
                    return Err(NetError::BadRequest(
                        "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                    ));
                }
            } else if min.is_some() != max.is_some() {
                return Err(NetError::BadRequest(
                    "For TCP/UDP protocols, port_range_min must be <= port_range_max".into(),
                ));
            }
        }
        Some(1) | Some(58) => {
            for (v, field) in [(min, "type"), (max, "code")] {
                if let Some(v) = v {
                    if v > 255 {
                        return Err(NetError::BadRequest(format!(
                            "Invalid value for ICMP {field} (port-range-{}): {v}",
                            if field == "type" { "min" } else { "max" }
                        )));
                    }
                }
            }
            if max.is_some() && min.is_none() {
                return Err(NetError::BadRequest(format!(
                    "ICMP code (port-range-max) {} is provided but ICMP type (port-range-min) is missing.",
                    max.unwrap_or_default()
                )));
            }
        }
        Some(_) if min.is_some() || max.is_some() => {
            return Err(NetError::BadRequest(
                "Port ranges are only valid for TCP, UDP, UDP-Lite, SCTP, DCCP and ICMP.".into(),
            ));
        }
        _ => {}
    }
    if b.remote_ip_prefix.is_some() && b.remote_group_id.is_some() {
        return Err(NetError::BadRequest(
            "Only remote_ip_prefix or remote_group_id may be provided.".into(),
        ));
    }
    let prefix = match &b.remote_ip_prefix {
        Some(p) => {
            let c = if p.contains('/') {
                Cidr::parse(p, false)?
            } else {
                let ip = super::ipam::parse_ip(p, "remote_ip_prefix")?;
                Cidr::parse(
                    &format!("{ip}/{}", if ip.is_ipv4() { 32 } else { 128 }),
                    false,
                )?
            };
            let want = if ethertype == "IPv4" { 4 } else { 6 };
            if c.version != want {
                return Err(NetError::BadRequest(format!(
                    "Conflicting value ethertype {ethertype} for CIDR {p}"
                )));
            }
            Some(c.text())
        }
        None => None,
    };
    write(store, |w| {
        let sg: SecurityGroup = find_owned(w.as_read(), ctx, &b.security_group_id)?;
        let project = match asked_project(&b.project_id, &b.tenant_id)? {
            Some(p) if p != sg.project_id => {
                return Err(NetError::CrossProject(format!(
                    "Security group {} belongs to another project than {p}.",
                    sg.id
                )))
            }
            _ => sg.project_id.clone(),
        };
        if let Some(rg) = &b.remote_group_id {
            let remote: SecurityGroup = find(w.as_read(), ctx, rg)?;
            if remote.project_id != sg.project_id {
                return Err(NetError::CrossProject(format!(
                    "Remote security group {rg} belongs to another project than security group {}.",
                    sg.id
                )));
            }
        }
        quota::check::<SecurityGroupRule>(w.as_read(), &project, 1)?;
        let rule = SecurityGroupRule {
            id: new_id(),
            security_group_id: sg.id.clone(),
            project_id: project,
            direction: b.direction.clone(),
            ethertype: ethertype.into(),
            protocol: protocol.clone(),
            port_range_min: min,
            port_range_max: max,
            remote_ip_prefix: prefix.clone(),
            remote_group_id: b.remote_group_id.clone(),
            description: b.description.clone().unwrap_or_default(),
            std: StdAttrs::new(),
        };
        let fp = fingerprint(&rule)?;
        for other in tables::SG_RULES.values(w.as_read())? {
            if other.security_group_id == sg.id && fingerprint(&other)? == fp {
                return Err(NetError::conflict(
                    "SecurityGroupRuleExists",
                    format!(
                        "Security group rule already exists. Rule id is {}.",
                        other.id
                    ),
                ));
            }
        }
        tables::SG_RULES.put(w, &rule.id, &rule)?;
        Ok(rule)
    })
}

pub fn delete_rule(store: &dyn Store, ctx: &Ctx, id: &str) -> NetResult<()> {
    write(store, |w| {
        let _rule: SecurityGroupRule = find_owned(w.as_read(), ctx, id)?;
        tables::SG_RULES.delete(w, id)?;
        Ok(())
    })
}
