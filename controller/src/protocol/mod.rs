//! The node protocol, version 1: the wire types the controller and the node agents
//! exchange as JSON over HTTP, the paths (the version is in every path), and the
//! shared-secret bearer authentication used in both directions.
//!
//! Node → controller (under [`CONTROLLER_PREFIX`]):
//! - `POST /compute/kiln/v1/nodes` [`Register`] → [`Registered`]
//! - `POST /compute/kiln/v1/nodes/{node}/heartbeat` [`Heartbeat`] → [`Registered`]
//! - `POST /compute/kiln/v1/nodes/{node}/servers/{id}/state` [`StateReport`] → 204
//! - `POST /compute/kiln/v1/nodes/{node}/resync` [`Resync`] → [`ResyncReply`]
//! - `GET /compute/kiln/v1/nodes/{node}/network` → the host's desired network
//!   state (see `network::node_view`)
//! - `PUT /compute/kiln/v1/nodes/{node}/ports/{id}/status` `{"status": ..}` → 204
//! - `PUT|DELETE /compute/kiln/v1/nodes/{node}/networks/{net}/dhcp-port` →
//!   the node's DHCP port on a network (created on demand) / 204
//!
//! Controller → node (under the URL the node registered, `.../kiln-node/v1/{node}`):
//! - `POST {url}/servers` [`Spawn`] → 202
//! - `POST {url}/servers/{id}/action` [`Action`] → 202
//! - `DELETE {url}/servers/{id}` → 202
//! - `GET {url}/servers/{id}/console?lines=N` → [`ConsoleOutput`]
//!
//! Node → controller, image data for a node's image cache:
//! - `GET /compute/kiln/v1/nodes/{node}/images/{id}/file` → the bytes, with
//!   [`IMAGE_HEADER_DISK_FORMAT`], [`IMAGE_HEADER_HASH_ALGO`],
//!   [`IMAGE_HEADER_HASH_VALUE`] and [`IMAGE_HEADER_CHECKSUM`] (md5) to verify
//!   them by.
//! - `PUT /compute/kiln/v1/nodes/{node}/images/{id}/file` (the bytes, streamed)
//!   → 204: a server snapshot's data ([`Action::Snapshot`]), stored like a
//!   Glance upload (saving → active, size and hashes).
//!
//! Every request carries `Authorization: Bearer <secret>`; the secret lives in
//! `DATA_DIR/node-secret` (mode 0600), generated on first use.

pub mod auth;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use auth::{bearer_matches, load_or_create_secret, SECRET_FILE};

/// The protocol version this build speaks.
pub const VERSION: u32 = 1;
/// Where the controller serves the node protocol.
pub const CONTROLLER_PREFIX: &str = "/compute/kiln/v1/nodes";
/// Where a node agent serves its API (the node id follows).
pub const NODE_PREFIX: &str = "/kiln-node/v1";
/// Headers of the node image download: the image's disk format, Glance's
/// `os_hash_algo`/`os_hash_value` and its md5 `checksum`.
pub const IMAGE_HEADER_DISK_FORMAT: &str = "x-kiln-disk-format";
pub const IMAGE_HEADER_HASH_ALGO: &str = "x-kiln-os-hash-algo";
pub const IMAGE_HEADER_HASH_VALUE: &str = "x-kiln-os-hash-value";
pub const IMAGE_HEADER_CHECKSUM: &str = "x-kiln-checksum";

/// A node introduces itself (also after a controller restart or a 404 heartbeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Register {
    pub node_id: String,
    pub host: String,
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub az: String,
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// `sim` or `kvm`.
    pub driver: String,
    pub protocol: u32,
    /// The node's API base, e.g. `http://10.0.0.5:7000/kiln-node/v1/sim-0`.
    pub url: String,
    /// Where other nodes reach this node's VXLAN endpoint (default: the host
    /// of `url`).
    #[serde(default)]
    pub tunnel_ip: Option<String>,
}

/// The controller's answer to a registration or a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registered {
    /// Changes whenever the controller restarts: a node that sees a new value
    /// resyncs.
    pub controller_boot: String,
    pub heartbeat_secs: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// How many servers the node runs (informational).
    pub servers: u64,
}

/// Nova's power states (the numbers its API shows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    NoState,
    Running,
    Paused,
    Shutdown,
    Crashed,
    Suspended,
}

impl PowerState {
    pub fn code(self) -> u8 {
        match self {
            PowerState::NoState => 0,
            PowerState::Running => 1,
            PowerState::Paused => 3,
            PowerState::Shutdown => 4,
            PowerState::Crashed => 6,
            PowerState::Suspended => 7,
        }
    }
}

