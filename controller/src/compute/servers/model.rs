//! A server as stored, and Nova's state model: vm_state × task_state → the API's
//! `status`, and which vm_states each action accepts.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::protocol::{FlavorSpec, PowerState, VmState};

/// The flavor as it was when the server was built (Nova embeds a copy).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlavorCopy {
    pub id: String,
    pub name: String,
    pub ram: u64,
    pub vcpus: u64,
    pub disk: u64,
    pub ephemeral: u64,
    pub swap: u64,
    #[serde(default)]
    pub extra_specs: BTreeMap<String, String>,
}

impl FlavorCopy {
    pub fn spec(&self) -> FlavorSpec {
        FlavorSpec {
            id: self.id.clone(),
            vcpus: self.vcpus,
            ram_mb: self.ram,
            disk_gb: self.disk,
            ephemeral_gb: self.ephemeral,
            swap_mb: self.swap,
        }
    }
}

/// One network interface of a server (a Neutron port).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Vif {
    pub port_id: String,
    pub network_id: String,
    pub network_name: String,
    pub mac: String,
    pub ips: Vec<String>,
    /// Whether kiln created the port (then it deletes it with the server).
    pub owned: bool,
    /// The device tag given when it was attached (os-interface, 2.49).
    #[serde(default)]
    pub tag: Option<String>,
    /// Queue pairs of its virtio-net device (more than one: multi-queue),
    /// fixed when the port is plugged (see `compute::multiqueue`).
    #[serde(default = "crate::protocol::one_queue")]
    pub queues: u16,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fault {
    pub code: u16,
    pub message: String,
    pub created: i64,
}

/// One entry of os-instance-actions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionRecord {
    pub action: String,
    pub request_id: String,
    pub user_id: String,
    pub project_id: String,
    pub start_time: i64,
    pub message: Option<String>,
    /// Event: (name, start, finish, result).
    pub events: Vec<ActionEvent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionEvent {
    pub event: String,
    pub start_time: i64,
    pub finish_time: Option<i64>,
    pub result: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    pub id: String,
    pub name: String,
    pub description: Option<String>,
    pub project_id: String,
    pub user_id: String,
    /// Empty when booted from a volume.
    pub image_ref: String,
    pub flavor: FlavorCopy,
    /// Set during a resize until confirmed or reverted.
    #[serde(default)]
    pub old_flavor: Option<FlavorCopy>,
    pub key_name: Option<String>,
    pub key_data: Option<String>,
    pub user_data: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub tags: Vec<String>,
    /// The availability zone the user asked for, or the node's.
    pub az: Option<String>,
    pub node: Option<String>,
    pub host: Option<String>,
    /// Nodes tried (for the retry on another host).
    pub tried: Vec<String>,
    pub vm_state: VmState,
    pub task_state: Option<String>,
    pub power_state: PowerState,
    pub locked: bool,
    pub locked_by: Option<String>,
    pub locked_reason: Option<String>,
    pub access_ipv4: String,
    pub access_ipv6: String,
    pub config_drive: bool,
    pub security_groups: Vec<String>,
    pub vifs: Vec<Vif>,
    /// The ids of the volumes in `bdms`, in device order (what the views list).
    pub volumes: Vec<String>,
    /// The volumes mapped to the server, with their device and attach state.
    #[serde(default)]
    pub bdms: Vec<super::bdm::Bdm>,
    /// Ports whose attach the node has not concluded yet (oldest first).
    #[serde(default)]
    pub pending_ports: Vec<String>,
    pub fault: Option<Fault>,
    pub reservation_id: String,
    pub launch_index: u32,
    pub created_at: i64,
    pub updated_at: i64,
    pub launched_at: Option<i64>,
    pub terminated_at: Option<i64>,
    pub deleted_at: Option<i64>,
    pub scheduler_group: Option<String>,
    pub actions: Vec<ActionRecord>,
    /// The hostname given at create/update/rebuild (2.90); the sanitised name
    /// when `None`.
    #[serde(default)]
    pub hostname: Option<String>,
    /// The availability zone the user asked for at create (2.96
    /// `pinned_availability_zone`); `az` also holds the node's.
    #[serde(default)]
    pub pinned_az: Option<String>,
    /// What the image asks of the host (the image-properties filter), kept
    /// from create like Nova's request spec.
    #[serde(default)]
    pub image_reqs: crate::scheduler::image_props::ImageReqs,
    /// `trusted_image_certificates` (2.63), `None` when not given.
    #[serde(default)]
    pub trusted_certs: Option<Vec<String>>,
}

