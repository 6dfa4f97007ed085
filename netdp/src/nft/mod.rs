//! nf_tables written as raw netlink messages in atomic batches.
//!
//! [`Batch`] collects table/chain/rule/set/element changes built from
//! [`Expr`]essions; [`Socket::send_batch`] sends them wrapped in
//! `NFNL_MSG_BATCH_BEGIN .. END` (one kernel transaction: all or nothing) and
//! reads one ACK per message, so a failure names the message that failed.
//! [`Socket`]'s `list_*` methods read a table back for reconciliation.

pub mod attr;
pub mod batch;
pub mod dump;
pub mod expr;
pub mod socket;
pub mod sys;

pub use batch::{Batch, ChainDef, Elem, Hook, SetDef};
pub use dump::{ChainInfo, SetInfo, TableInfo};
pub use expr::{reg32, CmpOp, Data, Expr, NatKind, PayloadBase, Verdict};
pub use socket::{NftError, Socket};
