//! DHCPv4 server for guests: static leases for a network's ports only.
