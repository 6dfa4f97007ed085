//! Validates responses against the JSON schemas under `tests/schemas/` (written
//! from the OpenStack API references, `additionalProperties: false` and full
//! `required` lists), and proves each schema can fail: the same body with an
//! unknown top-level key must be rejected.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::PathBuf;

use serde_json::Value;

fn load(service: &str, name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/schemas")
        .join(service)
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Asserts `body` matches schema `service/name` and that an extra key breaks it.
pub fn check(service: &str, name: &str, body: &Value) {
    let schema = load(service, name);
    let v = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("schema {service}/{name} does not compile: {e}"));
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "{service}/{name}: {errors:#?}\nbody: {body:#}"
    );
    let mut extra = body.clone();
    if let Some(o) = extra.as_object_mut() {
        o.insert("kiln_unexpected_key".into(), Value::Bool(true));
        assert!(
            !v.is_valid(&extra),
            "{service}/{name} accepts unknown keys: it could never fail"
        );
    }
}
