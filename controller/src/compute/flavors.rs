//! Flavors: list/show with access rules, create/delete (admin), extra specs and
//! per-project access for private flavors.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::model::Flavor;
use super::tables::{FLAVORS, FLAVOR_ACCESS, FLAVOR_NAMES};
use super::{Compute, Who};
use crate::clock::now_micros;
use crate::error::{ApiError, ApiResult};
use crate::store::ReadTxn;

pub fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("Flavor {id} could not be found."))
}

fn policy(rule: &str) -> ApiError {
    ApiError::Forbidden(format!("Policy doesn't allow {rule} to be performed."))
}

/// List filters (already parsed).
#[derive(Debug, Clone, Default)]
pub struct FlavorQuery {
    /// `Some(true)` public only, `Some(false)` private only, `None` both (admin).
    pub is_public: Option<bool>,
    pub min_ram: Option<u64>,
    pub min_disk: Option<u64>,
    pub sort_key: String,
    pub sort_desc: bool,
    pub limit: Option<usize>,
    pub marker: Option<String>,
}

fn access_key(flavor: &str, project: &str) -> String {
    format!("{flavor}|{project}")
}

impl Compute {
    fn can_use(&self, r: &dyn ReadTxn, who: &Who, f: &Flavor) -> ApiResult<bool> {
        if f.is_public || who.admin {
            return Ok(true);
        }
        Ok(match &who.project {
            Some(p) => FLAVOR_ACCESS.contains(r, &access_key(&f.id, p))?,
            None => false,
        })
    }

    pub fn flavor(&self, who: &Who, id: &str) -> ApiResult<Flavor> {
        let r = self.store.read()?;
        let f = FLAVORS.get(&*r, id)?.ok_or_else(|| not_found(id))?;
        if !self.can_use(&*r, who, &f)? {
            return Err(not_found(id));
        }
        Ok(f)
    }

    pub fn flavors(&self, who: &Who, q: &FlavorQuery) -> ApiResult<Vec<Flavor>> {
        let r = self.store.read()?;
        let mut out = Vec::new();
        for f in FLAVORS.values(&*r)? {
            let visible = match (who.admin, q.is_public) {
                (true, None) => true,
                (true, Some(p)) => f.is_public == p,
                // Non-admins see public flavors plus the private ones shared with them.
                (false, _) => self.can_use(&*r, who, &f)?,
            };
            if visible
                && q.min_ram.is_none_or(|m| f.ram >= m)
                && q.min_disk.is_none_or(|m| f.disk >= m)
            {
                out.push(f);
            }
        }
        out.sort_by(|a, b| {
            let ord = match q.sort_key.as_str() {
                "name" => a.name.cmp(&b.name),
                "memory_mb" | "ram" => a.ram.cmp(&b.ram),
                "vcpus" => a.vcpus.cmp(&b.vcpus),
                "root_gb" | "disk" => a.disk.cmp(&b.disk),
                "created_at" => a.created_at.cmp(&b.created_at),
                _ => natural(&a.id, &b.id),
            }
            .then_with(|| natural(&a.id, &b.id));
            if q.sort_desc {
                ord.reverse()
            } else {
                ord
            }
        });
        if let Some(m) = &q.marker {
            let pos = out
                .iter()
                .position(|f| &f.id == m)
                .ok_or_else(|| ApiError::BadRequest(format!("marker [{m}] not found")))?;
            out.drain(..=pos);
        }
        if let Some(l) = q.limit {
            out.truncate(l);
        }
        Ok(out)
    }

    pub fn create_flavor(&self, who: &Who, body: &Map<String, Value>) -> ApiResult<Flavor> {
        if !who.admin {
            return Err(policy("os_compute_api:os-flavor-manage:create"));
        }
        let f = parse_flavor(body)?;
        let mut w = self.store.write()?;
        if FLAVORS.contains(w.as_read(), &f.id)? {
            return Err(ApiError::Conflict(format!(
                "Flavor with ID {} already exists.",
                f.id
            )));
        }
        if FLAVOR_NAMES.contains(w.as_read(), &f.name)? {
            return Err(ApiError::Conflict(format!(
                "Flavor with name {} already exists.",
                f.name
            )));
        }
        FLAVORS.put(&mut *w, &f.id, &f)?;
        FLAVOR_NAMES.put(&mut *w, &f.name, &f.id)?;
        w.commit()?;
        Ok(f)
    }

