//! Ports attached to servers after creation (os-interface): attach binds an
//! existing port or creates one on a network (device_id, `compute:<az>`,
//! `binding:host_id`), detach unbinds it (or deletes a port kiln created); the
//! node is told with `AttachPort`/`DetachPort`. A failed attach is rolled back
//! when the node concludes it ([`super::attachments::conclude`]).

use super::attachments::record;
use super::create::{plug, resolve_networks, Networks, NicPlan, NicReq};
use super::lifecycle::conflict;
use super::model::Server;
use super::query::{check_locked, load};
use super::tables::SERVERS;
use super::{net_error, Call, Dispatch};
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::network::model::{Network, Port};
use crate::network::ports::delete_in;
use crate::network::tables::PORTS;
use crate::network::{ops as netops, Ctx};
use crate::protocol::{Action, PortSpec, VmState};
use crate::store::WriteTxn;

/// The vm_states Nova attaches and detaches interfaces in.
const PORT_STATES: &[VmState] = &[VmState::Active, VmState::Paused, VmState::Stopped];

/// A validated `interfaceAttachment` body.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AttachPort {
    pub port_id: Option<String>,
    pub net_id: Option<String>,
    pub fixed_ip: Option<String>,
    pub tag: Option<String>,
}

fn port_nf(id: &str) -> ApiError {
    ApiError::NotFound(format!("Port {id} could not be found."))
}

/// Takes port `port_id` off `s` in the open transaction: unbound, or deleted
/// when kiln created it.
pub(crate) fn unplug(w: &mut dyn WriteTxn, s: &mut Server, port_id: &str) -> ApiResult<()> {
    let Some(i) = s.vifs.iter().position(|v| v.port_id == port_id) else {
        return Ok(());
    };
    let vif = s.vifs.remove(i);
    s.pending_ports.retain(|p| p != port_id);
    let Some(mut p): Option<Port> = PORTS.get(w.as_read(), port_id)? else {
        return Ok(());
    };
    if vif.owned {
        delete_in(w, &p).map_err(net_error)?;
    } else {
        p.device_id.clear();
        p.device_owner.clear();
        p.binding_host_id.clear();
        PORTS.put(w, port_id, &p)?;
    }
    Ok(())
}

fn spec_of(s: &Server, port_id: &str) -> Option<PortSpec> {
    s.vifs
        .iter()
        .find(|v| v.port_id == port_id)
        .map(|v| PortSpec {
            port_id: v.port_id.clone(),
            network_id: v.network_id.clone(),
            mac: v.mac.clone(),
            ips: v.ips.clone(),
            queues: v.queues,
        })
}

impl Compute {
    /// A server's attached ports, as Neutron has them now.
    pub fn interfaces(&self, who: &Who, server_id: &str) -> ApiResult<(Server, Vec<Port>)> {
        let r = self.store.read()?;
        let s = load(&*r, who, server_id)?;
        let mut ports = Vec::new();
        for v in &s.vifs {
            if let Some(p) = PORTS.get(&*r, &v.port_id)? {
                ports.push(p);
            }
        }
        Ok((s, ports))
    }

    /// One attached port (404 when the server does not have it).
    pub fn interface(&self, who: &Who, server_id: &str, port_id: &str) -> ApiResult<Port> {
        let (_, ports) = self.interfaces(who, server_id)?;
        ports
            .into_iter()
            .find(|p| p.id == port_id)
            .ok_or_else(|| port_nf(port_id))
    }

