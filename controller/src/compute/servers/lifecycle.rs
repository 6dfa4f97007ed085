//! The lifecycle: actions accepted per vm_state (Nova's `check_instance_state`),
//! the task they start, the node call they make; delete; and the node's side —
//! state reports (with the retry on another host after a failed build), resync
//! and registration.

use super::create::{new_action, pick, pick_in, GroupPlacement, MAX_ATTEMPTS, NO_VALID_HOST};
use super::model::{Fault, FlavorCopy, Server};
use super::query::{check_locked, load};
use super::tables::{project_key, BY_NODE, BY_PROJECT, NODE_URLS, SERVERS, USAGE};
use super::{image_spec, not_found, spawn_of, Call, Dispatch};
use crate::clock::now_micros;
use crate::compute::nodes::Registration;
use crate::compute::tables::{NODES, SERVER_GROUPS};
use crate::compute::{Compute, Who};
use crate::error::{ApiError, ApiResult};
use crate::network::model::Port;
use crate::network::ports::delete_in;
use crate::network::tables::PORTS;
use crate::protocol::{
    Action, Adopt, PowerState, Register, Resync, ResyncReply, StateReport, VmState,
};
use crate::scheduler::Demand;
use crate::store::WriteTxn;

/// An action a user asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Verb {
    Stop,
    Start,
    Reboot {
        hard: bool,
    },
    Pause,
    Unpause,
    Suspend,
    Resume,
    Rebuild {
        image_ref: Option<String>,
        name: Option<String>,
    },
    Resize {
        flavor_ref: String,
    },
    ConfirmResize,
    RevertResize,
    Shelve,
    ShelveOffload,
    Unshelve(super::unshelve::Target),
    Lock {
        reason: Option<String>,
    },
    Unlock,
    ResetState {
        active: bool,
    },
    ChangePassword,
    ForceDelete,
    Restore,
    Delete,
}

use VmState::*;

/// Nova's method name (used in its 409 message), the vm_states allowed, and
/// the task_state set while the node works.
fn rule(v: &Verb) -> (&'static str, &'static [VmState], Option<&'static str>) {
    match v {
        Verb::Stop => ("stop", &[Active, Rescued, Error], Some("powering-off")),
        Verb::Start => ("start", &[Stopped], Some("powering-on")),
        Verb::Reboot { hard: false } => ("reboot", &[Active], Some("rebooting")),
        Verb::Reboot { hard: true } => (
            "reboot",
            &[Active, Stopped, Paused, Suspended, Error],
            Some("rebooting_hard"),
        ),
        Verb::Pause => ("pause", &[Active], Some("pausing")),
        Verb::Unpause => ("unpause", &[Paused], Some("unpausing")),
        Verb::Suspend => ("suspend", &[Active], Some("suspending")),
        Verb::Resume => ("resume", &[Suspended], Some("resuming")),
        Verb::Rebuild { .. } => ("rebuild", &[Active, Stopped, Error], Some("rebuilding")),
        Verb::Resize { .. } => ("resize", &[Active, Stopped], Some("resize_prep")),
        Verb::ConfirmResize => ("confirmResize", &[Resized], None),
        Verb::RevertResize => ("revertResize", &[Resized], Some("resize_reverting")),
        Verb::Shelve => (
            "shelve",
            &[Active, Stopped, Paused, Suspended],
            Some("shelving"),
        ),
        Verb::ShelveOffload => ("shelveOffload", &[Shelved], Some("shelving_offloading")),
        Verb::Unshelve(_) => ("unshelve", &[Shelved, ShelvedOffloaded], Some("unshelving")),
        Verb::ChangePassword => ("changePassword", &[Active], None),
        Verb::ForceDelete => ("forceDelete", &[SoftDeleted], None),
        Verb::Restore => (
            "restore",
            &[SoftDeleted],
            Some(super::soft_delete::RESTORING),
        ),
        Verb::Lock { .. } | Verb::Unlock | Verb::ResetState { .. } | Verb::Delete => (
            "",
            &[
                Building,
                Active,
                Stopped,
                Paused,
                Suspended,
                Rescued,
                Resized,
                Shelved,
                ShelvedOffloaded,
                SoftDeleted,
                Error,
            ],
            None,
        ),
    }
}

