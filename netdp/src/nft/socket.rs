//! The NETLINK_NETFILTER socket: sending batches and reading one ACK per
//! message, dump requests, and single (non-batched) requests such as ctnetlink's.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::batch::{put_msg, Batch};
use super::sys::*;

/// Errors talking to nf_tables or ctnetlink.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("kernel rejected \"{what}\": {source}")]
    Rejected { what: String, source: io::Error },
    #[error("kernel rejected the batch framing (seq {seq}): {source}")]
    Batch { seq: u32, source: io::Error },
    #[error("malformed netlink reply")]
    Malformed,
    #[error("no acknowledgement for {0} message(s) of the batch")]
    MissingAck(usize),
}

/// One message of a dump reply: its nfgenmsg family and its attribute bytes.
#[derive(Debug, Clone)]
pub struct DumpMsg {
    pub family: u8,
    pub attrs: Vec<u8>,
}

/// A NETLINK_NETFILTER socket in the network namespace it was opened in.
#[derive(Debug)]
pub struct Socket {
    fd: OwnedFd,
    seq: u32,
    rcvbuf: usize,
    sndbuf: usize,
    buf: Vec<u8>,
}

const SOL_NETLINK: i32 = 270;
const NETLINK_CAP_ACK: i32 = 10;
const RECV_BUF: usize = 1 << 20;

