//! Multi-queue NICs as Nova decides them: the flavor extra spec
//! `hw:vif_multiqueue_enabled` and the image property
//! `hw_vif_multiqueue_enabled` (Nova's `get_vif_multiqueue_constraint`), the
//! extra spec's validation (microversion 2.86+), and the queue pairs a
//! server's NICs get (its vCPUs, at most [`MAX_QUEUE_PAIRS`], as libvirt caps
//! tap queues; one when multi-queue is off), written into each guest port
//! of a node's desired network state ([`annotate_desired`]).

use std::collections::BTreeMap;

use serde_json::Value;

use super::servers::tables::SERVERS;
use crate::error::ApiResult;
use crate::store::ReadTxn;

/// The flavor extra spec.
pub const EXTRA_SPEC: &str = "hw:vif_multiqueue_enabled";
/// The image property.
pub const IMAGE_PROPERTY: &str = "hw_vif_multiqueue_enabled";
/// Most queue pairs a NIC gets (kiln-vmm's virtio-net maximum).
pub const MAX_QUEUE_PAIRS: u16 = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultiqueueError {
    /// Nova's `FlavorImageConflict` (400 at server create).
    #[error("Flavor {flavor} has hw:vif_multiqueue_enabled extra spec explicitly set to {flavor_value}, conflicting with image {image} which has hw_vif_multiqueue_enabled explicitly set to {image_value}.")]
    Conflict {
        flavor: String,
        flavor_value: Py,
        image: String,
        image_value: Py,
    },
    /// Nova's extra-spec validator for a boolean spec (400 at 2.86+).
    #[error("Validation failed; '{value}' is not a valid boolean value for '{key}'.")]
    NotBoolean { key: String, value: String },
}

/// A boolean printed as Python prints it (Nova's messages show `True`/`False`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Py(pub bool);

impl std::fmt::Display for Py {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0 { "True" } else { "False" })
    }
}

/// oslo's `strutils.bool_from_string` in strict mode: `1 t true on y yes` /
/// `0 f false off n no`, any case, surrounding blanks ignored; None for
/// anything else.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s.trim().to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Some(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// What Nova does with a value that is set: non-strict parsing, where
/// anything not true is false.
fn lenient(s: &str) -> bool {
    parse_bool(s).unwrap_or(false)
}

/// Refuses an invalid `hw:vif_multiqueue_enabled` value (other keys pass).
pub fn validate_extra_spec(key: &str, value: &str) -> Result<(), MultiqueueError> {
    if key == EXTRA_SPEC && parse_bool(value).is_none() {
        return Err(MultiqueueError::NotBoolean {
            key: key.to_string(),
            value: value.to_string(),
        });
    }
    Ok(())
}

/// The image a server boots, as far as multi-queue cares.
#[derive(Debug, Clone, Copy)]
pub struct ImageView<'a> {
    pub name: &'a str,
    pub properties: &'a BTreeMap<String, String>,
}

/// Whether the server's NICs are multi-queue: the flavor's or the image's
/// value, refused when both are set and differ.
pub fn enabled(
    flavor_name: &str,
    extra_specs: &BTreeMap<String, String>,
    image: Option<ImageView<'_>>,
) -> Result<bool, MultiqueueError> {
    let flavor_value = extra_specs.get(EXTRA_SPEC).map(|v| lenient(v));
    let image_value = image.and_then(|i| i.properties.get(IMAGE_PROPERTY).map(|v| lenient(v)));
    match (flavor_value, image_value, image) {
        (Some(f), Some(i), Some(img)) if f != i => Err(MultiqueueError::Conflict {
            flavor: flavor_name.to_string(),
            flavor_value: Py(f),
            image: img.name.to_string(),
            image_value: Py(i),
        }),
        _ => Ok(flavor_value.unwrap_or(false) || image_value.unwrap_or(false)),
    }
}

/// Queue pairs of each NIC of a server with `vcpus` vCPUs: its vCPUs up to
/// [`MAX_QUEUE_PAIRS`] when multi-queue is on, else one.
pub fn queue_pairs(
    vcpus: u64,
    flavor_name: &str,
    extra_specs: &BTreeMap<String, String>,
    image: Option<ImageView<'_>>,
) -> Result<u16, MultiqueueError> {
    if !enabled(flavor_name, extra_specs, image)? {
        return Ok(1);
    }
    let capped = vcpus.clamp(1, u64::from(MAX_QUEUE_PAIRS));
    Ok(u16::try_from(capped).unwrap_or(MAX_QUEUE_PAIRS))
}

