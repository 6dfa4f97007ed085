//! Security groups: the Neutron model compiled to nf_tables rules, with
//! anti-spoofing, written per port in atomic batches and reconciled with the kernel.
//!
//! - [`compile`]: pure functions from [`crate::model::Model`] to chains, sets and elements;
//! - [`layout`]: the fixed tables and chains (see its doc for the packet path);
//! - [`state`]: the compiled form and the diff that becomes one batch;
//! - [`apply`]: [`SecurityGroups`], which owns a netfilter socket in one
//!   namespace and keeps it equal to the model;
//! - [`conntrack`]: dropping tracked connections a removal disallowed.

pub mod addr;
pub mod apply;
pub mod compile;
pub mod conntrack;
pub mod exprs;
pub mod layout;
pub mod state;

pub use apply::{Applied, ApplyError, Pending, SecurityGroups};
pub use compile::CompileError;
pub use conntrack::CtFilter;
