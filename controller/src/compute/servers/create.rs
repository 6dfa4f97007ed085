//! Creating servers: validation against flavors, images, key pairs and networks,
//! the quota check, the scheduler's choice and claim, the Neutron ports and the
//! records — all in ONE write transaction per request (so concurrent creates
//! never over-commit a node or a quota).

use std::collections::BTreeMap;

use super::model::{ActionEvent, ActionRecord, Fault, FlavorCopy, Server, Vif};
use super::tables::{project_key, Usage, BY_NODE, BY_PROJECT, SERVERS, USAGE};
use super::{net_error, Dispatch};
use crate::clock::now_micros;
use crate::compute::model::QUOTA_DEFAULTS;
use crate::compute::server_groups::{member_limit, ServerGroup};
use crate::compute::tables::{NODES, QUOTAS, SERVER_GROUPS};
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::image::tables::IMAGES;
use crate::network::model::{Network, Port};
use crate::network::ports::{create_in, FixedIpReq, PortCreate};
use crate::network::{ops as netops, tables as nettables, Ctx};
use crate::protocol::{PowerState, VmState};
use crate::scheduler::affinity::{choose_for_group, Policy};
use crate::scheduler::image_props::ImageReqs;
use crate::scheduler::{choose, Demand, NodeState, Ratios, Weigher};
use crate::store::{ReadTxn, WriteTxn};

/// A requested NIC.
#[derive(Debug, Clone, PartialEq)]
pub struct NicReq {
    pub uuid: Option<String>,
    pub port: Option<String>,
    pub fixed_ip: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Networks {
    /// Every network the project can use (Nova's `auto`, and 2.1 without the key).
    Auto,
    None,
    List(Vec<NicReq>),
}

/// A validated create request.
#[derive(Debug, Clone)]
pub struct CreateReq {
    pub name: String,
    pub description: Option<String>,
    pub image_ref: String,
    pub flavor_ref: String,
    pub networks: Networks,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub az: Option<String>,
    pub min_count: u32,
    pub max_count: u32,
    pub tags: Vec<String>,
    pub config_drive: bool,
    pub security_groups: Vec<String>,
    pub access_ipv4: String,
    pub access_ipv6: String,
    /// `os:scheduler_hints.group` (the server-group filter plugs in here).
    pub group: Option<String>,
    /// `block_device_mapping_v2` entries with a volume destination.
    pub volumes: Vec<super::bdm::BdmReq>,
    /// `hostname` (2.90).
    pub hostname: Option<String>,
    /// `trusted_image_certificates` (2.63).
    pub trusted_certs: Option<Vec<String>>,
}

/// How many tries a build gets on different hosts before ERROR.
pub const MAX_ATTEMPTS: usize = 3;

pub const NO_VALID_HOST: &str = "No valid host was found. There are not enough hosts available.";

fn quota_limits(r: &dyn ReadTxn, project: &str) -> ApiResult<BTreeMap<String, i64>> {
    let mut q: BTreeMap<String, i64> = QUOTA_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    if let Some(o) = QUOTAS.get(r, project)? {
        q.extend(o);
    }
    Ok(q)
}

/// How many of `req` may be built (Nova: up to max_count, at least min_count).
fn quota_fit(
    limits: &BTreeMap<String, i64>,
    used: Usage,
    flavor: &FlavorCopy,
    min: u32,
    max: u32,
) -> ApiResult<u32> {
    let each = [
        ("instances", used.instances, 1i64),
        ("cores", used.cores, flavor.vcpus as i64),
        ("ram", used.ram, flavor.ram as i64),
    ];
    let mut allowed = max as i64;
    for (name, u, per) in each {
        let limit = limits.get(name).copied().unwrap_or(-1);
        if limit < 0 || per == 0 {
            continue;
        }
        let room = ((limit - u).max(0)) / per;
        if room < min as i64 {
            return Err(ApiError::Forbidden(format!(
                "Quota exceeded for {name}: Requested {}, but already used {u} of {limit} {name}",
                per * min as i64
            )));
        }
        allowed = allowed.min(room);
    }
    Ok(allowed as u32)
}

pub(crate) fn new_action(who: &Who, project: &str, action: &str, event: &str) -> ActionRecord {
    let now = now_micros();
    ActionRecord {
        action: action.to_string(),
        request_id: format!("req-{}", uuid::Uuid::new_v4()),
        user_id: who.user_id.clone(),
        project_id: project.to_string(),
        start_time: now,
        message: None,
        events: vec![ActionEvent {
            event: event.to_string(),
            start_time: now,
            finish_time: None,
            result: None,
        }],
    }
}

/// A server group as the scheduler needs it: its policy and the nodes its
/// members run on (one entry per member).
pub(crate) struct GroupPlacement {
    pub policy: Policy,
    pub member_nodes: Vec<String>,
}

impl GroupPlacement {
    /// `g`'s placement, leaving out `except`'s own membership (a server being
    /// placed again); `None` for a policy kiln does not know.
    pub fn of(g: &ServerGroup, except: Option<&str>) -> Option<Self> {
        Some(GroupPlacement {
            policy: g.policy()?,
            member_nodes: g
                .members
                .iter()
                .filter(|(m, _)| Some(m.as_str()) != except)
                .map(|(_, n)| n.clone())
                .collect(),
        })
    }
}

/// Nova's `availability_zone` of `az:host[:node]`: the zone (none when
/// empty) and the host the server is forced onto, which only admins may ask
/// for (`os_compute_api:servers:create:forced_host`).
fn forced_host(az: Option<&str>, admin: bool) -> ApiResult<(Option<String>, Option<String>)> {
    let Some(az) = az else {
        return Ok((None, None));
    };
    let mut parts = az.splitn(3, ':');
    let zone = parts.next().filter(|z| !z.is_empty()).map(str::to_string);
    let host = parts.next().filter(|h| !h.is_empty()).map(str::to_string);
    if host.is_some() && !admin {
        return Err(ApiError::Forbidden(
            "Policy doesn't allow os_compute_api:servers:create:forced_host to be performed."
                .into(),
        ));
    }
    Ok((zone, host))
}

/// Chooses and claims a node for `demand` among `nodes` (updated in place),
/// skipping `tried`. The caller writes the node back in its transaction.
pub(crate) fn pick<'a>(
    nodes: &'a mut [NodeState],
    demand: &Demand,
    tried: &[String],
) -> Option<&'a mut NodeState> {
    pick_in(nodes, demand, tried, None)
}

