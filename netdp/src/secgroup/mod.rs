//! Security groups: the Neutron model compiled to nf_tables rules.