pub(crate) fn conflict(name: &str, s: &Server) -> ApiError {
    match &s.task_state {
        Some(t) => ApiError::Conflict(format!(
            "Cannot '{name}' instance {} while it is in task_state {t}",
            s.id
        )),
        None => ApiError::Conflict(format!(
            "Cannot '{name}' instance {} while it is in vm_state {}",
            s.id,
            s.vm_state.as_str()
        )),
    }
}

fn adjust(w: &mut dyn WriteTxn, node: &str, d: &Demand, add: bool) -> ApiResult<()> {
    if let Some(mut n) = NODES.get(w.as_read(), node)? {
        if add {
            n.used_vcpus += d.vcpus;
            n.used_ram_mb += d.ram_mb;
            n.used_disk_gb += d.disk_gb;
        } else {
            n.used_vcpus = n.used_vcpus.saturating_sub(d.vcpus);
            n.used_ram_mb = n.used_ram_mb.saturating_sub(d.ram_mb);
            n.used_disk_gb = n.used_disk_gb.saturating_sub(d.disk_gb);
        }
        NODES.put(w, node, &n)?;
    }
    Ok(())
}

fn demand_of(f: &FlavorCopy) -> Demand {
    Demand {
        vcpus: f.vcpus,
        ram_mb: f.ram,
        disk_gb: f.disk + f.ephemeral,
        ..Demand::default()
    }
}

fn add_usage(w: &mut dyn WriteTxn, project: &str, f: &FlavorCopy, sign: i64) -> ApiResult<()> {
    let mut u = USAGE.get(w.as_read(), project)?.unwrap_or_default();
    u.cores += sign * f.vcpus as i64;
    u.ram += sign * f.ram as i64;
    USAGE.put(w, project, &u)?;
    Ok(())
}

fn fault(code: u16, message: impl Into<String>) -> Fault {
    Fault {
        code,
        message: message.into(),
        created: now_micros(),
    }
}

