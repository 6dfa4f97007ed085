//! kiln-netdp: the host network data plane.
