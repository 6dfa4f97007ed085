//! The service catalog: every service kiln serves (or will), on one base URL,
//! devstack-style path prefixes, three interfaces each, region `RegionOne`.

use std::sync::Arc;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

pub const REGION: &str = "RegionOne";

/// (type, name, path under the base URL).
pub const SERVICES: &[(&str, &str, &str)] = &[
    ("identity", "keystone", "/v3"),
    ("compute", "nova", "/compute/v2.1"),
    ("network", "neutron", "/network"),
    ("image", "glance", "/image"),
    ("block-storage", "cinder", "/volume/v3"),
    ("volumev3", "cinderv3", "/volume/v3"),
    ("placement", "placement", "/placement"),
];

/// A stable 32-hex id derived from `parts`, so endpoint ids do not change across restarts.
pub fn stable_id(parts: &[&str]) -> String {
    let digest = Sha256::digest(parts.join("|").as_bytes());
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}

/// The catalog as the token body shows it, built once.
#[derive(Debug, Clone)]
pub struct Catalog {
    base: String,
    json: Arc<Value>,
}

impl Catalog {
    pub fn new(base_url: &str) -> Self {
        let base = base_url.trim_end_matches('/').to_string();
        let entries: Vec<Value> = SERVICES
            .iter()
            .map(|(kind, name, path)| {
                let url = format!("{base}{path}");
                let endpoints: Vec<Value> = ["public", "internal", "admin"]
                    .iter()
                    .map(|iface| {
                        json!({
                            "id": stable_id(&[kind, iface]),
                            "interface": iface,
                            "region_id": REGION,
                            "region": REGION,
                            "url": url,
                        })
                    })
                    .collect();
                json!({"type": kind, "name": name, "id": stable_id(&[kind]), "endpoints": endpoints})
            })
            .collect();
        Catalog {
            base,
            json: Arc::new(Value::Array(entries)),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Every (service, endpoint) pair as flat records, for `/v3/services`,
    /// `/v3/endpoints` and `/v3/regions`.
    pub fn entries(&self) -> Vec<Entry> {
        let mut out = Vec::new();
        for (kind, name, path) in SERVICES {
            for iface in ["public", "internal", "admin"] {
                out.push(Entry {
                    service_id: stable_id(&[kind]),
                    service_type: kind,
                    service_name: name,
                    endpoint_id: stable_id(&[kind, iface]),
                    interface: iface,
                    url: format!("{}{path}", self.base),
                });
            }
        }
        out
    }
}

/// One endpoint of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub service_id: String,
    pub service_type: &'static str,
    pub service_name: &'static str,
    pub endpoint_id: String,
    pub interface: &'static str,
    pub url: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_every_service_with_three_interfaces() {
        let c = Catalog::new("http://127.0.0.1:5000/");
        let arr = c.json().as_array().unwrap();
        assert_eq!(arr.len(), SERVICES.len());
        let compute = arr.iter().find(|e| e["type"] == "compute").unwrap();
        let eps = compute["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!(eps[0]["url"], "http://127.0.0.1:5000/compute/v2.1");
        assert_eq!(eps[0]["region_id"], "RegionOne");
        let bs = arr.iter().find(|e| e["type"] == "block-storage").unwrap();
        let v3 = arr.iter().find(|e| e["type"] == "volumev3").unwrap();
        assert_eq!(bs["endpoints"][0]["url"], v3["endpoints"][0]["url"]);
        // Stable ids across builds.
        assert_eq!(Catalog::new("http://x").json()[0]["id"], c.json()[0]["id"]);
    }
}
