//! Lenient request decoding: clients (openstacksdk in particular) send `null` for
//! attributes they leave unset; those mean "the default", not a type error.

use serde::{Deserialize, Deserializer};

/// `null` or absent → `T::default()`.
pub fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `null` or absent → `true` (for `enabled`).
pub fn null_true<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Probe {
        #[serde(default = "yes", deserialize_with = "null_true")]
        enabled: bool,
        #[serde(default, deserialize_with = "null_default")]
        tags: Vec<String>,
    }

    fn yes() -> bool {
        true
    }

    #[test]
    fn nulls_mean_defaults() {
        let p: Probe = serde_json::from_str(r#"{"enabled": null, "tags": null}"#).unwrap();
        assert!(p.enabled);
        assert!(p.tags.is_empty());
        let p: Probe = serde_json::from_str(r#"{}"#).unwrap();
        assert!(p.enabled);
        let p: Probe = serde_json::from_str(r#"{"enabled": false, "tags": ["a"]}"#).unwrap();
        assert!(!p.enabled);
        assert_eq!(p.tags, ["a"]);
        assert!(serde_json::from_str::<Probe>(r#"{"enabled": "no"}"#).is_err());
    }
}
