//! Nova's ImagePropertiesFilter: the architecture, hypervisor type and VM mode
//! an image asks for (`hw_architecture`/`architecture`,
//! `img_hv_type`/`hypervisor_type`, `hw_vm_mode`/`vm_mode`) against the
//! `(arch, hv_type, vm_mode)` combinations a node supports (its registration's
//! capabilities, `arch=…`, `hv_type=…`, `vm_mode=…`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a node runs: every `(arch, hv_type, vm_mode)` it supports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    pub supported: Vec<(String, String, String)>,
}

/// The values a key takes when a node does not report it: what a KVM host on
/// x86_64 offers (libvirt lists both its `kvm` and `qemu` domain types).
const DEFAULT_ARCHES: &[&str] = &["x86_64"];
const DEFAULT_HV_TYPES: &[&str] = &["kvm", "qemu"];
const DEFAULT_VM_MODES: &[&str] = &["hvm"];

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities::from_strings(&[])
    }
}

impl Capabilities {
    /// From a registration's capability strings (`key=value`, a key may
    /// repeat); a key not given takes the KVM host's values.
    pub fn from_strings(caps: &[String]) -> Self {
        let values = |key: &str, default: &[&str], canon: fn(&str) -> String| -> Vec<String> {
            let given: Vec<String> = caps
                .iter()
                .filter_map(|c| c.split_once('='))
                .filter(|(k, _)| k.trim() == key)
                .map(|(_, v)| canon(v.trim()))
                .collect();
            if given.is_empty() {
                default.iter().map(|v| canon(v)).collect()
            } else {
                given
            }
        };
        let arches = values("arch", DEFAULT_ARCHES, arch);
        let hv_types = values("hv_type", DEFAULT_HV_TYPES, hv_type);
        let modes = values("vm_mode", DEFAULT_VM_MODES, vm_mode);
        let mut supported = Vec::new();
        for a in &arches {
            for h in &hv_types {
                for m in &modes {
                    supported.push((a.clone(), h.clone(), m.clone()));
                }
            }
        }
        Capabilities { supported }
    }
}

/// What an image asks of its host (each `None` when the image does not say).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageReqs {
    pub arch: Option<String>,
    pub hv_type: Option<String>,
    pub vm_mode: Option<String>,
}

impl ImageReqs {
    /// From Glance properties, the current names first, then the legacy ones.
    pub fn from_properties(p: &BTreeMap<String, String>) -> Self {
        let get = |new: &str, old: &str| {
            p.get(new)
                .or_else(|| p.get(old))
                .map(|v| v.trim())
                .filter(|v| !v.is_empty())
        };
        ImageReqs {
            arch: get("hw_architecture", "architecture").map(arch),
            hv_type: get("img_hv_type", "hypervisor_type").map(hv_type),
            vm_mode: get("hw_vm_mode", "vm_mode").map(vm_mode),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.arch.is_none() && self.hv_type.is_none() && self.vm_mode.is_none()
    }

    /// Whether a node with `caps` can run the image (Nova: one supported
    /// combination matches every property the image sets).
    pub fn passes(&self, caps: &Capabilities) -> bool {
        if self.is_empty() {
            return true;
        }
        let same = |want: &Option<String>, have: &String| want.as_ref().is_none_or(|w| w == have);
        caps.supported.iter().any(|(a, h, m)| {
            same(&self.arch, a) && same(&self.hv_type, h) && same(&self.vm_mode, m)
        })
    }
}

/// Nova's `obj_fields.Architecture.canonicalize`: lower case, and the usual
/// aliases of i686 and x86_64.
fn arch(v: &str) -> String {
    let v = v.to_ascii_lowercase();
    match v.as_str() {
        "i386" | "i486" | "i586" | "x86_32" => "i686".into(),
        "amd64" | "x64" => "x86_64".into(),
        _ => v,
    }
}

/// Nova's `HVType.canonicalize`: lower case, `xapi` is `xen`.
fn hv_type(v: &str) -> String {
    let v = v.to_ascii_lowercase();
    if v == "xapi" {
        "xen".into()
    } else {
        v
    }
}

/// Nova's `VMMode.canonicalize`: lower case; `hv` is `hvm`, `pv` is `xen`,
/// `baremetal` is `hvm`.
fn vm_mode(v: &str) -> String {
    let v = v.to_ascii_lowercase();
    match v.as_str() {
        "hv" | "baremetal" => "hvm".into(),
        "pv" => "xen".into(),
        _ => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn an_image_without_properties_runs_anywhere() {
        let r = ImageReqs::from_properties(&props(&[("os_distro", "cirros")]));
        assert!(r.is_empty());
        let none = Capabilities { supported: vec![] };
        assert!(r.passes(&none));
    }

    #[test]
    fn the_default_node_is_an_x86_64_kvm_host() {
        let caps = Capabilities::default();
        for ok in [
            props(&[("hw_architecture", "x86_64")]),
            props(&[("architecture", "AMD64")]),
            props(&[("img_hv_type", "kvm"), ("hw_vm_mode", "hvm")]),
            props(&[("hypervisor_type", "qemu"), ("vm_mode", "hv")]),
        ] {
            assert!(ImageReqs::from_properties(&ok).passes(&caps), "{ok:?}");
        }
        for bad in [
            props(&[("hw_architecture", "aarch64")]),
            props(&[("img_hv_type", "xen")]),
            props(&[("hw_vm_mode", "exe")]),
            props(&[("hw_architecture", "x86_64"), ("hw_vm_mode", "xen")]),
        ] {
            assert!(!ImageReqs::from_properties(&bad).passes(&caps), "{bad:?}");
        }
    }

    #[test]
    fn the_new_name_wins_over_the_legacy_one() {
        let r = ImageReqs::from_properties(&props(&[
            ("hw_architecture", "aarch64"),
            ("architecture", "x86_64"),
        ]));
        assert_eq!(r.arch.as_deref(), Some("aarch64"));
    }

    #[test]
    fn reported_capabilities_replace_the_defaults_per_key() {
        let caps = Capabilities::from_strings(&["arch=aarch64".into(), "arch=armv7l".into()]);
        assert_eq!(caps.supported.len(), 4);
        let arm = ImageReqs::from_properties(&props(&[("hw_architecture", "aarch64")]));
        assert!(arm.passes(&caps));
        let x86 = ImageReqs::from_properties(&props(&[("hw_architecture", "x86_64")]));
        assert!(!x86.passes(&caps));
        let qemu = ImageReqs::from_properties(&props(&[("img_hv_type", "qemu")]));
        assert!(qemu.passes(&caps));
    }
}