impl Server {
    /// Nova's API status for this vm_state/task_state.
    pub fn status(&self) -> &'static str {
        status_of(self.vm_state, self.task_state.as_deref())
    }

    /// The claim this server holds on its node.
    pub fn demand(&self) -> crate::scheduler::Demand {
        crate::scheduler::Demand {
            vcpus: self.flavor.vcpus,
            ram_mb: self.flavor.ram,
            disk_gb: self.flavor.disk + self.flavor.ephemeral,
            az: self.az.clone(),
            host: None,
            image: self.image_reqs.clone(),
        }
    }

    pub fn instance_name(&self) -> String {
        let short: String = self.id.chars().filter(|c| *c != '-').take(8).collect();
        format!("instance-{short}")
    }
}

/// Nova's `_STATE_MAP` (nova/api/openstack/common.py), as a function.
pub fn status_of(vm: VmState, task: Option<&str>) -> &'static str {
    match vm {
        VmState::Active => match task {
            Some("rebooting" | "reboot_pending" | "reboot_started") => "REBOOT",
            Some("rebooting_hard" | "reboot_pending_hard" | "reboot_started_hard") => "HARD_REBOOT",
            Some("rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning") => "REBUILD",
            Some("updating_password") => "PASSWORD",
            Some("migrating") => "MIGRATING",
            Some("resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish") => {
                "RESIZE"
            }
            _ => "ACTIVE",
        },
        VmState::Building => "BUILD",
        VmState::Stopped => match task {
            Some("resize_prep" | "resize_migrating" | "resize_migrated" | "resize_finish") => {
                "RESIZE"
            }
            Some("rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning") => "REBUILD",
            _ => "SHUTOFF",
        },
        VmState::Resized => match task {
            Some("resize_reverting") => "REVERT_RESIZE",
            _ => "VERIFY_RESIZE",
        },
        VmState::Paused => "PAUSED",
        VmState::Suspended => "SUSPENDED",
        VmState::Rescued => "RESCUE",
        VmState::Error => match task {
            Some("rebuilding" | "rebuild_block_device_mapping" | "rebuild_spawning") => "REBUILD",
            _ => "ERROR",
        },
        VmState::Deleted => "DELETED",
        VmState::SoftDeleted => "SOFT_DELETED",
        VmState::Shelved => "SHELVED",
        VmState::ShelvedOffloaded => "SHELVED_OFFLOADED",
    }
}

/// The vm_states a status filter means (`status=ACTIVE` etc.); None if unknown.
pub fn vm_states_for_status(status: &str) -> Option<&'static [VmState]> {
    Some(match status.to_ascii_uppercase().as_str() {
        "ACTIVE" | "REBOOT" | "HARD_REBOOT" | "REBUILD" | "PASSWORD" | "MIGRATING" | "RESIZE" => {
            &[VmState::Active]
        }
        "BUILD" => &[VmState::Building],
        "SHUTOFF" => &[VmState::Stopped],
        "VERIFY_RESIZE" | "REVERT_RESIZE" => &[VmState::Resized],
        "PAUSED" => &[VmState::Paused],
        "SUSPENDED" => &[VmState::Suspended],
        "RESCUE" => &[VmState::Rescued],
        "ERROR" => &[VmState::Error],
        "DELETED" => &[VmState::Deleted],
        "SOFT_DELETED" => &[VmState::SoftDeleted],
        "SHELVED" => &[VmState::Shelved],
        "SHELVED_OFFLOADED" => &[VmState::ShelvedOffloaded],
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nova_status_map() {
        assert_eq!(status_of(VmState::Active, None), "ACTIVE");
        assert_eq!(status_of(VmState::Active, Some("rebooting")), "REBOOT");
        assert_eq!(
            status_of(VmState::Active, Some("rebooting_hard")),
            "HARD_REBOOT"
        );
        assert_eq!(status_of(VmState::Active, Some("powering-off")), "ACTIVE");
        assert_eq!(status_of(VmState::Stopped, None), "SHUTOFF");
        assert_eq!(status_of(VmState::Resized, None), "VERIFY_RESIZE");
        assert_eq!(
            status_of(VmState::Resized, Some("resize_reverting")),
            "REVERT_RESIZE"
        );
        assert_eq!(status_of(VmState::Active, Some("resize_prep")), "RESIZE");
        assert_eq!(status_of(VmState::Error, None), "ERROR");
        assert_eq!(status_of(VmState::SoftDeleted, None), "SOFT_DELETED");
        assert_eq!(
            status_of(VmState::ShelvedOffloaded, None),
            "SHELVED_OFFLOADED"
        );
        assert_eq!(
            vm_states_for_status("shutoff"),
            Some(&[VmState::Stopped][..])
        );
        assert_eq!(vm_states_for_status("bogus"), None);
    }
}