impl Compute {
    /// Validates and starts an action; returns the server as it is now and the
    /// node calls to make.
    pub fn act(&self, who: &Who, id: &str, verb: Verb) -> ApiResult<(Server, Vec<Dispatch>)> {
        let new_flavor = match &verb {
            Verb::Resize { flavor_ref } => Some(self.flavor(who, flavor_ref).map_err(|_| {
                ApiError::BadRequest(format!("Flavor {flavor_ref} could not be found."))
            })?),
            _ => None,
        };
        let mut w = self.store.write()?;
        let mut s = load(w.as_read(), who, id)?;
        let (name, allowed, task) = rule(&verb);
        match &verb {
            Verb::Lock { .. } | Verb::Unlock => {}
            Verb::Unshelve(t) => {
                check_locked(who, &s)?;
                super::unshelve::check_policy(who, t)?;
            }
            Verb::ResetState { .. } => {
                if !who.admin {
                    return Err(ApiError::Forbidden(
                        "Policy doesn't allow os_compute_api:os-admin-actions:reset_state to be performed.".into(),
                    ));
                }
            }
            _ => check_locked(who, &s)?,
        }
        let checks_task = !matches!(
            verb,
            Verb::Lock { .. } | Verb::Unlock | Verb::ResetState { .. } | Verb::Delete
        );
        if !allowed.contains(&s.vm_state) || (checks_task && s.task_state.is_some()) {
            return Err(conflict(name, &s));
        }
        let mut calls = Vec::new();
        let mut action: Option<Action> = None;
        match &verb {
            Verb::Stop => action = Some(Action::Stop),
            Verb::Start => action = Some(Action::Start),
            Verb::Reboot { hard } => action = Some(Action::Reboot { hard: *hard }),
            Verb::Pause => action = Some(Action::Pause),
            Verb::Unpause => action = Some(Action::Unpause),
            Verb::Suspend => action = Some(Action::Suspend),
            Verb::Resume => action = Some(Action::Resume),
            Verb::Rebuild { image_ref, name } => {
                if let Some(img) = image_ref {
                    s.image_ref = img.clone();
                }
                if let Some(n) = name {
                    s.name = n.clone();
                }
                let image = image_spec(w.as_read(), &s.image_ref)?.ok_or_else(|| {
                    ApiError::BadRequest("Cannot rebuild a server booted from a volume.".into())
                })?;
                action = Some(Action::Rebuild { image });
            }
            Verb::Resize { .. } => {
                let Some(f) = new_flavor else {
                    return Err(ApiError::Internal("resize without a flavor".into()));
                };
                if f.id == s.flavor.id {
                    return Err(ApiError::BadRequest(
                        "When resizing, instances must change flavor!".into(),
                    ));
                }
                let new = FlavorCopy {
                    id: f.id,
                    name: f.name,
                    ram: f.ram,
                    vcpus: f.vcpus,
                    disk: f.disk,
                    ephemeral: f.ephemeral,
                    swap: f.swap,
                    extra_specs: f.extra_specs,
                };
                let node_id = s.node.clone().ok_or_else(|| conflict(name, &s))?;
                // The new flavor is claimed beside the old one until confirmed.
                let mut nodes = NODES.values(w.as_read())?;
                let others: Vec<String> = nodes
                    .iter()
                    .filter(|n| n.id != node_id)
                    .map(|n| n.id.clone())
                    .collect();
                let Some(node) = pick(&mut nodes, &demand_of(&new), &others) else {
                    return Err(ApiError::BadRequest(NO_VALID_HOST.into()));
                };
                let node = node.clone();
                NODES.put(&mut *w, &node.id, &node)?;
                add_usage(&mut *w, &s.project_id, &new, 1)?;
                s.old_flavor = Some(std::mem::replace(&mut s.flavor, new));
                action = Some(Action::Resize {
                    flavor: s.flavor.spec(),
                });
            }
            Verb::ConfirmResize => {
                if let (Some(old), Some(node)) = (s.old_flavor.take(), s.node.clone()) {
                    adjust(&mut *w, &node, &demand_of(&old), false)?;
                    add_usage(&mut *w, &s.project_id, &old, -1)?;
                }
                action = Some(Action::ConfirmResize);
            }
            Verb::RevertResize => {
                if let (Some(old), Some(node)) = (s.old_flavor.take(), s.node.clone()) {
                    let new = std::mem::replace(&mut s.flavor, old);
                    adjust(&mut *w, &node, &demand_of(&new), false)?;
                    add_usage(&mut *w, &s.project_id, &new, -1)?;
                }
                action = Some(Action::RevertResize {
                    flavor: s.flavor.spec(),
                });
            }
            Verb::Shelve | Verb::ShelveOffload => action = Some(Action::ShelveOffload),
            Verb::Unshelve(target) => {
                super::unshelve::place(&mut *w, &mut s, target)?;
                let spawn = spawn_of(w.as_read(), &s)?;
                if let Some(d) = self.call_for(w.as_read(), &s, Call::Spawn(Box::new(spawn)))? {
                    calls.push(d);
                }
            }
            Verb::Lock { reason } => {
                s.locked = true;
                s.locked_by = Some(who.user_id.clone());
                s.locked_reason = reason.clone();
            }
            Verb::Unlock => {
                s.locked = false;
                s.locked_by = None;
                s.locked_reason = None;
            }
            Verb::ResetState { active } => {
                s.vm_state = if *active { Active } else { Error };
                s.task_state = None;
            }
            Verb::ChangePassword => {}
            Verb::Restore => action = Some(super::soft_delete::restore(&mut s)),
            Verb::Delete if self.reclaim_interval() > 0 && super::soft_delete::applies(&s) => {
                action = super::soft_delete::begin(&mut s);
            }
            Verb::Delete | Verb::ForceDelete => {
                s.task_state = Some("deleting".into());
                match self.call_for(w.as_read(), &s, Call::Delete)? {
                    Some(d) => calls.push(d),
                    None => {
                        let gone = finish_delete(&mut *w, &s)?;
                        w.commit()?;
                        self.purge_volume_files(&gone);
                        return Ok((s, vec![]));
                    }
                }
            }
        }
        if let Some(a) = action {
            if let Some(d) = self.call_for(w.as_read(), &s, Call::Act(a))? {
                calls.push(d);
            }
        }
        if let Some(t) = task {
            s.task_state = Some(t.to_string());
        }
        if !name.is_empty() {
            let event = format!("compute_{name}_instance");
            s.actions.push(new_action(who, &s.project_id, name, &event));
        }
        s.updated_at = now_micros();
        SERVERS.put(&mut *w, id, &s)?;
        w.commit()?;
        Ok((s, calls))
    }

