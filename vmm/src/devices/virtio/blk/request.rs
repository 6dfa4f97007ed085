//! Turning a descriptor chain into a virtio-blk request: the 16-byte header
//! (type, sector), the data segments, and where the status byte goes.
//! Everything here is guest-controlled; nothing panics and nothing is read
//! outside guest memory (vm-memory checks every access).

use std::ops::Deref;

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Bytes of the request header.
pub const HEADER_LEN: u32 = 16;

/// One data segment of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: u32,
    /// The device writes it (IN data, GET_ID), else it reads it.
    pub device_writes: bool,
}

/// A parsed chain. `segments` holds the data segments (reused between
/// requests, never more than the limit given to `parse`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parsed {
    pub head: u16,
    /// Where the status byte goes; None when the chain has no writable last
    /// byte (the request can only be returned unanswered).
    pub status: Option<GuestAddress>,
    /// (type, sector) from the header, or None for a malformed chain.
    pub header: Option<(u32, u64)>,
}

/// Parse `chain` into `segments` (cleared first). A chain with more than
/// `max_segments` data segments or an unreadable header parses with
/// `header: None`.
pub fn parse<M, T>(
    chain: DescriptorChain<M>,
    mem: &T,
    segments: &mut Vec<Segment>,
    max_segments: usize,
) -> Parsed
where
    M: Deref<Target = T>,
    T: GuestMemoryBackend,
{
    segments.clear();
    let head = chain.head_index();
    let mut too_many = false;
    // The chain iterator ends by itself (virtio-queue bounds it by the table
    // size); past the limit only the last descriptor is remembered.
    let mut last = None;
    for d in chain {
        let seg = Segment {
            addr: d.addr(),
            len: d.len(),
            device_writes: d.is_write_only(),
        };
        if segments.len() < max_segments + 2 {
            segments.push(seg);
        } else {
            too_many = true;
        }
        last = Some(seg);
    }
    let mut parsed = Parsed {
        head,
        status: None,
        header: None,
    };
    // The status byte is the last byte of the last descriptor, which must be
    // device-writable.
    match last {
        Some(l) if l.device_writes && l.len >= 1 => {
            parsed.status = l.addr.0.checked_add(u64::from(l.len) - 1).map(GuestAddress);
        }
        _ => return parsed,
    }
    if too_many {
        return parsed;
    }
    if let Some(l) = segments.last_mut() {
        l.len -= 1;
        if l.len == 0 {
            segments.pop();
        }
    }
    // The header is the first 16 bytes of the first descriptor, device-readable.
    let Some(first) = segments.first_mut() else {
        return parsed;
    };
    if first.device_writes || first.len < HEADER_LEN {
        return parsed;
    }
    let (Ok(kind), Ok(sector)) = (
        mem.read_obj::<u32>(first.addr),
        first.addr.0.checked_add(8).map_or(Err(()), |a| {
            mem.read_obj::<u64>(GuestAddress(a)).map_err(|_| ())
        }),
    ) else {
        return parsed;
    };
    first.len -= HEADER_LEN;
    first.addr = GuestAddress(first.addr.0.wrapping_add(u64::from(HEADER_LEN)));
    if first.len == 0 {
        segments.remove(0);
    }
    parsed.header = Some((u32::from_le(kind), u64::from_le(sector)));
    parsed
}
