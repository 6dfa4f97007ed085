//! Neutron's list query language over JSON views: attribute filters (repeated
//! keys mean "any of"), tag filters, `fixed_ips` filters, sorting, pagination
//! (limit/marker with `*_links`) and `fields`.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde_json::{json, Map, Value};

use crate::network::NetError;

/// The raw query pairs, repeated keys kept.
pub struct NQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for NQuery {
    type Rejection = super::NeutronError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let pairs = axum::extract::Query::<Vec<(String, String)>>::try_from_uri(&parts.uri)
            .map(|axum::extract::Query(v)| v)
            .map_err(|e| NetError::BadRequest(format!("Invalid query string: {e}")))?;
        Ok(NQuery(pairs))
    }
}

const RESERVED: &[&str] = &[
    "fields",
    "limit",
    "marker",
    "sort_key",
    "sort_dir",
    "page_reverse",
    "tags",
    "tags-any",
    "not-tags",
    "not-tags-any",
    "fixed_ips",
];

impl NQuery {
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn one(&self, key: &str) -> Option<&str> {
        self.all(key).last().copied()
    }

    /// The `fields` asked for (repeated or comma-separated); empty = all.
    pub fn fields(&self) -> Vec<String> {
        self.all("fields")
            .iter()
            .flat_map(|f| f.split(','))
            .filter(|f| !f.is_empty())
            .map(str::to_string)
            .collect()
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some(String::new()),
        _ => None,
    }
}

fn matches(item: &Value, q: &NQuery) -> bool {
    let mut keys: Vec<&str> = q.0.iter().map(|(k, _)| k.as_str()).collect();
    keys.dedup();
    for key in keys {
        if RESERVED.contains(&key) {
            continue;
        }
        let Some(v) = item.get(key) else { continue };
        let wanted = q.all(key);
        let ok = match v {
            Value::Array(list) => wanted
                .iter()
                .any(|w| list.iter().any(|x| text(x).as_deref() == Some(w))),
            _ => text(v).is_some_and(|t| {
                wanted
                    .iter()
                    .any(|w| t == *w || (v.is_boolean() && t.eq_ignore_ascii_case(w)))
            }),
        };
        if !ok {
            return false;
        }
    }
    let tags: Vec<&str> = item
        .get("tags")
        .and_then(Value::as_array)
        .map(|t| t.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let split =
        |k: &str| -> Vec<Vec<&str>> { q.all(k).iter().map(|v| v.split(',').collect()).collect() };
    for want in split("tags") {
        if !want.iter().all(|t| tags.contains(t)) {
            return false;
        }
    }
    for want in split("tags-any") {
        if !want.iter().any(|t| tags.contains(t)) {
            return false;
        }
    }
    for want in split("not-tags") {
        if want.iter().all(|t| tags.contains(t)) {
            return false;
        }
    }
    for want in split("not-tags-any") {
        if want.iter().any(|t| tags.contains(t)) {
            return false;
        }
    }
    for f in q.all("fixed_ips") {
        let Some((k, want)) = f.split_once('=') else {
            continue;
        };
        let ips = item.get("fixed_ips").and_then(Value::as_array);
        let ok = ips.is_some_and(|ips| {
            ips.iter().any(|ip| match k {
                "ip_address_substr" => ip["ip_address"].as_str().is_some_and(|a| a.contains(want)),
                _ => ip.get(k).and_then(Value::as_str) == Some(want),
            })
        });
        if !ok {
            return false;
        }
    }
    true
}

fn compare(a: &Value, b: &Value) -> std::cmp::Ordering {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x
            .as_f64()
            .unwrap_or_default()
            .total_cmp(&y.as_f64().unwrap_or_default()),
        _ => text(a)
            .unwrap_or_default()
            .cmp(&text(b).unwrap_or_default()),
    }
}