    /// Records what a node reports; returns follow-up calls (a retried build).
    pub fn apply_report(&self, node: &str, r: &StateReport) -> ApiResult<Vec<Dispatch>> {
        let mut w = self.store.write()?;
        let Some(mut s) = SERVERS.get(w.as_read(), &r.server_id)? else {
            return Ok(vec![]);
        };
        if s.node.as_deref() != Some(node) {
            return Ok(vec![]);
        }
        let mut calls = vec![];
        let concludes = r.concludes.as_deref();
        let failed = r.fault.is_some() || r.vm_state == Error;
        match concludes {
            Some("delete") => {
                let gone = finish_delete(&mut *w, &s)?;
                w.commit()?;
                self.purge_volume_files(&gone);
                return Ok(vec![]);
            }
            Some("spawn") if failed && s.vm_state == Building => {
                let msg = r.fault.clone().unwrap_or_else(|| "Build failed".into());
                if let Some(d) = self.reschedule(&mut *w, &mut s, &msg)? {
                    calls.push(d);
                }
            }
            Some("shelve_offload") => {
                adjust(&mut *w, node, &s.demand(), false)?;
                BY_NODE.delete(&mut *w, &project_key(node, &s.id))?;
                s.node = None;
                s.host = None;
                s.vm_state = ShelvedOffloaded;
                s.power_state = PowerState::Shutdown;
                s.task_state = None;
            }
            _ if super::soft_delete::concludes_soft_delete(&s, concludes, failed) => {
                s.vm_state = SoftDeleted;
                s.power_state = r.power_state;
                s.task_state = None;
            }
            _ => {
                s.vm_state = r.vm_state;
                s.power_state = r.power_state;
                s.task_state = r.task_state.clone();
                if let Some(f) = &r.fault {
                    s.fault = Some(fault(500, f.clone()));
                }
                if concludes == Some("spawn") && !failed {
                    s.launched_at = Some(r.at);
                }
            }
        }
        if let Some(name) = concludes {
            super::attachments::conclude(
                &mut *w,
                &mut s,
                name,
                r.subject.as_deref(),
                r.fault.as_deref(),
            )?;
        }
        if let Some(a) = s.actions.last_mut() {
            if let Some(e) = a.events.last_mut() {
                if e.finish_time.is_none() && s.task_state.is_none() {
                    e.finish_time = Some(now_micros());
                    e.result = Some(if failed { "Error" } else { "Success" }.into());
                }
            }
        }
        s.updated_at = now_micros();
        SERVERS.put(&mut *w, &s.id.clone(), &s)?;
        w.commit()?;
        Ok(calls)
    }

