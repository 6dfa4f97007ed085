//! KVM's supported CPUID, cached in a file between VMM processes.
//!
//! KVM_GET_SUPPORTED_CPUID costs ~0.7 ms of CPU on this platform (a sixth of
//! a guest's whole start) and gives the same answer for every VM of one
//! loaded KVM module on one host. The first VMM asks KVM and writes the
//! answer; later ones read it back (a few µs). The file carries a key that
//! changes when the answer could: the host kernel (`uname`), the host CPU
//! (vendor, signature, feature leaves), and the `/dev/kvm` node itself
//! (device, inode and change time: devtmpfs makes a new node each time the
//! module is loaded, and on every boot). A file whose key differs, that is
//! malformed, or that someone other than this user could have written is
//! ignored and replaced; any failure to read or write it only costs the
//! ioctl.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

use super::{KvmError, Step};

/// Where the cache lives unless the config says otherwise.
pub const DEFAULT_PATH: &str = "/run/kiln/kvm-cpuid.cache";

const MAGIC: &[u8; 8] = b"KILNCPU1";
/// u32 words per entry: function, index, flags, eax, ebx, ecx, edx.
const WORDS: usize = 7;

/// Whether the answer came from the file or from KVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Kvm,
}

/// KVM's supported CPUID: from the cache at `path` when it is valid for this
/// host, else from KVM (and then written to `path`). `None`: always ask KVM.
pub fn supported(kvm: &Kvm, path: Option<&Path>) -> Result<(CpuId, Source), KvmError> {
    let key = path.and_then(|_| host_key(kvm));
    if let (Some(path), Some(key)) = (path, key.as_deref()) {
        if let Some(cpuid) = read(path, key) {
            return Ok((cpuid, Source::Cache));
        }
    }
    let cpuid = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .step("get_supported_cpuid")?;
    if let (Some(path), Some(key)) = (path, key.as_deref()) {
        // Best effort: a VMM that cannot write the cache still boots.
        let _ = write(path, key, &cpuid);
    }
    Ok((cpuid, Source::Kvm))
}

/// What the cached answer depends on, as bytes.
fn host_key(kvm: &Kvm) -> Option<Vec<u8>> {
    let mut key = Vec::with_capacity(512);
    // SAFETY: `uts` is plain data for uname(2) to fill.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: `uts` is a valid, writable utsname.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return None;
    }
    for field in [&uts.sysname[..], &uts.release, &uts.version, &uts.machine] {
        key.extend(field.iter().take_while(|c| **c != 0).map(|c| *c as u8));
        key.push(0);
    }
    // SAFETY: `st` is plain data for fstat(2) to fill.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is the open /dev/kvm of `kvm`; `st` is writable.
    if unsafe { libc::fstat(kvm.as_raw_fd(), &mut st) } != 0 {
        return None;
    }
    for v in [
        st.st_rdev,
        st.st_ino,
        st.st_ctime as u64,
        st.st_ctime_nsec as u64,
    ] {
        key.extend_from_slice(&v.to_le_bytes());
    }
    for (leaf, sub) in [(0, 0), (1, 0), (7, 0), (0x8000_0001, 0)] {
        // Leaves past the maximum return data the key simply includes.
        let r = std::arch::x86_64::__cpuid_count(leaf, sub);
        // Leaf 1 EBX bits 31..24 are the APIC id of the CPU we happen to run on.
        let ebx = if leaf == 1 {
            r.ebx & 0x00ff_ffff
        } else {
            r.ebx
        };
        for v in [r.eax, ebx, r.ecx, r.edx] {
            key.extend_from_slice(&v.to_le_bytes());
        }
    }
    Some(key)
}

/// The cached CPUID if the file is ours, well-formed and made for `key`.
fn read(path: &Path, key: &[u8]) -> Option<CpuId> {
    let mut file = std::fs::File::open(path).ok()?;
    let meta = file.metadata().ok()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        return None;
    }
    let mut bytes = Vec::with_capacity(meta.len().min(64 * 1024) as usize);
    std::io::Read::read_to_end(&mut file, &mut bytes).ok()?;
    decode(&bytes, key)
}

