//! Server-group placement as pure functions: `affinity` keeps only the hosts
//! that already run a member (any host while the group is empty),
//! `anti-affinity` only hosts with fewer than `max_server_per_host` members (1
//! unless the 2.64 rule says otherwise), and the soft policies act as weighers:
//! among the nodes that fit, the ones with the most (soft-affinity) or fewest
//! (soft-anti-affinity) members win, then the normal weigher decides.

use std::collections::BTreeMap;

use super::{choose, fits, Demand, NodeState, Ratios, Weigher};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    Affinity,
    AntiAffinity { max_per_host: u64 },
    SoftAffinity,
    SoftAntiAffinity,
}

impl Policy {
    /// Nova's policy name and the optional `max_server_per_host` rule.
    pub fn parse(name: &str, max_per_host: Option<u64>) -> Option<Policy> {
        match name {
            "affinity" => Some(Policy::Affinity),
            "anti-affinity" => Some(Policy::AntiAffinity {
                max_per_host: max_per_host.unwrap_or(1),
            }),
            "soft-affinity" => Some(Policy::SoftAffinity),
            "soft-anti-affinity" => Some(Policy::SoftAntiAffinity),
            _ => None,
        }
    }
}

/// How many members each node id runs.
fn counts(member_nodes: &[String]) -> BTreeMap<&str, u64> {
    let mut m = BTreeMap::new();
    for n in member_nodes {
        *m.entry(n.as_str()).or_insert(0) += 1;
    }
    m
}

/// The candidates the hard policies allow (soft policies allow all).
pub fn filter<'a>(
    policy: Policy,
    member_nodes: &[String],
    candidates: &'a [NodeState],
) -> Vec<&'a NodeState> {
    let c = counts(member_nodes);
    let on = |n: &NodeState| c.get(n.id.as_str()).copied().unwrap_or(0);
    candidates
        .iter()
        .filter(|n| match policy {
            Policy::Affinity => member_nodes.is_empty() || on(n) > 0,
            Policy::AntiAffinity { max_per_host } => on(n) < max_per_host,
            Policy::SoftAffinity | Policy::SoftAntiAffinity => true,
        })
        .collect()
}

/// The best node for one more member of a group with `policy` whose members run
/// on `member_nodes` (node ids, one entry per member).
pub fn choose_for_group<'a>(
    nodes: &'a [NodeState],
    demand: &Demand,
    ratios: Ratios,
    weigher: Weigher,
    now: i64,
    policy: Policy,
    member_nodes: &[String],
) -> Option<&'a NodeState> {
    let c = counts(member_nodes);
    let on = |n: &NodeState| c.get(n.id.as_str()).copied().unwrap_or(0);
    let allowed: Vec<&NodeState> = filter(policy, member_nodes, nodes)
        .into_iter()
        .filter(|n| fits(n, demand, ratios, now))
        .collect();
    let best = match policy {
        Policy::SoftAffinity => allowed.iter().map(|n| on(n)).max(),
        Policy::SoftAntiAffinity => allowed.iter().map(|n| on(n)).min(),
        _ => None,
    };
    let finalists: Vec<NodeState> = allowed
        .into_iter()
        .filter(|n| best.is_none_or(|b| on(n) == b))
        .cloned()
        .collect();
    let id = choose(&finalists, demand, ratios, weigher, now)?.id.clone();
    nodes.iter().find(|n| n.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(id: &str, used_ram: u64) -> NodeState {
        NodeState {
            id: id.into(),
            host: id.into(),
            az: "nova".into(),
            enabled: true,
            vcpus: 8,
            ram_mb: 8192,
            disk_gb: 100,
            used_vcpus: 0,
            used_ram_mb: used_ram,
            used_disk_gb: 0,
            last_seen: 0,
            caps: Default::default(),
        }
    }

    const D: Demand = Demand {
        vcpus: 1,
        ram_mb: 512,
        disk_gb: 1,
        az: None,
        host: None,
        image: crate::scheduler::image_props::ImageReqs {
            arch: None,
            hv_type: None,
            vm_mode: None,
        },
    };

    fn pick(policy: Policy, members: &[&str], nodes: &[NodeState]) -> Option<String> {
        let members: Vec<String> = members.iter().map(|s| s.to_string()).collect();
        choose_for_group(
            nodes,
            &D,
            Ratios::default(),
            Weigher::Spread,
            0,
            policy,
            &members,
        )
        .map(|n| n.id.clone())
    }

    #[test]
    fn hard_policies_filter() {
        let nodes = vec![node("a", 0), node("b", 4000), node("c", 2000)];
        // Empty group: the plain weigher (most free RAM).
        assert_eq!(pick(Policy::Affinity, &[], &nodes).as_deref(), Some("a"));
        assert_eq!(pick(Policy::Affinity, &["b"], &nodes).as_deref(), Some("b"));
        let anti = Policy::parse("anti-affinity", None).unwrap();
        assert_eq!(pick(anti, &["a"], &nodes).as_deref(), Some("c"));
        assert_eq!(pick(anti, &["a", "b", "c"], &nodes), None);
        let two = Policy::parse("anti-affinity", Some(2)).unwrap();
        assert_eq!(pick(two, &["a"], &nodes).as_deref(), Some("a"));
        assert_eq!(pick(two, &["a", "a"], &nodes).as_deref(), Some("c"));
        // Affinity to a host that is full: no valid host.
        let mut full = nodes.clone();
        full[1].used_ram_mb = 8192 * 3 / 2;
        assert_eq!(pick(Policy::Affinity, &["b"], &full), None);
        let f = filter(Policy::Affinity, &["c".into()], &nodes);
        assert_eq!(f.len(), 1);
        assert_eq!(Policy::parse("bogus", None), None);
    }

    #[test]
    fn soft_policies_weigh_but_never_refuse() {
        let nodes = vec![node("a", 0), node("b", 4000), node("c", 2000)];
        assert_eq!(
            pick(Policy::SoftAffinity, &["b", "c", "b"], &nodes).as_deref(),
            Some("b")
        );
        assert_eq!(
            pick(Policy::SoftAntiAffinity, &["a", "c"], &nodes).as_deref(),
            Some("b")
        );
        let mut full = nodes.clone();
        full[1].used_ram_mb = 8192 * 3 / 2;
        assert_eq!(
            pick(Policy::SoftAffinity, &["b"], &full).as_deref(),
            Some("a")
        );
        assert_eq!(
            pick(Policy::SoftAntiAffinity, &["a", "b", "c"], &nodes).as_deref(),
            Some("a")
        );
    }
}