    /// A build failed on `s.node`: release it, try another node (up to
    /// [`MAX_ATTEMPTS`]), else ERROR with the fault.
    fn reschedule(
        &self,
        w: &mut dyn WriteTxn,
        s: &mut Server,
        msg: &str,
    ) -> ApiResult<Option<Dispatch>> {
        if let Some(node) = s.node.take() {
            adjust(w, &node, &s.demand(), false)?;
            BY_NODE.delete(w, &project_key(&node, &s.id))?;
            s.tried.push(node);
        }
        s.host = None;
        let mut nodes = NODES.values(w.as_read())?;
        let mut group = match &s.scheduler_group {
            Some(id) => SERVER_GROUPS.get(w.as_read(), id)?,
            None => None,
        };
        let placement = group
            .as_ref()
            .and_then(|g| GroupPlacement::of(g, Some(&s.id)));
        let next = if s.tried.len() < MAX_ATTEMPTS {
            pick_in(&mut nodes, &s.demand(), &s.tried, placement.as_ref()).cloned()
        } else {
            None
        };
        if let Some(g) = group.as_mut() {
            g.members.retain(|(m, _)| *m != s.id);
            if let Some(node) = &next {
                g.members.push((s.id.clone(), node.id.clone()));
            }
            SERVER_GROUPS.put(w, &g.id, g)?;
        }
        match next {
            Some(node) => {
                NODES.put(w, &node.id, &node)?;
                BY_NODE.put(w, &project_key(&node.id, &s.id), &())?;
                s.node = Some(node.id.clone());
                s.host = Some(node.host.clone());
                s.task_state = Some("spawning".into());
                self.dispatch_for(w.as_read(), s)
            }
            None => {
                s.vm_state = Error;
                s.task_state = None;
                s.power_state = PowerState::NoState;
                let message = if s.tried.len() >= MAX_ATTEMPTS {
                    format!(
                        "Exceeded maximum number of retries. Exhausted all hosts available for retrying build failures for instance {}. Last error: {msg}",
                        s.id
                    )
                } else {
                    format!("{NO_VALID_HOST} Last error: {msg}")
                };
                s.fault = Some(fault(500, message));
                Ok(None)
            }
        }
    }

    /// A node call could not be delivered: a build is retried elsewhere, a
    /// delete finishes here, any other task is cleared with a fault.
    pub fn dispatch_failed(&self, d: &Dispatch, why: &str) -> ApiResult<Vec<Dispatch>> {
        match &d.call {
            Call::Spawn(_) => self.apply_report(
                &d.node,
                &StateReport {
                    server_id: d.server_id.clone(),
                    vm_state: Error,
                    power_state: PowerState::NoState,
                    task_state: None,
                    fault: Some(why.to_string()),
                    concludes: Some("spawn".into()),
                    console_available: false,
                    at: now_micros(),
                    subject: None,
                },
            ),
            Call::Delete => {
                let mut w = self.store.write()?;
                let mut gone = Vec::new();
                if let Some(s) = SERVERS.get(w.as_read(), &d.server_id)? {
                    gone = finish_delete(&mut *w, &s)?;
                }
                w.commit()?;
                self.purge_volume_files(&gone);
                Ok(vec![])
            }
            Call::Act(a) => {
                let mut w = self.store.write()?;
                if let Some(mut s) = SERVERS.get(w.as_read(), &d.server_id)? {
                    super::attachments::conclude(
                        &mut *w,
                        &mut s,
                        a.name(),
                        a.subject(),
                        Some(why),
                    )?;
                    s.task_state = None;
                    s.fault = Some(fault(500, why));
                    SERVERS.put(&mut *w, &d.server_id, &s)?;
                }
                w.commit()?;
                Ok(vec![])
            }
        }
    }

    /// A node (re)registers: its capacity, and where to reach it.
    pub fn register(&self, reg: &Register) -> ApiResult<()> {
        self.register_node(Registration {
            id: reg.node_id.clone(),
            host: reg.host.clone(),
            az: reg.az.clone(),
            vcpus: reg.vcpus,
            ram_mb: reg.ram_mb,
            disk_gb: reg.disk_gb,
        })?;
        let mut w = self.store.write()?;
        if let Some(mut n) = NODES.get(w.as_read(), &reg.node_id)? {
            n.caps = crate::scheduler::image_props::Capabilities::from_strings(&reg.capabilities);
            NODES.put(&mut *w, &reg.node_id, &n)?;
        }
        NODE_URLS.put(&mut *w, &reg.node_id, &reg.url)?;
        let tunnel = reg
            .tunnel_ip
            .clone()
            .or_else(|| crate::network::node_view::url_host(&reg.url));
        if let Some(t) = tunnel {
            crate::network::node_view::NODE_TUNNELS.put(&mut *w, &reg.node_id, &t)?;
        }
        w.commit()?;
        Ok(())
    }