/// [`pick`], honouring a server group's policy when there is one.
pub(crate) fn pick_in<'a>(
    nodes: &'a mut [NodeState],
    demand: &Demand,
    tried: &[String],
    group: Option<&GroupPlacement>,
) -> Option<&'a mut NodeState> {
    let candidates: Vec<NodeState> = nodes
        .iter()
        .filter(|n| !tried.contains(&n.id))
        .cloned()
        .collect();
    let (ratios, weigher, now) = (Ratios::default(), Weigher::Spread, now_micros());
    let chosen = match group {
        None => choose(&candidates, demand, ratios, weigher, now),
        Some(g) => choose_for_group(
            &candidates,
            demand,
            ratios,
            weigher,
            now,
            g.policy,
            &g.member_nodes,
        ),
    }?
    .id
    .clone();
    let node = nodes.iter_mut().find(|n| n.id == chosen)?;
    node.used_vcpus += demand.vcpus;
    node.used_ram_mb += demand.ram_mb;
    node.used_disk_gb += demand.disk_gb;
    Some(node)
}

/// The group named in `os:scheduler_hints`, checked for the caller's project
/// and for room under the `server_group_members` quota for `count` more.
fn group_for_create(
    r: &dyn ReadTxn,
    project: &str,
    admin: bool,
    id: &str,
    count: u32,
) -> ApiResult<ServerGroup> {
    let g = SERVER_GROUPS
        .get(r, id)?
        .filter(|g| admin || g.project_id == project)
        .ok_or_else(|| ApiError::BadRequest(format!("Server group {id} could not be found.")))?;
    let limit = member_limit(r, &g.project_id)?;
    if limit >= 0 && g.members.len() as i64 + i64::from(count) > limit {
        return Err(ApiError::Forbidden(
            "Quota exceeded, too many servers in group".into(),
        ));
    }
    Ok(g)
}