    /// 2.55's `PUT /flavors/{id}`: only the description changes (admin).
    pub fn update_flavor_description(
        &self,
        who: &Who,
        id: &str,
        description: Option<String>,
    ) -> ApiResult<Flavor> {
        if !who.admin {
            return Err(policy("os_compute_api:os-flavor-manage:update"));
        }
        let mut w = self.store.write()?;
        let mut f = FLAVORS.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        f.description = description;
        FLAVORS.put(&mut *w, id, &f)?;
        w.commit()?;
        Ok(f)
    }

    pub fn delete_flavor(&self, who: &Who, id: &str) -> ApiResult<()> {
        if !who.admin {
            return Err(policy("os_compute_api:os-flavor-manage:delete"));
        }
        let mut w = self.store.write()?;
        let f = FLAVORS.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        FLAVORS.delete(&mut *w, id)?;
        FLAVOR_NAMES.delete(&mut *w, &f.name)?;
        FLAVOR_ACCESS.delete_prefix(&mut *w, &format!("{id}|"))?;
        w.commit()?;
        Ok(())
    }

    /// Merges `specs` into the flavor's extra specs (admin).
    pub fn set_extra_specs(
        &self,
        who: &Who,
        id: &str,
        specs: BTreeMap<String, String>,
    ) -> ApiResult<BTreeMap<String, String>> {
        if !who.admin {
            return Err(policy("os_compute_api:os-flavor-extra-specs:create"));
        }
        for k in specs.keys() {
            if k.is_empty()
                || k.len() > 255
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_:. ".contains(c))
            {
                return Err(ApiError::BadRequest(format!(
                    "Invalid input for field/attribute extra_specs. Key {k:?} is not valid."
                )));
            }
        }
        let mut w = self.store.write()?;
        let mut f = FLAVORS.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        f.extra_specs.extend(specs);
        FLAVORS.put(&mut *w, id, &f)?;
        w.commit()?;
        Ok(f.extra_specs)
    }

    pub fn delete_extra_spec(&self, who: &Who, id: &str, key: &str) -> ApiResult<()> {
        if !who.admin {
            return Err(policy("os_compute_api:os-flavor-extra-specs:delete"));
        }
        let mut w = self.store.write()?;
        let mut f = FLAVORS.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if f.extra_specs.remove(key).is_none() {
            return Err(ApiError::NotFound(format!(
                "Flavor {id} has no extra specs with key {key}."
            )));
        }
        FLAVORS.put(&mut *w, id, &f)?;
        w.commit()?;
        Ok(())
    }

    /// The projects a private flavor is shared with.
    pub fn flavor_access(&self, who: &Who, id: &str) -> ApiResult<Vec<String>> {
        let f = self.flavor(who, id)?;
        if f.is_public {
            return Err(ApiError::NotFound(
                "Access list not available for public flavors.".into(),
            ));
        }
        let r = self.store.read()?;
        Ok(FLAVOR_ACCESS
            .scan(&*r, &format!("{id}|"))?
            .into_iter()
            .filter_map(|(k, _)| k.split_once('|').map(|(_, p)| p.to_string()))
            .collect())
    }