/// Nova's vm_state values, spelled as Nova spells them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VmState {
    #[serde(rename = "building")]
    Building,
    #[serde(rename = "active")]
    Active,
    #[serde(rename = "stopped")]
    Stopped,
    #[serde(rename = "paused")]
    Paused,
    #[serde(rename = "suspended")]
    Suspended,
    #[serde(rename = "rescued")]
    Rescued,
    #[serde(rename = "resized")]
    Resized,
    #[serde(rename = "shelved")]
    Shelved,
    #[serde(rename = "shelved_offloaded")]
    ShelvedOffloaded,
    #[serde(rename = "soft-delete")]
    SoftDeleted,
    #[serde(rename = "deleted")]
    Deleted,
    #[serde(rename = "error")]
    Error,
}

impl VmState {
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Building => "building",
            VmState::Active => "active",
            VmState::Stopped => "stopped",
            VmState::Paused => "paused",
            VmState::Suspended => "suspended",
            VmState::Rescued => "rescued",
            VmState::Resized => "resized",
            VmState::Shelved => "shelved",
            VmState::ShelvedOffloaded => "shelved_offloaded",
            VmState::SoftDeleted => "soft-delete",
            VmState::Deleted => "deleted",
            VmState::Error => "error",
        }
    }
}

/// A server's state as the node sees it, sent at once after every change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateReport {
    pub server_id: String,
    pub vm_state: VmState,
    pub power_state: PowerState,
    /// The task still running on the node, if any (normally none: reports
    /// conclude a task).
    #[serde(default)]
    pub task_state: Option<String>,
    /// Why the last operation failed (the controller records a fault).
    #[serde(default)]
    pub fault: Option<String>,
    /// The operation this report concludes (`spawn`, `stop`, `delete`, ...).
    #[serde(default)]
    pub concludes: Option<String>,
    #[serde(default)]
    pub console_available: bool,
    /// Microseconds since the epoch.
    pub at: i64,
    /// What the concluded operation was about, for those that name one
    /// ([`Action::subject`]): the volume, port or image id.
    #[serde(default)]
    pub subject: Option<String>,
}

/// After (re)registering: everything the node runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resync {
    pub servers: Vec<StateReport>,
}

/// What the node must change to match the controller.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResyncReply {
    /// Servers the controller placed on the node that it does not report: run
    /// them again in the state given.
    pub adopt: Vec<Adopt>,
    /// Servers the node runs that the controller does not know: remove them.
    pub forget: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Adopt {
    pub spawn: Spawn,
    pub vm_state: VmState,
    pub power_state: PowerState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlavorSpec {
    pub id: String,
    pub vcpus: u64,
    pub ram_mb: u64,
    pub disk_gb: u64,
    pub ephemeral_gb: u64,
    pub swap_mb: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageSpec {
    pub id: String,
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PortSpec {
    pub port_id: String,
    pub network_id: String,
    pub mac: String,
    pub ips: Vec<String>,
    /// virtio-net queue pairs (more than one: a multi-queue TAP and NIC);
    /// 1 when an older peer leaves it out.
    #[serde(default = "one_queue")]
    pub queues: u16,
}

/// The queue count of a NIC nothing asked more of.
pub fn one_queue() -> u16 {
    1
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VolumeSpec {
    pub volume_id: String,
    pub device: String,
    pub size_gb: u64,
    /// A backing file the node should use (or create sparse, if absent).
    #[serde(default)]
    pub path: Option<String>,
}

/// Build a server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spawn {
    pub server_id: String,
    pub name: String,
    pub flavor: FlavorSpec,
    /// None when booting from a volume.
    pub image: Option<ImageSpec>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub volumes: Vec<VolumeSpec>,
    /// Base64 as the user gave it.
    #[serde(default)]
    pub user_data: Option<String>,
    /// The public key of `key_name`.
    #[serde(default)]
    pub key: Option<String>,
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// What the metadata service tells the guest about itself.
    #[serde(default)]
    pub instance: InstanceMeta,
}

/// A server's identity as the metadata service serves it (Nova's
/// `meta_data.json` fields that are not elsewhere in [`Spawn`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InstanceMeta {
    #[serde(default)]
    pub project_id: String,
    #[serde(default)]
    pub availability_zone: String,
    /// The guest's host name (Nova's sanitised display name).
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub launch_index: u32,
    /// The key pair's name, when one was given.
    #[serde(default)]
    pub key_name: Option<String>,
    /// Microseconds since the epoch.
    #[serde(default)]
    pub created: i64,
}

/// A lifecycle action on an existing server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Action {
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
        image: ImageSpec,
    },
    Resize {
        flavor: FlavorSpec,
    },
    ConfirmResize,
    RevertResize {
        flavor: FlavorSpec,
    },
    ShelveOffload,
    AttachVolume {
        volume: VolumeSpec,
    },
    DetachVolume {
        volume_id: String,
    },
    AttachPort {
        port: PortSpec,
    },
    DetachPort {
        port_id: String,
    },
    /// Upload a copy of the root disk as image `image_id` (`PUT` to the
    /// controller's node image endpoint), the guest paused only while the
    /// copy is made.
    Snapshot {
        image_id: String,
    },
    /// Copy volume `old_volume_id`'s bytes into `volume` and give the guest
    /// the new backing in the old one's place.
    SwapVolume {
        old_volume_id: String,
        /// The old volume's backing file, when the controller knows it.
        #[serde(default)]
        old_path: Option<String>,
        volume: VolumeSpec,
    },
}