impl Compute {
    /// Creates `min_count..=max_count` servers; returns them and the spawns to
    /// send to their nodes.
    pub fn create_servers(
        &self,
        who: &Who,
        req: CreateReq,
    ) -> ApiResult<(Vec<Server>, Vec<Dispatch>)> {
        let project = who
            .project
            .clone()
            .ok_or_else(|| ApiError::Forbidden("A project-scoped token is required.".into()))?;
        let flavor = self.flavor(who, &req.flavor_ref).map_err(|_| {
            ApiError::BadRequest(format!("Flavor {} could not be found.", req.flavor_ref))
        })?;
        let flavor = FlavorCopy {
            id: flavor.id,
            name: flavor.name,
            ram: flavor.ram,
            vcpus: flavor.vcpus,
            disk: flavor.disk,
            ephemeral: flavor.ephemeral,
            swap: flavor.swap,
            extra_specs: flavor.extra_specs,
        };
        let key_data = match &req.key_name {
            Some(k) => Some(
                self.keypair(who, k, None)
                    .map_err(|_| ApiError::BadRequest("Invalid key_name provided.".into()))?
                    .public_key,
            ),
            None => None,
        };
        let ctx = Ctx {
            project_id: project.clone(),
            admin: who.admin,
            writer: true,
        };
        let mut w = self.store.write()?;
        let mut image_reqs = ImageReqs::default();
        if !req.image_ref.is_empty() {
            let img = IMAGES.get(w.as_read(), &req.image_ref)?;
            let visible = img.as_ref().is_some_and(|i| {
                who.admin
                    || i.visibility == "public"
                    || i.visibility == "community"
                    || i.owner.as_deref() == Some(project.as_str())
                    || i.visibility == "shared"
            });
            let Some(img) = img.filter(|_| visible) else {
                return Err(ApiError::BadRequest(format!(
                    "Image {} could not be found.",
                    req.image_ref
                )));
            };
            if img.status != "active" {
                return Err(ApiError::BadRequest(format!(
                    "Image {} is not active.",
                    req.image_ref
                )));
            }
            image_reqs = ImageReqs::from_properties(&img.properties);
        }
        let nic_queues = super::nic_queues(w.as_read(), &flavor, &req.image_ref)?;
        let nets = resolve_networks(w.as_read(), &ctx, &req.networks)?;
        let existing_volumes = req
            .volumes
            .iter()
            .any(|b| matches!(b.source, super::bdm::BdmSource::Volume(_)));
        if existing_volumes && req.max_count > 1 {
            return Err(ApiError::BadRequest(
                "Cannot attach one or more volumes to multiple instances".into(),
            ));
        }
        let mut made_volumes = Vec::new();
        let used = USAGE.get(w.as_read(), &project)?.unwrap_or_default();
        let limits = quota_limits(w.as_read(), &project)?;
        let count = quota_fit(&limits, used, &flavor, req.min_count, req.max_count)?;
        if req.max_count > 1 && count > 1 {
            // Only a single server may bind a given port or fixed IP.
            if let Networks::List(list) = &req.networks {
                if list
                    .iter()
                    .any(|n| n.port.is_some() || n.fixed_ip.is_some())
                {
                    return Err(ApiError::BadRequest(
                        "Multiple instances cannot be created with a port or fixed IP.".into(),
                    ));
                }
            }
        }
        let mut group = match &req.group {
            Some(id) => Some(group_for_create(
                w.as_read(),
                &project,
                who.admin,
                id,
                count,
            )?),
            None => None,
        };
        let mut placement = match &group {
            Some(g) => Some(GroupPlacement::of(g, None).ok_or_else(|| {
                ApiError::Internal(format!("server group {} has an unknown policy", g.id))
            })?),
            None => None,
        };
        let mut nodes = NODES.values(w.as_read())?;
        let (az, forced) = forced_host(req.az.as_deref(), who.admin)?;
        // A forced host: every other node is out of the running (none left
        // when the host is unknown: the server goes to ERROR, as in Nova).
        let elsewhere: Vec<String> = match &forced {
            Some(h) => nodes
                .iter()
                .filter(|n| &n.host != h)
                .map(|n| n.id.clone())
                .collect(),
            None => vec![],
        };
        let reservation_id = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let now = now_micros();
        let mut servers = Vec::new();
        let mut dispatch = Vec::new();
        for i in 0..count {
            let id = uuid::Uuid::new_v4().to_string();
            let name = if count > 1 {
                format!("{}-{}", req.name, i + 1)
            } else {
                req.name.clone()
            };
            let mut s = Server {
                id: id.clone(),
                name,
                description: req.description.clone(),
                project_id: project.clone(),
                user_id: who.user_id.clone(),
                image_ref: req.image_ref.clone(),
                flavor: flavor.clone(),
                old_flavor: None,
                key_name: req.key_name.clone(),
                key_data: key_data.clone(),
                user_data: req.user_data.clone(),
                metadata: req.metadata.clone(),
                tags: req.tags.clone(),
                az: az.clone(),
                node: None,
                host: None,
                tried: vec![],
                vm_state: VmState::Building,
                task_state: Some("scheduling".into()),
                power_state: PowerState::NoState,
                locked: false,
                locked_by: None,
                locked_reason: None,
                access_ipv4: req.access_ipv4.clone(),
                access_ipv6: req.access_ipv6.clone(),
                config_drive: req.config_drive,
                security_groups: if req.security_groups.is_empty() {
                    vec!["default".into()]
                } else {
                    req.security_groups.clone()
                },
                vifs: vec![],
                volumes: vec![],
                bdms: vec![],
                pending_ports: vec![],
                fault: None,
                reservation_id: reservation_id.clone(),
                launch_index: i,
                created_at: now,
                updated_at: now,
                launched_at: None,
                terminated_at: None,
                deleted_at: None,
                scheduler_group: req.group.clone(),
                actions: vec![new_action(
                    who,
                    &project,
                    "create",
                    "compute__do_build_and_run_instance",
                )],
                hostname: req.hostname.clone(),
                pinned_az: az.clone(),
                image_reqs: image_reqs.clone(),
                trusted_certs: req.trusted_certs.clone(),
            };
            match pick_in(&mut nodes, &s.demand(), &elsewhere, placement.as_ref()) {
                Some(node) => {
                    if let (Some(g), Some(p)) = (group.as_mut(), placement.as_mut()) {
                        g.members.push((id.clone(), node.id.clone()));
                        p.member_nodes.push(node.id.clone());
                    }
                    s.node = Some(node.id.clone());
                    s.host = Some(node.host.clone());
                    if s.az.is_none() {
                        s.az = Some(node.az.clone());
                    }
                    s.task_state = Some("spawning".into());
                    let node = node.clone();
                    NODES.put(&mut *w, &node.id, &node)?;
                    BY_NODE.put(&mut *w, &project_key(&node.id, &id), &())?;
                    s.vifs = plug(&mut *w, &ctx, &s, &nets, &node.host, nic_queues)?;
                    made_volumes.extend(super::bdm::map_at_create(
                        &mut *w,
                        who,
                        &mut s,
                        &req.volumes,
                    )?);
                }
                None => {
                    s.vm_state = VmState::Error;
                    s.task_state = None;
                    s.fault = Some(Fault {
                        code: 500,
                        message: NO_VALID_HOST.into(),
                        created: now,
                    });
                }
            }
            SERVERS.put(&mut *w, &id, &s)?;
            BY_PROJECT.put(&mut *w, &project_key(&project, &id), &())?;
            if s.node.is_some() {
                dispatch.push(self.dispatch_for(w.as_read(), &s)?);
            }
            servers.push(s);
        }
        if let Some(g) = &group {
            SERVER_GROUPS.put(&mut *w, &g.id, g)?;
        }
        let usage = Usage {
            instances: used.instances + count as i64,
            cores: used.cores + (flavor.vcpus * count as u64) as i64,
            ram: used.ram + (flavor.ram * count as u64) as i64,
        };
        USAGE.put(&mut *w, &project, &usage)?;
        w.commit()?;
        if let Some(backend) = self.volume_backend() {
            super::bdm::fill(&*self.store, &*backend, &made_volumes);
        }
        Ok((servers, dispatch.into_iter().flatten().collect()))
    }
}

