//! Kernel link names kiln derives from network and port ids (see the table in [`super`]).

/// Prefix of a tenant network's bridge.
pub const BRIDGE_PREFIX: &str = "kbr-";
/// Prefix of a tenant network's VXLAN device.
pub const VXLAN_PREFIX: &str = "kvx-";
/// Prefix of a guest port's TAP.
pub const TAP_PREFIX: &str = "ktap-";

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
pub const MAX_IFNAME: usize = 15;

fn derive(prefix: &str, id: &str) -> String {
    let room = MAX_IFNAME - prefix.len();
    let tail: String = id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .take(room)
        .collect::<String>()
        .to_ascii_lowercase();
    format!("{prefix}{tail}")
}

/// The bridge of network `network_id` (a UUID: its first 11 hex digits).
pub fn bridge(network_id: &str) -> String {
    derive(BRIDGE_PREFIX, network_id)
}

/// The VXLAN device of network `network_id`.
pub fn vxlan(network_id: &str) -> String {
    derive(VXLAN_PREFIX, network_id)
}

/// The TAP of port `port_id` (its first 10 hex digits, as Neutron's `tap` names).
pub fn tap(port_id: &str) -> String {
    derive(TAP_PREFIX, port_id)
}

/// Whether kiln owns a link of this name.
pub fn is_kiln_owned(name: &str) -> bool {
    [BRIDGE_PREFIX, VXLAN_PREFIX, TAP_PREFIX]
        .iter()
        .any(|p| name.starts_with(p))
}

/// Whether `name` is a usable interface name.
pub fn is_valid(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_IFNAME
        && name != "."
        && name != ".."
        && !name
            .bytes()
            .any(|b| b == b'/' || b == b':' || b.is_ascii_whitespace() || b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_ifnamsiz_and_carry_the_prefix() {
        let id = "3F2504E0-4F89-11D3-9A0C-0305E82C3301";
        assert_eq!(bridge(id), "kbr-3f2504e04f8");
        assert_eq!(vxlan(id), "kvx-3f2504e04f8");
        assert_eq!(tap(id), "ktap-3f2504e04f");
        for n in [bridge(id), vxlan(id), tap(id)] {
            assert!(
                n.len() <= MAX_IFNAME && is_valid(&n) && is_kiln_owned(&n),
                "{n}"
            );
        }
        assert!(!is_kiln_owned("eth0"));
        assert!(!is_valid("a/b") && !is_valid("") && !is_valid("0123456789abcdef"));
    }
}