impl Action {
    /// The name used in `concludes` and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Stop => "stop",
            Action::Start => "start",
            Action::Reboot { .. } => "reboot",
            Action::Pause => "pause",
            Action::Unpause => "unpause",
            Action::Suspend => "suspend",
            Action::Resume => "resume",
            Action::Rebuild { .. } => "rebuild",
            Action::Resize { .. } => "resize",
            Action::ConfirmResize => "confirm_resize",
            Action::RevertResize { .. } => "revert_resize",
            Action::ShelveOffload => "shelve_offload",
            Action::AttachVolume { .. } => "attach_volume",
            Action::DetachVolume { .. } => "detach_volume",
            Action::AttachPort { .. } => "attach_port",
            Action::DetachPort { .. } => "detach_port",
            Action::Snapshot { .. } => "snapshot",
            Action::SwapVolume { .. } => "swap_volume",
        }
    }

    /// The volume, port or image the action is about (reports echo it in
    /// [`StateReport::subject`]).
    pub fn subject(&self) -> Option<&str> {
        match self {
            Action::AttachVolume { volume } => Some(&volume.volume_id),
            Action::DetachVolume { volume_id } => Some(volume_id),
            Action::AttachPort { port } => Some(&port.port_id),
            Action::DetachPort { port_id } => Some(port_id),
            Action::Snapshot { image_id } => Some(image_id),
            Action::SwapVolume { old_volume_id, .. } => Some(old_volume_id),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsoleOutput {
    pub output: String,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spawn() -> Spawn {
        Spawn {
            server_id: "s1".into(),
            name: "vm".into(),
            flavor: FlavorSpec {
                id: "1".into(),
                vcpus: 1,
                ram_mb: 512,
                disk_gb: 1,
                ephemeral_gb: 0,
                swap_mb: 0,
            },
            image: Some(ImageSpec {
                id: "img".into(),
                properties: [("os_distro".to_string(), "cirros".to_string())].into(),
            }),
            ports: vec![PortSpec {
                port_id: "p".into(),
                network_id: "n".into(),
                mac: "fa:16:3e:00:00:01".into(),
                ips: vec!["10.0.0.3".into()],
                queues: 2,
            }],
            volumes: vec![],
            user_data: Some("aGk=".into()),
            key: None,
            metadata: BTreeMap::new(),
            instance: InstanceMeta::default(),
        }
    }

    #[test]
    fn types_round_trip() {
        let s = spawn();
        let back: Spawn = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
        for a in [
            Action::Stop,
            Action::Reboot { hard: true },
            Action::Resize {
                flavor: s.flavor.clone(),
            },
            Action::DetachVolume {
                volume_id: "v".into(),
            },
            Action::Snapshot {
                image_id: "i".into(),
            },
        ] {
            let text = serde_json::to_string(&a).unwrap();
            assert!(
                text.contains(&format!("\"action\":\"{}\"", a.name())),
                "{text}"
            );
            assert_eq!(serde_json::from_str::<Action>(&text).unwrap(), a);
        }
        // An older controller's port (no queues) is single-queue.
        let old_port = r#"{"port_id":"p","network_id":"n","mac":"m","ips":[]}"#;
        assert_eq!(
            serde_json::from_str::<PortSpec>(old_port).unwrap().queues,
            1
        );
        // An older peer's report (no subject) still reads.
        let old = r#"{"server_id":"s","vm_state":"active","power_state":"running","at":1}"#;
        assert_eq!(
            serde_json::from_str::<StateReport>(old).unwrap().subject,
            None
        );
        let r = StateReport {
            server_id: "s1".into(),
            vm_state: VmState::SoftDeleted,
            power_state: PowerState::Shutdown,
            task_state: None,
            fault: Some("boom".into()),
            concludes: Some("stop".into()),
            console_available: true,
            at: 5,
            subject: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.contains("\"soft-delete\""), "{text}");
        assert_eq!(serde_json::from_str::<StateReport>(&text).unwrap(), r);
        let reply = ResyncReply {
            adopt: vec![Adopt {
                spawn: s,
                vm_state: VmState::Stopped,
                power_state: PowerState::Shutdown,
            }],
            forget: vec!["x".into()],
        };
        let text = serde_json::to_string(&reply).unwrap();
        assert_eq!(serde_json::from_str::<ResyncReply>(&text).unwrap(), reply);
        assert_eq!(PowerState::Suspended.code(), 7);
        assert_eq!(VmState::ShelvedOffloaded.as_str(), "shelved_offloaded");
    }
}
