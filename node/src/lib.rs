//! kiln-node: the host agent and the all-in-one entry point.
//!
//! - [`up`]: `kiln-node up`, the all-in-one cloud in one process (the controller
//!   from `kiln-controller`, and later this host's node agent).

pub mod up;