fn setsockopt_int(fd: &OwnedFd, level: i32, opt: i32, val: i32) -> io::Result<()> {
    // SAFETY: passes a pointer to a live i32 and its exact size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl Socket {
    /// Open and bind a socket in the calling thread's network namespace.
    pub fn open() -> Result<Socket, NftError> {
        // SAFETY: plain socket(2) call; the result is checked before use.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_NETFILTER,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: `raw` is a fresh descriptor we own exclusively.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: sockaddr_nl is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: binds with a correctly sized sockaddr_nl.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        setsockopt_int(&fd, SOL_NETLINK, NETLINK_CAP_ACK, 1)?;
        let tv = libc::timeval {
            tv_sec: 10,
            tv_usec: 0,
        };
        // SAFETY: passes a live timeval with its exact size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        let seq = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as u32)
            .unwrap_or(1);
        Ok(Socket {
            fd,
            seq,
            rcvbuf: 0,
            sndbuf: 0,
            buf: vec![0; RECV_BUF],
        })
    }

    fn next_seq(&mut self, n: usize) -> u32 {
        let s = self.seq;
        self.seq = self.seq.wrapping_add(n as u32 + 2);
        s
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), NftError> {
        if bytes.len() + 4096 > self.sndbuf {
            let want = (bytes.len() + 65536).max(1 << 20);
            setsockopt_int(
                &self.fd,
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                want as i32,
            )?;
            self.sndbuf = want;
        }
        // SAFETY: sockaddr_nl is plain old data; all-zero addresses the kernel.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: the buffer and address are live for the call with their exact sizes.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                0,
                (&addr as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Receive one datagram; returns its length in `self.buf`.
    fn recv(&mut self) -> Result<usize, NftError> {
        // SAFETY: receives into our own buffer of the given length.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr().cast(),
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(n as usize)
    }

    fn ensure_rcvbuf(&mut self, replies: usize) -> Result<(), NftError> {
        // Every ACK is queued before we read (the kernel runs the whole batch in
        // sendmsg), and each costs about one small skb of receive buffer.
        let want = (replies * 1024 + (1 << 20)).min(i32::MAX as usize);
        if want > self.rcvbuf {
            setsockopt_int(
                &self.fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                want as i32,
            )?;
            self.rcvbuf = want;
        }
        Ok(())
    }

    /// Apply a batch as one transaction and wait for every message's ACK.
    /// An empty batch sends nothing.
    pub fn send_batch(&mut self, batch: &Batch) -> Result<(), NftError> {
        if batch.is_empty() {
            return Ok(());
        }
        let seq = self.next_seq(batch.len());
        let enc = batch.encode(seq);
        self.ensure_rcvbuf(enc.acks.len())?;
        self.send(&enc.bytes)?;
        let first = seq.wrapping_add(1);
        let mut seen = vec![false; enc.acks.len()];
        let mut missing = enc.acks.len();
        let mut first_err: Option<(usize, i32)> = None;
        while missing > 0 {
            let n = self.recv()?;
            for (hdr, payload) in Messages::new(&self.buf[..n]) {
                if hdr.ty != NLMSG_ERROR {
                    continue;
                }
                let errno = errno_of(payload)?;
                let idx = hdr.seq.wrapping_sub(first) as usize;
                if idx >= seen.len() {
                    if errno != 0 {
                        return Err(NftError::Batch {
                            seq: hdr.seq,
                            source: io::Error::from_raw_os_error(-errno),
                        });
                    }
                    continue;
                }
                if !seen[idx] {
                    seen[idx] = true;
                    missing -= 1;
                }
                if errno != 0 && first_err.is_none_or(|(i, _)| idx < i) {
                    first_err = Some((idx, errno));
                }
            }
        }
        if let Some((idx, errno)) = first_err {
            return Err(NftError::Rejected {
                what: enc.acks[idx].1.clone(),
                source: io::Error::from_raw_os_error(-errno),
            });
        }
        Ok(())
    }

    /// Dump request (`NLM_F_DUMP`) of subsystem `subsys`, message `msg`.
    pub fn dump(
        &mut self,
        subsys: u16,
        msg: u16,
        family: u8,
        attrs: &[u8],
    ) -> Result<Vec<DumpMsg>, NftError> {
        let seq = self.next_seq(0);
        let mut req = Vec::new();
        put_msg(
            &mut req,
            (subsys << 8) | msg,
            NLM_F_REQUEST | NLM_F_DUMP,
            seq,
            family,
            0,
            attrs,
        );
        self.send(&req)?;
        let mut out = Vec::new();
        loop {
            let n = self.recv()?;
            for (hdr, payload) in Messages::new(&self.buf[..n]) {
                if hdr.seq != seq {
                    continue;
                }
                match hdr.ty {
                    NLMSG_DONE => return Ok(out),
                    NLMSG_ERROR => {
                        let errno = errno_of(payload)?;
                        if errno == 0 {
                            return Ok(out);
                        }
                        let e = io::Error::from_raw_os_error(-errno);
                        // A dump of a table or set that does not exist is empty.
                        if e.kind() == io::ErrorKind::NotFound {
                            return Ok(out);
                        }
                        return Err(NftError::Rejected {
                            what: format!("dump {subsys}/{msg}"),
                            source: e,
                        });
                    }
                    _ => {
                        let family = *payload.first().ok_or(NftError::Malformed)?;
                        let attrs = payload.get(4..).ok_or(NftError::Malformed)?.to_vec();
                        out.push(DumpMsg { family, attrs });
                    }
                }
            }
        }
    }

    /// One request outside a batch (e.g. ctnetlink delete), waiting for its ACK.
    pub fn request(
        &mut self,
        subsys: u16,
        msg: u16,
        family: u8,
        attrs: &[u8],
        what: &str,
    ) -> Result<(), NftError> {
        let seq = self.next_seq(0);
        let mut req = Vec::new();
        put_msg(
            &mut req,
            (subsys << 8) | msg,
            NLM_F_REQUEST | NLM_F_ACK,
            seq,
            family,
            0,
            attrs,
        );
        self.send(&req)?;
        loop {
            let n = self.recv()?;
            for (hdr, payload) in Messages::new(&self.buf[..n]) {
                if hdr.seq != seq || hdr.ty != NLMSG_ERROR {
                    continue;
                }
                let errno = errno_of(payload)?;
                if errno == 0 {
                    return Ok(());
                }
                return Err(NftError::Rejected {
                    what: what.to_string(),
                    source: io::Error::from_raw_os_error(-errno),
                });
            }
        }
    }
}

/// The (negative) errno of an NLMSG_ERROR payload; 0 is an ACK.
fn errno_of(payload: &[u8]) -> Result<i32, NftError> {
    payload
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(i32::from_ne_bytes)
        .ok_or(NftError::Malformed)
}

/// The fixed part of a netlink message header that replies are matched on.
#[derive(Debug, Clone, Copy)]
struct Header {
    ty: u16,
    seq: u32,
}

/// Iterator over the netlink messages of one datagram.
struct Messages<'a> {
    rest: &'a [u8],
}

impl<'a> Messages<'a> {
    fn new(b: &'a [u8]) -> Self {
        Messages { rest: b }
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = (Header, &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let h = self.rest.get(..16)?;
        let len = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
        let ty = u16::from_ne_bytes([h[4], h[5]]);
        let seq = u32::from_ne_bytes([h[8], h[9], h[10], h[11]]);
        if len < 16 || len > self.rest.len() {
            self.rest = &[];
            return None;
        }
        let payload = &self.rest[16..len];
        self.rest = self.rest.get(super::attr::align4(len)..).unwrap_or(&[]);
        Some((Header { ty, seq }, payload))
    }
}
