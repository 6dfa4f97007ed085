//! nf_tables written as raw netlink messages in atomic batches.
