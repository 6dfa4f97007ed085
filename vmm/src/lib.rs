//! kiln-vmm: a KVM virtual machine monitor.
