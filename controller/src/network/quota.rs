//! Neutron quotas: defaults, per-project overrides, usage, and the check every
//! create runs inside its write transaction.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::error::{NetError, NetResult};
use super::model::{
    FloatingIp, Network, Port, Record, Router, SecurityGroup, SecurityGroupRule, Subnet,
};
use super::tables;
use crate::store::{ReadTxn, Store};

/// (resource, default limit) — Neutron's defaults.
pub const DEFAULTS: &[(&str, i64)] = &[
    ("network", 100),
    ("subnet", 100),
    ("port", 500),
    ("router", 10),
    ("floatingip", 50),
    ("security_group", 10),
    ("security_group_rule", 100),
];

/// The effective limits of a project.
pub fn limits(r: &dyn ReadTxn, project: &str) -> NetResult<BTreeMap<String, i64>> {
    let mut out: BTreeMap<String, i64> =
        DEFAULTS.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    if let Some(over) = tables::QUOTAS.get(r, project)? {
        out.extend(over);
    }
    Ok(out)
}

fn count<R: Record>(r: &dyn ReadTxn, project: &str) -> NetResult<i64> {
    let n = R::table()
        .values(r)?
        .iter()
        .filter(|x| x.project_id() == project)
        .count();
    Ok(i64::try_from(n).unwrap_or(i64::MAX))
}

/// How many records of each resource a project holds.
pub fn usage(r: &dyn ReadTxn, project: &str) -> NetResult<BTreeMap<String, i64>> {
    let mut u = BTreeMap::new();
    u.insert("network".into(), count::<Network>(r, project)?);
    u.insert("subnet".into(), count::<Subnet>(r, project)?);
    u.insert("port".into(), count::<Port>(r, project)?);
    u.insert("router".into(), count::<Router>(r, project)?);
    u.insert("floatingip".into(), count::<FloatingIp>(r, project)?);
    u.insert("security_group".into(), count::<SecurityGroup>(r, project)?);
    u.insert(
        "security_group_rule".into(),
        count::<SecurityGroupRule>(r, project)?,
    );
    Ok(u)
}

/// 409 `OverQuota` if `adding` more records of `R` would pass the project's limit.
pub fn check<R: Record>(r: &dyn ReadTxn, project: &str, adding: i64) -> NetResult<()> {
    let limit = limits(r, project)?.get(R::MEMBER).copied().unwrap_or(-1);
    if limit < 0 {
        return Ok(());
    }
    if count::<R>(r, project)? + adding > limit {
        return Err(NetError::conflict(
            "OverQuota",
            format!("Quota exceeded for resources: ['{}'].", R::MEMBER),
        ));
    }
    Ok(())
}

/// `{"quota": {...}}` body of a project.
pub fn show(store: &dyn Store, project: &str) -> NetResult<Value> {
    let r = store.read()?;
    Ok(json!(limits(&*r, project)?))
}

/// `{"quota": {resource: {limit, used, reserved}}}` body.
pub fn details(store: &dyn Store, project: &str) -> NetResult<Value> {
    let r = store.read()?;
    let lim = limits(&*r, project)?;
    let used = usage(&*r, project)?;
    let mut m = Map::new();
    for (k, l) in lim {
        let u = used.get(&k).copied().unwrap_or(0);
        m.insert(k, json!({"limit": l, "used": u, "reserved": 0}));
    }
    Ok(Value::Object(m))
}

/// Sets limits (known resources, integers ≥ -1); returns the effective limits.
pub fn update(store: &dyn Store, project: &str, body: &Map<String, Value>) -> NetResult<Value> {
    let mut changes = BTreeMap::new();
    for (k, v) in body {
        if !DEFAULTS.iter().any(|(name, _)| name == k) {
            return Err(NetError::invalid(format!(
                "Unrecognized attribute(s) '{k}'"
            )));
        }
        let n = v
            .as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|n| *n >= -1)
            .ok_or_else(|| NetError::invalid(format!("'{v}' is not a valid quota for {k}")))?;
        changes.insert(k.clone(), n);
    }
    let mut w = store.write()?;
    let mut over = tables::QUOTAS
        .get(w.as_read(), project)?
        .unwrap_or_default();
    over.extend(changes);
    tables::QUOTAS.put(&mut *w, project, &over)?;
    let out = json!(limits(w.as_read(), project)?);
    w.commit()?;
    Ok(out)
}

/// Resets a project to the defaults.
pub fn reset(store: &dyn Store, project: &str) -> NetResult<()> {
    let mut w = store.write()?;
    tables::QUOTAS.delete(&mut *w, project)?;
    w.commit()?;
    Ok(())
}

/// Projects with overrides and their limits.
pub fn list(store: &dyn Store) -> NetResult<Vec<Value>> {
    let r = store.read()?;
    let mut out = Vec::new();
    for (project, _) in tables::QUOTAS.scan(&*r, "")? {
        let mut q = json!(limits(&*r, &project)?);
        q["project_id"] = json!(project);
        q["tenant_id"] = json!(project);
        out.push(q);
    }
    Ok(out)
}