/// Parse a cache file's bytes; None unless it is complete and for `key`.
fn decode(bytes: &[u8], key: &[u8]) -> Option<CpuId> {
    let rest = bytes.strip_prefix(MAGIC)?;
    let (klen, rest) = take_u32(rest)?;
    let (file_key, rest) = rest.split_at_checked(klen as usize)?;
    if file_key != key {
        return None;
    }
    let (n, rest) = take_u32(rest)?;
    let n = n as usize;
    if n == 0 || n > KVM_MAX_CPUID_ENTRIES || rest.len() != n * WORDS * 4 {
        return None;
    }
    let entries: Vec<kvm_cpuid_entry2> = rest
        .chunks_exact(WORDS * 4)
        .map(|c| {
            let w =
                |i: usize| u32::from_le_bytes([c[i * 4], c[i * 4 + 1], c[i * 4 + 2], c[i * 4 + 3]]);
            kvm_cpuid_entry2 {
                function: w(0),
                index: w(1),
                flags: w(2),
                eax: w(3),
                ebx: w(4),
                ecx: w(5),
                edx: w(6),
                ..Default::default()
            }
        })
        .collect();
    CpuId::from_entries(&entries).ok()
}

fn take_u32(b: &[u8]) -> Option<(u32, &[u8])> {
    let (head, rest) = b.split_at_checked(4)?;
    Some((u32::from_le_bytes(head.try_into().ok()?), rest))
}

/// The file's bytes for `cpuid` under `key`.
fn encode(key: &[u8], cpuid: &CpuId) -> Vec<u8> {
    let entries = cpuid.as_slice();
    let mut out = Vec::with_capacity(16 + key.len() + entries.len() * WORDS * 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        for v in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
    out
}

/// Write the cache atomically (a private temporary file renamed over it).
fn write(path: &Path, key: &[u8], cpuid: &CpuId) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(&encode(key, cpuid))?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> CpuId {
        let e = |function, index, eax| kvm_cpuid_entry2 {
            function,
            index,
            flags: 1,
            eax,
            ebx: 2,
            ecx: 3,
            edx: 4,
            ..Default::default()
        };
        CpuId::from_entries(&[e(0, 0, 0xd), e(1, 0, 0x806f8), e(7, 0, 0)]).unwrap()
    }

    #[test]
    fn round_trip_and_key_mismatch() {
        let bytes = encode(b"host-a", &sample());
        let back = decode(&bytes, b"host-a").unwrap();
        assert_eq!(back.as_slice(), sample().as_slice());
        assert!(decode(&bytes, b"host-b").is_none());
    }

    #[test]
    fn truncated_or_corrupt_files_are_ignored() {
        let bytes = encode(b"k", &sample());
        for cut in [0, 4, 8, 13, bytes.len() - 1] {
            assert!(decode(&bytes[..cut], b"k").is_none(), "cut at {cut}");
        }
        let mut extra = bytes.clone();
        extra.push(0);
        assert!(decode(&extra, b"k").is_none());
        let mut bad = bytes;
        bad[0] ^= 1;
        assert!(decode(&bad, b"k").is_none());
    }

    #[test]
    fn files_others_could_write_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        write(&path, b"k", &sample()).unwrap();
        assert!(read(&path, b"k").is_some());
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .unwrap();
        assert!(read(&path, b"k").is_none());
    }

    #[test]
    fn the_second_ask_comes_from_the_file_and_matches_kvm() {
        let Ok(kvm) = Kvm::new() else {
            eprintln!("skipping: /dev/kvm is not available");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cpuid.cache");
        let (first, s1) = supported(&kvm, Some(&path)).unwrap();
        let (second, s2) = supported(&kvm, Some(&path)).unwrap();
        assert_eq!((s1, s2), (Source::Kvm, Source::Cache));
        assert_eq!(first.as_slice(), second.as_slice());
        let (_, s3) = supported(&kvm, None).unwrap();
        assert_eq!(s3, Source::Kvm);
        // A file for another host is replaced.
        std::fs::write(&path, encode(b"elsewhere", &first)).unwrap();
        assert_eq!(supported(&kvm, Some(&path)).unwrap().1, Source::Kvm);
        assert_eq!(supported(&kvm, Some(&path)).unwrap().1, Source::Cache);
    }
}