    /// Reconciles a node's list with the servers placed on it.
    pub fn resync(&self, node: &str, r: &Resync) -> ApiResult<ResyncReply> {
        let mut reply = ResyncReply::default();
        let mut reported = std::collections::HashSet::new();
        for rep in &r.servers {
            let mine = {
                let rt = self.store.read()?;
                SERVERS
                    .get(&*rt, &rep.server_id)?
                    .is_some_and(|s| s.node.as_deref() == Some(node))
            };
            if mine {
                reported.insert(rep.server_id.clone());
                self.apply_report(node, rep)?;
            } else {
                reply.forget.push(rep.server_id.clone());
            }
        }
        let rt = self.store.read()?;
        for (k, ()) in BY_NODE.scan(&*rt, &format!("{node}|"))? {
            let id = k.rsplit('|').next().unwrap_or_default();
            if reported.contains(id) {
                continue;
            }
            let Some(s) = SERVERS.get(&*rt, id)? else {
                continue;
            };
            let (vm_state, power_state) = match s.vm_state {
                Building => (Active, PowerState::Running),
                v => (v, s.power_state),
            };
            reply.adopt.push(Adopt {
                spawn: spawn_of(&*rt, &s)?,
                vm_state,
                power_state,
            });
        }
        Ok(reply)
    }

    /// Servers placed on a node (for tests and the node views).
    pub fn node_server_ids(&self, node: &str) -> ApiResult<Vec<String>> {
        let r = self.store.read()?;
        Ok(BY_NODE
            .scan(&*r, &format!("{node}|"))?
            .into_iter()
            .filter_map(|(k, ())| k.rsplit('|').next().map(str::to_string))
            .collect())
    }

    /// The URL of a node (console calls).
    pub fn node_url(&self, node: &str) -> ApiResult<Option<String>> {
        let r = self.store.read()?;
        Ok(NODE_URLS.get(&*r, node)?)
    }

    /// Removes a server record outright (the node said it is gone), e.g. tests.
    pub fn purge_server(&self, id: &str) -> ApiResult<()> {
        let mut w = self.store.write()?;
        let s = SERVERS.get(w.as_read(), id)?.ok_or_else(|| not_found(id))?;
        let gone = finish_delete(&mut *w, &s)?;
        w.commit()?;
        self.purge_volume_files(&gone);
        Ok(())
    }
}

/// Everything a deleted server held: claim, indexes, quota usage, ports,
/// volumes. Returns the volumes deleted with it (their bytes go after the commit).
pub(crate) fn finish_delete(w: &mut dyn WriteTxn, s: &Server) -> ApiResult<Vec<String>> {
    if let Some(gid) = &s.scheduler_group {
        if let Some(mut g) = SERVER_GROUPS.get(w.as_read(), gid)? {
            g.members.retain(|(m, _)| *m != s.id);
            SERVER_GROUPS.put(w, gid, &g)?;
        }
    }
    if let Some(node) = &s.node {
        adjust(w, node, &s.demand(), false)?;
        if let Some(old) = &s.old_flavor {
            adjust(w, node, &demand_of(old), false)?;
        }
        BY_NODE.delete(w, &project_key(node, &s.id))?;
    }
    let mut u = USAGE.get(w.as_read(), &s.project_id)?.unwrap_or_default();
    u.instances -= 1;
    u.cores -= s.flavor.vcpus as i64;
    u.ram -= s.flavor.ram as i64;
    if let Some(old) = &s.old_flavor {
        u.cores -= old.vcpus as i64;
        u.ram -= old.ram as i64;
    }
    USAGE.put(w, &s.project_id, &u)?;
    for v in &s.vifs {
        let Some(mut p): Option<Port> = PORTS.get(w.as_read(), &v.port_id)? else {
            continue;
        };
        if v.owned {
            delete_in(w, &p).map_err(super::net_error)?;
        } else {
            p.device_id.clear();
            p.device_owner.clear();
            p.binding_host_id.clear();
            PORTS.put(w, &v.port_id, &p)?;
        }
    }
    let gone = super::bdm::release(w, s)?;
    BY_PROJECT.delete(w, &project_key(&s.project_id, &s.id))?;
    SERVERS.delete(w, &s.id)?;
    Ok(gone)
}
