//! kiln-node: the host agent and the all-in-one entry point.
//!
//! - [`up`]: `kiln-node up`, the all-in-one cloud in one process (the controller
//!   from `kiln-controller` and one node agent).
//! - [`serve`]: `kiln-node serve`, N node agents against a controller.
//! - [`agent`]: the node agent (registration, heartbeats, the node API, state
//!   reports, resync) over a [`driver::Driver`]; [`sim`] is the simulated driver,
//!   [`kvm`] runs real guests in kiln-vmm processes.
//! - [`plumbing`]: what a driver asks of the host network for a guest's ports.
//! - [`net`]: the host network side ([`net::NodeNet`], a [`plumbing::Plumbing`]).

pub mod agent;
pub mod driver;
pub mod kvm;
pub mod net;
pub mod plumbing;
pub mod serve;
pub mod sim;
pub mod up;