/// What each requested NIC resolves to before ports are made.
#[derive(Debug, Clone)]
pub(crate) enum NicPlan {
    /// A new port on a network (with an optional fixed IP).
    New {
        net: Network,
        fixed_ip: Option<String>,
    },
    /// An existing port, bound to the server.
    Existing { port: Box<Port>, net: Network },
}

pub(crate) fn resolve_networks(
    r: &dyn ReadTxn,
    ctx: &Ctx,
    nets: &Networks,
) -> ApiResult<Vec<NicPlan>> {
    match nets {
        Networks::None => Ok(vec![]),
        Networks::Auto => {
            // The project's own networks first, else the shared ones (not external).
            let all: Vec<Network> = nettables::NETWORKS.values(r)?;
            let own: Vec<&Network> = all
                .iter()
                .filter(|n| n.project_id == ctx.project_id && !n.router_external)
                .collect();
            let pick = if own.is_empty() {
                all.iter()
                    .filter(|n| n.shared && !n.router_external)
                    .collect()
            } else {
                own
            };
            Ok(pick
                .into_iter()
                .filter(|n| !n.subnets.is_empty())
                .take(1)
                .map(|n| NicPlan::New {
                    net: n.clone(),
                    fixed_ip: None,
                })
                .collect())
        }
        Networks::List(list) => list
            .iter()
            .map(|nic| {
                if let Some(port_id) = &nic.port {
                    let port: Port = netops::find(r, ctx, port_id).map_err(|_| {
                        ApiError::BadRequest(format!("Port {port_id} could not be found."))
                    })?;
                    if !port.device_id.is_empty() {
                        return Err(ApiError::Conflict(format!(
                            "Port {port_id} is still in use."
                        )));
                    }
                    let net: Network = netops::get(r, &port.network_id).map_err(net_error)?;
                    return Ok(NicPlan::Existing {
                        port: Box::new(port),
                        net,
                    });
                }
                let uuid = nic.uuid.clone().unwrap_or_default();
                let net: Network = netops::find(r, ctx, &uuid).map_err(|_| {
                    ApiError::BadRequest(format!("Network {uuid} could not be found."))
                })?;
                Ok(NicPlan::New {
                    net,
                    fixed_ip: nic.fixed_ip.clone(),
                })
            })
            .collect(),
    }
}