    pub fn set_flavor_access(
        &self,
        who: &Who,
        id: &str,
        project: &str,
        grant: bool,
    ) -> ApiResult<Vec<String>> {
        if !who.admin {
            let rule = if grant {
                "addTenantAccess"
            } else {
                "removeTenantAccess"
            };
            return Err(policy(&format!(
                "os_compute_api:os-flavor-access:{}",
                rule.replace("TenantAccess", "_tenant_access")
            )));
        }
        let mut w = self.store.write()?;
        let f = FLAVORS.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        if f.is_public {
            return Err(ApiError::Conflict(
                "Can not add access to a public flavor.".into(),
            ));
        }
        let key = access_key(id, project);
        let exists = FLAVOR_ACCESS.contains(w.as_read(), &key)?;
        match (grant, exists) {
            (true, true) => {
                return Err(ApiError::Conflict(format!(
                "Flavor access already exists for flavor {id} and project {project} combination."
            )))
            }
            (false, false) => {
                return Err(ApiError::NotFound(format!(
                    "Flavor access not found for {id} / {project} combination."
                )))
            }
            (true, false) => FLAVOR_ACCESS.put(&mut *w, &key, &())?,
            (false, true) => {
                FLAVOR_ACCESS.delete(&mut *w, &key)?;
            }
        }
        w.commit()?;
        drop(f);
        self.flavor_access(who, id)
    }
}

/// Sorts numeric ids numerically ("2" < "10"), others as text.
fn natural(a: &str, b: &str) -> std::cmp::Ordering {
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => a.cmp(b),
    }
}

/// An integer Nova accepts as a JSON number or a string of digits.
fn int_field(
    body: &Map<String, Value>,
    key: &str,
    min: u64,
    default: Option<u64>,
) -> ApiResult<u64> {
    let bad = || {
        ApiError::BadRequest(format!(
            "Invalid input for field/attribute {key}. Value must be an integer >= {min}."
        ))
    };
    let v = match body.get(key) {
        None | Some(Value::Null) => {
            return default.ok_or_else(|| {
                ApiError::BadRequest(format!(
                "Invalid input for field/attribute flavor. Value: '{key}' is a required property"
            ))
            })
        }
        Some(Value::Number(n)) => n.as_u64().ok_or_else(bad)?,
        Some(Value::String(s)) if key == "swap" && s.is_empty() => 0,
        Some(Value::String(s)) => s.trim().parse::<u64>().map_err(|_| bad())?,
        Some(_) => return Err(bad()),
    };
    if v < min {
        return Err(bad());
    }
    Ok(v)
}

fn parse_flavor(body: &Map<String, Value>) -> ApiResult<Flavor> {
    let name = match body.get("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.chars().count() <= 255 && s.trim() == s => s.clone(),
        _ => return Err(ApiError::BadRequest("Invalid input for field/attribute name. Value must be a string of 1 to 255 characters without leading or trailing whitespace.".into())),
    };
    let id = match body.get("id") {
        None | Some(Value::Null) => uuid::Uuid::new_v4().to_string(),
        Some(Value::String(s))
            if !s.is_empty()
                && s.len() <= 255
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_. ".contains(c)) =>
        {
            s.clone()
        }
        Some(Value::Number(n)) => n.to_string(),
        _ => {
            return Err(ApiError::BadRequest(
                "Invalid input for field/attribute id.".into(),
            ))
        }
    };
    let rxtx_factor = match body.get("rxtx_factor") {
        None | Some(Value::Null) => 1.0,
        Some(v) => v
            .as_f64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .filter(|f| *f > 0.0)
            .ok_or_else(|| {
                ApiError::BadRequest("Invalid input for field/attribute rxtx_factor.".into())
            })?,
    };
    let is_public = match body.get("os-flavor-access:is_public") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("true") => true,
        Some(Value::String(s)) if s.eq_ignore_ascii_case("false") => false,
        _ => {
            return Err(ApiError::BadRequest(
                "Invalid input for field/attribute os-flavor-access:is_public.".into(),
            ))
        }
    };
    let description = match body.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        _ => {
            return Err(ApiError::BadRequest(
                "Invalid input for field/attribute description.".into(),
            ))
        }
    };
    Ok(Flavor {
        id,
        name,
        ram: int_field(body, "ram", 1, None)?,
        vcpus: int_field(body, "vcpus", 1, None)?,
        disk: int_field(body, "disk", 0, None)?,
        ephemeral: int_field(body, "OS-FLV-EXT-DATA:ephemeral", 0, Some(0))?,
        swap: int_field(body, "swap", 0, Some(0))?,
        rxtx_factor,
        is_public,
        disabled: false,
        description,
        extra_specs: BTreeMap::new(),
        created_at: now_micros(),
    })
}
