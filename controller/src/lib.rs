//! kiln-controller: the OpenStack APIs over kiln's state.