/// Makes (or binds) the server's ports in the open transaction, each NIC
/// with `queues` queue pairs.
pub(crate) fn plug(
    w: &mut dyn WriteTxn,
    ctx: &Ctx,
    s: &Server,
    nets: &[NicPlan],
    host: &str,
    queues: u16,
) -> ApiResult<Vec<Vif>> {
    let mut vifs = Vec::new();
    let mut group_ids = None;
    for plan in nets {
        let (port, net, owned) = match plan {
            NicPlan::New { net, fixed_ip } => {
                if group_ids.is_none() {
                    group_ids = Some(security_group_ids(w, &s.project_id, &s.security_groups)?);
                }
                let b = PortCreate {
                    network_id: net.id.clone(),
                    device_id: Some(s.id.clone()),
                    device_owner: Some(format!(
                        "compute:{}",
                        s.az.clone().unwrap_or_else(|| "nova".into())
                    )),
                    fixed_ips: fixed_ip.as_ref().map(|ip| {
                        vec![FixedIpReq {
                            subnet_id: None,
                            ip_address: Some(ip.clone()),
                        }]
                    }),
                    binding_host_id: Some(host.to_string()),
                    security_groups: group_ids.clone(),
                    ..PortCreate::default()
                };
                let port = create_in(w, ctx, b, false).map_err(net_error)?;
                (port, net.clone(), true)
            }
            NicPlan::Existing { port, net } => {
                let mut port = (**port).clone();
                port.device_id = s.id.clone();
                port.device_owner = "compute:nova".into();
                port.binding_host_id = host.to_string();
                nettables::PORTS.put(w, &port.id.clone(), &port)?;
                (port, net.clone(), false)
            }
        };
        vifs.push(Vif {
            port_id: port.id.clone(),
            network_id: net.id.clone(),
            network_name: net.name.clone(),
            mac: port.mac_address.clone(),
            ips: port
                .fixed_ips
                .iter()
                .map(|f| f.ip_address.clone())
                .collect(),
            owned,
            tag: None,
            queues,
        });
    }
    Ok(vifs)
}

