//! Links through rtnetlink (bridges, veths, VXLAN, addresses, routes, namespaces) and TAPs.