/// Filters, sorts, pages and trims `items`; returns the collection body.
pub fn collection(
    collection: &str,
    url: &str,
    mut items: Vec<Value>,
    q: &NQuery,
) -> Result<Value, NetError> {
    items.retain(|i| matches(i, q));
    let keys = q.all("sort_key");
    let dirs = q.all("sort_dir");
    if !keys.is_empty() {
        for d in &dirs {
            if *d != "asc" && *d != "desc" {
                return Err(NetError::BadRequest(format!(
                    "{d} is an invalid value for sort_dir, valid value is 'asc' and 'desc'"
                )));
            }
        }
        items.sort_by(|a, b| {
            for (i, k) in keys.iter().enumerate() {
                let o = compare(&a[*k], &b[*k]);
                let o = if dirs.get(i).copied() == Some("desc") {
                    o.reverse()
                } else {
                    o
                };
                if o.is_ne() {
                    return o;
                }
            }
            compare(&a["id"], &b["id"])
        });
    }
    let limit = match q.one("limit") {
        None | Some("") => None,
        Some(l) => Some(l.parse::<usize>().map_err(|_| {
            NetError::BadRequest(format!(
                "Bad limit request: Limit must be an integer 0 or greater and not '{l}'."
            ))
        })?)
        .filter(|l| *l > 0),
    };
    let mut start = 0;
    if let Some(m) = q.one("marker") {
        start = items
            .iter()
            .position(|i| i["id"] == m)
            .map(|p| p + 1)
            .ok_or_else(|| NetError::NotFound {
                kind: "HTTPNotFound",
                message: format!("Marker {m} could not be found."),
            })?;
    }
    let total = items.len();
    let page: Vec<Value> = items
        .into_iter()
        .skip(start)
        .take(limit.unwrap_or(usize::MAX))
        .collect();
    let mut links = Vec::new();
    if let Some(l) = limit {
        let keep: Vec<String> =
            q.0.iter()
                .filter(|(k, _)| k != "marker" && k != "page_reverse")
                .map(|(k, v)| format!("{k}={}", encode(v)))
                .collect();
        let keep = keep.join("&");
        if start + page.len() < total {
            if let Some(last) = page.last().and_then(|i| i["id"].as_str()) {
                links.push(json!({"rel": "next", "href": format!("{url}?{keep}&marker={last}")}));
            }
        }
        if start > 0 {
            if let Some(first) = page.first().and_then(|i| i["id"].as_str()) {
                links.push(json!({"rel": "previous",
                    "href": format!("{url}?{keep}&marker={first}&page_reverse=True")}));
            }
        }
        let _ = l;
    }
    let fields = q.fields();
    let page: Vec<Value> = page.into_iter().map(|i| trim(i, &fields)).collect();
    let mut body = Map::new();
    body.insert(collection.to_string(), Value::Array(page));
    if !links.is_empty() {
        body.insert(format!("{collection}_links"), Value::Array(links));
    }
    Ok(Value::Object(body))
}

/// Keeps only `fields` (all when empty).
pub fn trim(item: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return item;
    }
    match item {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(k, _)| fields.contains(k)).collect())
        }
        other => other,
    }
}

fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn q(s: &[(&str, &str)]) -> NQuery {
        NQuery(
            s.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn items() -> Vec<Value> {
        (0..5)
            .map(|i| json!({"id": format!("id{i}"), "name": format!("n{}", 4 - i), "shared": i % 2 == 0, "tags": if i == 1 {vec!["a","b"]} else {vec!["a"]}}))
            .collect()
    }

    #[test]
    fn filters_any_of_repeated_keys_and_booleans() {
        let b = collection(
            "networks",
            "u",
            items(),
            &q(&[("id", "id1"), ("id", "id3")]),
        )
        .unwrap();
        assert_eq!(b["networks"].as_array().unwrap().len(), 2);
        let b = collection("networks", "u", items(), &q(&[("shared", "True")])).unwrap();
        assert_eq!(b["networks"].as_array().unwrap().len(), 3);
        let b = collection("networks", "u", items(), &q(&[("tags", "a,b")])).unwrap();
        assert_eq!(b["networks"][0]["id"], "id1");
        let b = collection("networks", "u", items(), &q(&[("not-tags", "b")])).unwrap();
        assert_eq!(b["networks"].as_array().unwrap().len(), 4);
    }

    #[test]
    fn sorts_pages_and_trims() {
        let b = collection(
            "networks",
            "u",
            items(),
            &q(&[
                ("sort_key", "name"),
                ("sort_dir", "asc"),
                ("limit", "2"),
                ("fields", "id"),
            ]),
        )
        .unwrap();
        assert_eq!(b["networks"], json!([{"id": "id4"}, {"id": "id3"}]));
        let next = b["networks_links"][0]["href"].as_str().unwrap();
        assert!(next.contains("marker=id3"), "{next}");
        let b = collection(
            "networks",
            "u",
            items(),
            &q(&[("sort_key", "name"), ("limit", "2"), ("marker", "id3")]),
        )
        .unwrap();
        assert_eq!(b["networks"][0]["id"], "id2");
        assert_eq!(b["networks_links"].as_array().unwrap().len(), 2);
        let b = collection("networks", "u", items(), &q(&[("limit", "10")])).unwrap();
        assert!(b.get("networks_links").is_none());
        assert!(collection("networks", "u", items(), &q(&[("marker", "nope")])).is_err());
        assert!(collection("networks", "u", items(), &q(&[("limit", "x")])).is_err());
        assert!(collection(
            "networks",
            "u",
            items(),
            &q(&[("sort_key", "id"), ("sort_dir", "up")])
        )
        .is_err());
    }
}