/// The ids of a server's security groups as Nova takes them (a name in the
/// server's project, or an id); `default` is created on first use. The ports
/// Nova creates for the server get exactly these.
fn security_group_ids(
    w: &mut dyn WriteTxn,
    project: &str,
    wanted: &[String],
) -> ApiResult<Vec<String>> {
    let all = nettables::SECURITY_GROUPS.values(w.as_read())?;
    let mut ids = Vec::new();
    for want in wanted {
        let mut found = all
            .iter()
            .filter(|g| g.project_id == project && (g.id == *want || g.name == *want));
        let id = match (found.next(), found.next()) {
            (Some(g), None) => g.id.clone(),
            (Some(_), Some(_)) => {
                return Err(ApiError::Conflict(format!(
                    "Multiple security_group matches found for name '{want}', use an ID to be more specific."
                )))
            }
            (None, _) if want == "default" => {
                crate::network::secgroups::ensure_default(w, project).map_err(net_error)?
            }
            (None, _) => {
                return Err(ApiError::BadRequest(format!(
                    "Security group {want} not found for project {project}."
                )))
            }
        };
        if !ids.contains(&id) {
            ids.push(id);
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flavor(vcpus: u64, ram: u64) -> FlavorCopy {
        FlavorCopy {
            id: "1".into(),
            name: "f".into(),
            ram,
            vcpus,
            disk: 1,
            ephemeral: 0,
            swap: 0,
            extra_specs: BTreeMap::new(),
        }
    }

    #[test]
    fn az_host_forces_a_host_for_admins_only() {
        let some = |s: &str| Some(s.to_string());
        assert_eq!(forced_host(None, false).unwrap(), (None, None));
        assert_eq!(
            forced_host(Some("nova"), false).unwrap(),
            (some("nova"), None)
        );
        assert_eq!(
            forced_host(Some("nova:n2"), true).unwrap(),
            (some("nova"), some("n2"))
        );
        assert_eq!(
            forced_host(Some(":n2:n2"), true).unwrap(),
            (None, some("n2"))
        );
        assert_eq!(
            forced_host(Some("nova:"), false).unwrap(),
            (some("nova"), None)
        );
        assert!(matches!(
            forced_host(Some("nova:n2"), false),
            Err(ApiError::Forbidden(_))
        ));
    }

    #[test]
    fn quota_fit_follows_nova() {
        let mut limits = BTreeMap::new();
        limits.insert("instances".to_string(), 10);
        limits.insert("cores".to_string(), 20);
        limits.insert("ram".to_string(), -1);
        let used = Usage {
            instances: 10,
            cores: 10,
            ram: 0,
        };
        let e = quota_fit(&limits, used, &flavor(1, 512), 1, 1).unwrap_err();
        assert_eq!(
            e.to_string(),
            "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
        );
        let used = Usage {
            instances: 2,
            cores: 16,
            ram: 0,
        };
        assert_eq!(quota_fit(&limits, used, &flavor(2, 1), 1, 5).unwrap(), 2);
        let e = quota_fit(&limits, used, &flavor(2, 1), 3, 5).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("Quota exceeded for cores: Requested 6"),
            "{e}"
        );
    }
}
