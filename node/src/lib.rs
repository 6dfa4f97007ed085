//! kiln-node: the host agent and the all-in-one entry point.