/// Sets `queues` on every port of a desired network state (`{"desired":
/// {"ports": [...]}}`) whose server gives its NIC more than one queue pair,
/// so the TAP the node creates matches what kiln-vmm will open; other ports
/// are left without it (the node reads 1).
pub fn annotate_desired(r: &dyn ReadTxn, desired: &mut Value) -> ApiResult<()> {
    let Some(ports) = desired
        .get_mut("desired")
        .and_then(|d| d.get_mut("ports"))
        .and_then(Value::as_array_mut)
    else {
        return Ok(());
    };
    for p in ports {
        let (Some(id), Some(device)) = (
            p.get("id").and_then(Value::as_str),
            p.get("device_id").and_then(Value::as_str),
        ) else {
            continue;
        };
        if device.is_empty() {
            continue;
        }
        let Some(server) = SERVERS.get(r, device)? else {
            continue;
        };
        if let Some(v) = server.vifs.iter().find(|v| v.port_id == id) {
            if v.queues > 1 {
                p["queues"] = Value::from(v.queues);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn specs(v: Option<&str>) -> BTreeMap<String, String> {
        v.map(|v| [(EXTRA_SPEC.to_string(), v.to_string())].into())
            .unwrap_or_default()
    }

    fn pairs(
        vcpus: u64,
        flavor: Option<&str>,
        image: Option<&str>,
    ) -> Result<u16, MultiqueueError> {
        let props: BTreeMap<String, String> = image
            .map(|v| [(IMAGE_PROPERTY.to_string(), v.to_string())].into())
            .unwrap_or_default();
        let view = ImageView {
            name: "img",
            properties: &props,
        };
        queue_pairs(vcpus, "fl", &specs(flavor), Some(view))
    }

    #[test]
    fn flavor_or_image_turns_it_on_with_a_pair_per_vcpu_up_to_eight() {
        assert_eq!(pairs(4, None, None), Ok(1));
        assert_eq!(pairs(4, Some("true"), None), Ok(4));
        assert_eq!(pairs(4, None, Some("yes")), Ok(4));
        assert_eq!(pairs(4, Some("True"), Some("1")), Ok(4));
        assert_eq!(pairs(2, None, Some("true")), Ok(2));
        assert_eq!(pairs(1, Some("true"), None), Ok(1));
        assert_eq!(pairs(0, Some("true"), None), Ok(1));
        assert_eq!(pairs(8, Some("on"), None), Ok(8));
        assert_eq!(pairs(32, Some("true"), None), Ok(8));
        // Explicitly off on both: single queue; unparsable reads as off.
        assert_eq!(pairs(4, Some("false"), Some("no")), Ok(1));
        assert_eq!(pairs(4, None, Some("maybe")), Ok(1));
        // Boot from volume: the flavor alone decides.
        assert_eq!(queue_pairs(3, "fl", &specs(Some("t")), None), Ok(3));
    }

    #[test]
    fn a_flavor_and_image_that_disagree_are_refused_as_nova_does() {
        let e = pairs(4, Some("true"), Some("false")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Flavor fl has hw:vif_multiqueue_enabled extra spec explicitly set to True, \
             conflicting with image img which has hw_vif_multiqueue_enabled explicitly set to False."
        );
        assert!(matches!(
            pairs(2, Some("no"), Some("yes")),
            Err(MultiqueueError::Conflict { .. })
        ));
    }

    #[test]
    fn the_extra_spec_must_be_a_strict_boolean() {
        for ok in ["true", "False", " yes ", "1", "off", "N"] {
            assert_eq!(validate_extra_spec(EXTRA_SPEC, ok), Ok(()), "{ok}");
        }
        for bad in ["", "maybe", "2", "enabled"] {
            assert!(validate_extra_spec(EXTRA_SPEC, bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_extra_spec("hw:other", "maybe"), Ok(()));
        assert_eq!(
            validate_extra_spec(EXTRA_SPEC, "maybe").unwrap_err().to_string(),
            "Validation failed; 'maybe' is not a valid boolean value for 'hw:vif_multiqueue_enabled'."
        );
    }
}
