//! kiln-controller: the OpenStack APIs over kiln's state.
//!
//! - [`config`]: what the controller runs with (TOML, validated).
//! - [`store`]: redb behind a small trait; services declare their own typed tables.
//! - [`identity`]: Keystone v3's records, rules (policy, security compliance) and
//!   operations; tokens validated from memory.
//! - [`api`]: the HTTP layer (axum): version documents, Keystone routes, 501 for
//!   services not built yet, OpenStack-shaped errors ([`error`]).
//! - [`image`], [`compute`], [`services`]: Glance's images and their data files,
//!   Nova's flavors, keypairs and quotas; the services beside identity, opened
//!   over the same store. [`microversion`]: compute version negotiation.
//!   [`scheduler`]: filters and weighers as pure functions.
//! - [`network`]: Neutron v2.0's records, IPAM, security groups, routers, floating
//!   IPs and the desired state nodes fetch.
//! - [`volume`]: Cinder v3's volumes, snapshots, types and quotas over a
//!   [`volume::VolumeBackend`]; attach/detach for compute.
//! - [`protocol`]: the node protocol (v1 wire types, paths, shared-secret auth).
//! - [`app`]: `app(state) -> Router`, the whole HTTP surface for tests and servers.
//! - [`server`]: binding, bootstrap, client files and graceful shutdown, shared by
//!   `kiln-controller serve` and `kiln-node up`.

pub mod api;
pub mod app;
pub mod client_files;
pub mod clock;
pub mod compute;
pub mod config;
pub mod error;
pub mod identity;
pub mod image;
pub mod microversion;
pub mod network;
pub mod process;
pub mod protocol;
pub mod scheduler;
pub mod server;
pub mod services;
pub mod store;
pub mod volume;

pub use app::{app, AppState};
pub use config::Config;
pub use server::{serve, Server};
