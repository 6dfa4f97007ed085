//! Placeholder: the freestanding firmware ELF arrives with the VMM issue.