    /// Attaches a port (an existing one, or a new one on a network).
    pub fn attach_interface(
        &self,
        who: &Who,
        server_id: &str,
        req: AttachPort,
    ) -> ApiResult<(Port, Vec<Dispatch>)> {
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, server_id)?;
        check_locked(who, &s)?;
        if !PORT_STATES.contains(&s.vm_state) || s.task_state.is_some() {
            return Err(conflict("attach_interface", &s));
        }
        let caller = Ctx {
            project_id: who.project.clone().unwrap_or_default(),
            admin: who.admin,
            writer: true,
        };
        // Ports are made in the server's project, as Nova does.
        let ctx = Ctx {
            project_id: s.project_id.clone(),
            ..caller.clone()
        };
        let nic = match (&req.port_id, &req.net_id) {
            (Some(port_id), _) => {
                let port: Port =
                    netops::find(w.as_read(), &caller, port_id).map_err(|_| port_nf(port_id))?;
                let net: Network = netops::get(w.as_read(), &port.network_id).map_err(net_error)?;
                if port.project_id != s.project_id && !net.shared {
                    return Err(ApiError::Forbidden(format!(
                        "Port {port_id} belongs to another project than instance {server_id}; ports cannot connect servers across projects."
                    )));
                }
                if s.vifs.iter().any(|v| v.port_id == *port_id) || !port.device_id.is_empty() {
                    return Err(ApiError::Conflict(format!(
                        "Port {port_id} is still in use."
                    )));
                }
                NicReq {
                    uuid: None,
                    port: Some(port_id.clone()),
                    fixed_ip: None,
                }
            }
            (None, Some(net_id)) => {
                let net: Network = netops::find(w.as_read(), &caller, net_id).map_err(|_| {
                    ApiError::NotFound(format!("Network {net_id} could not be found."))
                })?;
                if net.project_id != s.project_id && !net.shared {
                    return Err(ApiError::Forbidden(format!(
                        "Network {net_id} belongs to another project than instance {server_id}; it is not shared."
                    )));
                }
                NicReq {
                    uuid: Some(net_id.clone()),
                    port: None,
                    fixed_ip: req.fixed_ip.clone(),
                }
            }
            (None, None) => {
                let plans = resolve_networks(w.as_read(), &ctx, &Networks::Auto)?;
                let Some(NicPlan::New { net, .. }) = plans.into_iter().next() else {
                    return Err(ApiError::BadRequest(
                        "No network is available to attach an interface to.".into(),
                    ));
                };
                NicReq {
                    uuid: Some(net.id),
                    port: None,
                    fixed_ip: None,
                }
            }
        };
        let plans = resolve_networks(w.as_read(), &ctx, &Networks::List(vec![nic]))?;
        let host = s.host.clone().unwrap_or_default();
        let queues = super::nic_queues(w.as_read(), &s.flavor, &s.image_ref)?;
        let vifs = plug(&mut *w, &ctx, &s, &plans, &host, queues)?;
        let Some(mut vif) = vifs.into_iter().next() else {
            return Err(ApiError::Internal("no port was plugged".into()));
        };
        vif.tag = req.tag;
        let port_id = vif.port_id.clone();
        s.vifs.push(vif);
        let mut calls = Vec::new();
        if let Some(spec) = spec_of(&s, &port_id) {
            if s.node.is_some() {
                s.pending_ports.push(port_id.clone());
                calls.extend(self.call_for(
                    w.as_read(),
                    &s,
                    Call::Act(Action::AttachPort { port: spec }),
                )?);
            }
        }
        record(who, &mut s, "attach_interface", calls.is_empty());
        SERVERS.put(&mut *w, server_id, &s)?;
        let port: Port = PORTS
            .get(w.as_read(), &port_id)?
            .ok_or_else(|| port_nf(&port_id))?;
        w.commit()?;
        Ok((port, calls))
    }

    /// Detaches a port (deleting it when kiln created it).
    pub fn detach_interface(
        &self,
        who: &Who,
        server_id: &str,
        port_id: &str,
    ) -> ApiResult<Vec<Dispatch>> {
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, server_id)?;
        check_locked(who, &s)?;
        if !PORT_STATES.contains(&s.vm_state) || s.task_state.is_some() {
            return Err(conflict("detach_interface", &s));
        }
        if !s.vifs.iter().any(|v| v.port_id == port_id) {
            return Err(port_nf(port_id));
        }
        unplug(&mut *w, &mut s, port_id)?;
        let mut calls = Vec::new();
        if s.node.is_some() {
            let call = Call::Act(Action::DetachPort {
                port_id: port_id.to_string(),
            });
            calls.extend(self.call_for(w.as_read(), &s, call)?);
        }
        record(who, &mut s, "detach_interface", calls.is_empty());
        SERVERS.put(&mut *w, server_id, &s)?;
        w.commit()?;
        Ok(calls)
    }
}
