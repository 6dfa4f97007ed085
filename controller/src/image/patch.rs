//! Glance's JSON patch (`application/openstack-images-v2.1-json-patch`): parsing
//! and applying `add` / `replace` / `remove` on one image.

use serde_json::Value;

use super::model::Image;
use super::{set_attribute, READ_ONLY};
use crate::error::{ApiError, ApiResult};

/// The media types Glance accepts for PATCH.
pub const MEDIA_TYPES: &[&str] = &[
    "application/openstack-images-v2.1-json-patch",
    "application/openstack-images-v2.0-json-patch",
];

#[derive(Debug, Clone, PartialEq)]
pub enum PatchOp {
    Add(String, Value),
    Replace(String, Value),
    Remove(String),
}

/// The core attributes (not free properties).
const CORE: &[&str] = &[
    "name",
    "visibility",
    "protected",
    "os_hidden",
    "min_disk",
    "min_ram",
    "disk_format",
    "container_format",
    "tags",
];

fn attribute(path: &str) -> ApiResult<String> {
    let Some(rest) = path.strip_prefix('/') else {
        return Err(ApiError::BadRequest(format!(
            "Json path should start with a '/', end with no '/', no 2 subsequent '/' are allowed: {path}"
        )));
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(ApiError::BadRequest(format!(
            "Invalid JSON pointer for this resource: '{path}'"
        )));
    }
    Ok(rest.replace("~1", "/").replace("~0", "~"))
}

/// Parses the body: a JSON array of `{op, path, value}`.
pub fn parse(body: &[u8]) -> ApiResult<Vec<PatchOp>> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("Malformed JSON in request body: {e}")))?;
    let Value::Array(items) = v else {
        return Err(ApiError::BadRequest(
            "Request body must be a JSON array of operation objects.".into(),
        ));
    };
    items
        .into_iter()
        .map(|item| {
            let Value::Object(mut o) = item else {
                return Err(ApiError::BadRequest("Operations must be JSON objects.".into()));
            };
            let op = o.get("op").and_then(Value::as_str).unwrap_or_default().to_string();
            let path = match o.get("path").and_then(Value::as_str) {
                Some(p) => attribute(p)?,
                None => return Err(ApiError::BadRequest("Unable to find 'path' element".into())),
            };
            let value = o.remove("value");
            match (op.as_str(), value) {
                ("add", Some(v)) => Ok(PatchOp::Add(path, v)),
                ("replace", Some(v)) => Ok(PatchOp::Replace(path, v)),
                ("add" | "replace", None) => Err(ApiError::BadRequest(format!(
                    "Operation \"{op}\" requires a member named \"value\"."
                ))),
                ("remove", _) => Ok(PatchOp::Remove(path)),
                _ => Err(ApiError::BadRequest(format!(
                    "Operations must contain exactly one of the following: add, remove, replace (got {op:?})."
                ))),
            }
        })
        .collect()
}

/// Applies one operation.
pub fn apply(image: &mut Image, op: PatchOp) -> ApiResult<()> {
    match op {
        PatchOp::Add(key, v) => set_attribute(image, &key, v),
        PatchOp::Replace(key, v) => {
            if !CORE.contains(&key.as_str())
                && !READ_ONLY.contains(&key.as_str())
                && !image.properties.contains_key(&key)
            {
                return Err(ApiError::Conflict(format!(
                    "Property {key} does not exist."
                )));
            }
            set_attribute(image, &key, v)
        }
        PatchOp::Remove(key) => {
            if CORE.contains(&key.as_str()) || READ_ONLY.contains(&key.as_str()) {
                return Err(ApiError::Forbidden(format!(
                    "Properties {key} cannot be removed."
                )));
            }
            if image.properties.remove(&key).is_none() {
                return Err(ApiError::Conflict(format!(
                    "Property {key} does not exist."
                )));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_ops_and_rejects_bad_ones() {
        let ops = parse(br#"[{"op":"replace","path":"/name","value":"x"},{"op":"add","path":"/a~1b","value":"1"},{"op":"remove","path":"/k"}]"#).unwrap();
        assert_eq!(
            ops,
            vec![
                PatchOp::Replace("name".into(), json!("x")),
                PatchOp::Add("a/b".into(), json!("1")),
                PatchOp::Remove("k".into())
            ]
        );
        for bad in [
            &br#"{"op":"add"}"#[..],
            br#"[{"op":"move","path":"/a","value":1}]"#,
            br#"[{"op":"add","path":"a","value":1}]"#,
            br#"[{"op":"add","path":"/a/b","value":1}]"#,
            br#"[{"op":"add","path":"/a"}]"#,
            b"not json",
        ] {
            assert!(
                matches!(parse(bad), Err(ApiError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
