//! Start-up probe of the kernel features the data plane needs.
