//! The VM configuration: plain serde structs with named defaults (what
//! `kiln-vmm --config FILE` reads) and a separate `validate` step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Smallest guest the VMM agrees to build.
pub const MIN_MEMORY_MIB: u64 = 8;
/// Largest guest (bounded by the 4-level identity map the boot code builds).
pub const MAX_MEMORY_MIB: u64 = 512 * 1024;
/// vCPUs are numbered by 8-bit APIC ids; 255 is the broadcast id.
pub const MAX_VCPUS: u8 = 254;

/// Errors found while reading or checking a configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad config JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("vcpus must be between 1 and {MAX_VCPUS}, got {0}")]
    Vcpus(u32),
    #[error("memory_mib must be between {MIN_MEMORY_MIB} and {MAX_MEMORY_MIB}, got {0}")]
    Memory(u64),
    #[error("exactly one of \"kernel\" and \"firmware\" must be given")]
    BootSource,
    #[error("{what} {path} does not exist or is not a file")]
    MissingFile { what: &'static str, path: PathBuf },
    #[error("at most {max} disks are supported, got {0}", max = crate::devices::virtio::MAX_SLOTS)]
    TooManyDisks(usize),
    #[error("at most {max} disks and NICs together are supported, got {0}", max = crate::devices::virtio::MAX_SLOTS)]
    TooManySlots(usize),
    #[error("NIC tap name {0:?} must be 1 to 15 bytes without '/', ' ' or NUL")]
    NicTap(String),
    #[error("NIC mac {0:?} must be a unicast aa:bb:cc:dd:ee:ff")]
    NicMac(String),
    #[error("NIC id {0:?} must be 1 to 20 bytes and unique")]
    NicId(String),
    #[error("NIC queue_pairs must be between 1 and {max}, got {0}", max = crate::devices::virtio::net::MAX_PAIRS)]
    NicQueuePairs(u16),
    #[error("disk id {0:?} must be 1 to 20 bytes and unique")]
    DiskId(String),
    #[error("disk num_queues must be between 1 and {max}, got {0}", max = crate::devices::virtio::blk::MAX_QUEUES)]
    DiskQueues(u32),
    #[error("disk poll_us must be at most 1000, got {0}")]
    DiskPoll(u32),
    #[error("hugepages and transparent_hugepages exclude each other")]
    HugePageKinds,
    #[error("vcpu_affinity has {0} entries for {1} vCPUs")]
    AffinityLength(usize, u32),
    #[error("{what}: a CPU set must not be empty")]
    AffinityEmpty { what: String },
    #[error("{what}: host CPU {cpu} is not one this process may run on (allowed: {allowed:?})")]
    AffinityCpu {
        what: String,
        cpu: usize,
        allowed: Vec<usize>,
    },
    #[error("unknown CPUID feature {0:?} in cpuid_mask")]
    CpuidFeature(String),
    #[error("the control socket path {0} is too long for a Unix socket")]
    SocketPath(PathBuf),
}

/// Which entry point the guest is started at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Entry {
    /// The Linux 64-bit boot protocol: long mode, rsi = boot params.
    #[default]
    Linux64,
    /// The PVH entry from the ELF note: 32-bit protected mode, ebx = start_info.
    Pvh,
}

/// A Linux kernel (bzImage or ELF vmlinux) with optional initrd.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub entry: Entry,
}

/// A firmware ELF (kiln-firmware).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirmwareConfig {
    pub path: PathBuf,
    #[serde(default)]
    pub cmdline: Option<String>,
    #[serde(default)]
    pub entry: Entry,
}

/// Whether a disk's aligned I/O bypasses the page cache (O_DIRECT).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DirectMode {
    /// Use O_DIRECT when the file system allows it, else buffered (logged).
    #[default]
    Auto,
    /// O_DIRECT or refuse to start.
    On,
    /// Always buffered.
    Off,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DirectRepr {
    Bool(bool),
    Word(String),
}

impl Serialize for DirectMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            DirectMode::Auto => s.serialize_str("auto"),
            DirectMode::On => s.serialize_bool(true),
            DirectMode::Off => s.serialize_bool(false),
        }
    }
}

impl<'de> Deserialize<'de> for DirectMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match DirectRepr::deserialize(d)? {
            DirectRepr::Bool(true) => Ok(DirectMode::On),
            DirectRepr::Bool(false) => Ok(DirectMode::Off),
            DirectRepr::Word(w) if w == "auto" => Ok(DirectMode::Auto),
            DirectRepr::Word(w) => Err(serde::de::Error::custom(format!(
                "\"direct\" must be true, false or \"auto\", got {w:?}"
            ))),
        }
    }
}

/// A disk: a raw file (or block device) served as virtio-blk, or an empty
/// slot (`path` null or absent: capacity 0 until `swap-disk` fills it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskConfig {
    #[serde(default)]
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub read_only: bool,
    /// O_DIRECT policy: true, false or "auto" (the default).
    #[serde(default)]
    pub direct: DirectMode,
    /// virtio-blk request queues offered (1 to 16, default 1); with more
    /// than one the device offers VIRTIO_BLK_F_MQ and serves each queue the
    /// driver makes ready on its own thread and io_uring.
    #[serde(default = "one_queue")]
    pub num_queues: u32,
    /// Name for GET_ID and the control socket's `swap-disk` (default `disk<N>`);
    /// at most 20 bytes.
    #[serde(default)]
    pub id: Option<String>,
    /// After activity (a request taken or an I/O completed) the queue
    /// thread polls the ring and its completions this long (µs, at most
    /// 1000) before sleeping, so a guest that keeps I/O coming costs one
    /// busy host CPU per queue instead of a notification exit and a thread
    /// wake-up per batch. 0 (the default) never polls.
    #[serde(default)]
    pub poll_us: u32,
    /// Host CPUs the disk's queue threads run on (default: any).
    #[serde(default)]
    pub queue_affinity: Vec<usize>,
}

/// A network interface: virtio-net on a TAP. kiln-vmm opens the TAP with
/// IFF_VNET_HDR (creating it when it does not exist), in its own network
/// namespace.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NicConfig {
    pub tap: String,
    /// `aa:bb:cc:dd:ee:ff` (unicast); default a locally administered one.
    #[serde(default)]
    pub mac: Option<String>,
    /// Name of the NIC (default `nic<N>`); at most 20 bytes.
    #[serde(default)]
    pub id: Option<String>,
    /// Queue pairs offered (virtio-net multi-queue, default 1). With more
    /// than one the TAP is opened once per pair with IFF_MULTI_QUEUE (a TAP
    /// created single-queue cannot be), and the guest enables pairs through
    /// the control queue.
    #[serde(default = "default_queue_pairs")]
    pub queue_pairs: u16,
}

fn default_queue_pairs() -> u16 {
    1
}

/// Where the serial console goes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Append console output to this file.
    #[serde(default)]
    pub log: Option<PathBuf>,
    /// Also copy console output to the VMM's stdout.
    #[serde(default)]
    pub stdout: bool,
}

/// The whole VM.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VmConfig {
    #[serde(default = "default_vcpus")]
    pub vcpus: u32,
    /// Host CPUs per vCPU: entry i is the set vCPU i runs on; vCPUs past
    /// the list (or all, when empty) run anywhere.
    #[serde(default)]
    pub vcpu_affinity: Vec<Vec<usize>>,
    #[serde(default = "default_memory_mib")]
    pub memory_mib: u64,
    #[serde(default)]
    pub hugepages: bool,
    /// Ask for transparent huge pages for guest RAM (see
    /// `memory::create` for what they cost and buy).
    #[serde(default)]
    pub transparent_hugepages: bool,
    #[serde(default)]
    pub kernel: Option<KernelConfig>,
    #[serde(default)]
    pub firmware: Option<FirmwareConfig>,
    #[serde(default)]
    pub disks: Vec<DiskConfig>,
    #[serde(default)]
    pub nics: Vec<NicConfig>,
    #[serde(default)]
    pub console: ConsoleConfig,
    #[serde(default)]
    pub control_socket: Option<PathBuf>,
    /// CPUID feature names to hide from the guest (see `kvm::cpuid::FEATURES`).
    #[serde(default)]
    pub cpuid_mask: Vec<String>,
    /// How long a graceful shutdown waits for the guest before a hard stop.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Where KVM's supported CPUID is cached between VMMs (see
    /// `kvm::cpuid_cache`); `null` asks KVM every time.
    #[serde(default = "default_cpuid_cache")]
    pub cpuid_cache: Option<PathBuf>,
}

/// A CPU set must name only CPUs this process may use (an empty one is
/// allowed where it means "any").
fn check_cpu_set(what: &str, set: &[usize], empty_ok: bool) -> Result<(), ConfigError> {
    if set.is_empty() {
        return match empty_ok {
            true => Ok(()),
            false => Err(ConfigError::AffinityEmpty { what: what.into() }),
        };
    }
    let allowed = crate::affinity::allowed_cpus().unwrap_or_default();
    match set.iter().find(|c| !allowed.contains(c)) {
        Some(&cpu) => Err(ConfigError::AffinityCpu {
            what: what.into(),
            cpu,
            allowed,
        }),
        None => Ok(()),
    }
}

fn default_vcpus() -> u32 {
    1
}
fn one_queue() -> u32 {
    1
}

fn default_memory_mib() -> u64 {
    128
}
fn default_shutdown_timeout_ms() -> u64 {
    3000
}
fn default_cpuid_cache() -> Option<PathBuf> {
    Some(PathBuf::from(crate::kvm::cpuid_cache::DEFAULT_PATH))
}

/// What to boot, after validation: one image, its command line and entry.
#[derive(Debug, Clone)]
pub struct BootSource {
    pub image: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub entry: Entry,
    /// A firmware ELF (not a Linux kernel).
    pub firmware: bool,
}

impl VmConfig {
    /// How guest RAM is backed.
    pub fn memory_backing(&self) -> crate::memory::Backing {
        match (self.hugepages, self.transparent_hugepages) {
            (true, _) => crate::memory::Backing::HugeTlb,
            (false, true) => crate::memory::Backing::Transparent,
            (false, false) => crate::memory::Backing::Small,
        }
    }

    /// Read and parse a config file (no validation).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(serde_json::from_slice(&text)?)
    }

    /// Check everything that can be checked before touching KVM, and return
    /// the boot source.
    pub fn validate(&self) -> Result<BootSource, ConfigError> {
        if self.vcpus == 0 || self.vcpus > u32::from(MAX_VCPUS) {
            return Err(ConfigError::Vcpus(self.vcpus));
        }
        if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&self.memory_mib) {
            return Err(ConfigError::Memory(self.memory_mib));
        }
        if self.disks.len() > crate::devices::virtio::MAX_SLOTS {
            return Err(ConfigError::TooManyDisks(self.disks.len()));
        }
        if self.hugepages && self.transparent_hugepages {
            return Err(ConfigError::HugePageKinds);
        }
        if self.vcpu_affinity.len() > self.vcpus as usize {
            return Err(ConfigError::AffinityLength(
                self.vcpu_affinity.len(),
                self.vcpus,
            ));
        }
        for (i, set) in self.vcpu_affinity.iter().enumerate() {
            check_cpu_set(&format!("vcpu_affinity[{i}]"), set, false)?;
        }
        for (i, d) in self.disks.iter().enumerate() {
            if !(1..=crate::devices::virtio::blk::MAX_QUEUES).contains(&d.num_queues) {
                return Err(ConfigError::DiskQueues(d.num_queues));
            }
            if d.poll_us > 1000 {
                return Err(ConfigError::DiskPoll(d.poll_us));
            }
            check_cpu_set(
                &format!("disks[{i}].queue_affinity"),
                &d.queue_affinity,
                true,
            )?;
            if let Some(id) = &d.id {
                let dup = self.disks[..i].iter().any(|o| o.id.as_ref() == Some(id));
                if id.is_empty() || id.len() > 20 || dup {
                    return Err(ConfigError::DiskId(id.clone()));
                }
            }
            let Some(path) = &d.path else { continue };
            match std::fs::metadata(path) {
                Ok(m)
                    if m.is_file()
                        || std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()) => {}
                _ => {
                    return Err(ConfigError::MissingFile {
                        what: "disk",
                        path: path.clone(),
                    })
                }
            }
        }
        let slots = self.disks.len() + self.nics.len();
        if slots > crate::devices::virtio::MAX_SLOTS {
            return Err(ConfigError::TooManySlots(slots));
        }
        for (i, n) in self.nics.iter().enumerate() {
            let t = &n.tap;
            if t.is_empty() || t.len() > 15 || t.contains(['/', ' ', '\0']) {
                return Err(ConfigError::NicTap(t.clone()));
            }
            if !(1..=crate::devices::virtio::net::MAX_PAIRS).contains(&n.queue_pairs) {
                return Err(ConfigError::NicQueuePairs(n.queue_pairs));
            }
            if let Some(m) = &n.mac {
                if crate::devices::virtio::net::parse_mac(m).is_none() {
                    return Err(ConfigError::NicMac(m.clone()));
                }
            }
            if let Some(id) = &n.id {
                let dup = self.nics[..i].iter().any(|o| o.id.as_ref() == Some(id));
                if id.is_empty() || id.len() > 20 || dup {
                    return Err(ConfigError::NicId(id.clone()));
                }
            }
        }
        for name in &self.cpuid_mask {
            if crate::kvm::cpuid::feature(name).is_none() {
                return Err(ConfigError::CpuidFeature(name.clone()));
            }
        }
        if let Some(sock) = &self.control_socket {
            // sockaddr_un.sun_path holds 108 bytes including the NUL.
            if sock.as_os_str().len() >= 108 {
                return Err(ConfigError::SocketPath(sock.clone()));
            }
        }
        let source = match (&self.kernel, &self.firmware) {
            (Some(k), None) => BootSource {
                image: k.path.clone(),
                initrd: k.initrd.clone(),
                cmdline: k.cmdline.clone().unwrap_or_default(),
                entry: k.entry,
                firmware: false,
            },
            (None, Some(f)) => BootSource {
                image: f.path.clone(),
                initrd: None,
                cmdline: f.cmdline.clone().unwrap_or_default(),
                entry: f.entry,
                firmware: true,
            },
            _ => return Err(ConfigError::BootSource),
        };
        check_file(
            if source.firmware {
                "firmware"
            } else {
                "kernel"
            },
            &source.image,
        )?;
        if let Some(initrd) = &source.initrd {
            check_file("initrd", initrd)?;
        }
        Ok(source)
    }
}

fn check_file(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(()),
        _ => Err(ConfigError::MissingFile {
            what,
            path: path.to_path_buf(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<VmConfig, ConfigError> {
        Ok(serde_json::from_str(json)?)
    }

    #[test]
    fn defaults_apply() {
        let c = parse(r#"{"firmware": {"path": "/bin/sh"}}"#).unwrap();
        assert_eq!(c.vcpus, 1);
        assert_eq!(c.memory_mib, 128);
        assert!(!c.hugepages);
        let b = c.validate().unwrap();
        assert!(b.firmware);
        assert_eq!(b.entry, Entry::Linux64);
    }

    #[test]
    fn bad_inputs_are_rejected() {
        assert!(matches!(parse("{"), Err(ConfigError::Json(_))));
        assert!(matches!(parse(r#"{"vcpu": 1}"#), Err(ConfigError::Json(_))));
        let v = |j: &str| parse(j).unwrap().validate();
        assert!(matches!(v(r#"{}"#), Err(ConfigError::BootSource)));
        assert!(matches!(
            v(r#"{"memory_mib": 0, "firmware": {"path": "/bin/sh"}}"#),
            Err(ConfigError::Memory(0))
        ));
        assert!(matches!(
            v(r#"{"vcpus": 0, "firmware": {"path": "/bin/sh"}}"#),
            Err(ConfigError::Vcpus(0))
        ));
        assert!(matches!(
            v(r#"{"firmware": {"path": "/nonexistent/fw"}}"#),
            Err(ConfigError::MissingFile { .. })
        ));
        assert!(matches!(
            v(r#"{"firmware": {"path": "/bin/sh"}, "kernel": {"path": "/bin/sh"}}"#),
            Err(ConfigError::BootSource)
        ));
        assert!(matches!(
            v(r#"{"firmware": {"path": "/bin/sh"}, "disks": [{"path": "/nonexistent/x"}]}"#),
            Err(ConfigError::MissingFile { what: "disk", .. })
        ));
        assert!(matches!(
            v(
                r#"{"firmware": {"path": "/bin/sh"}, "disks": [{"path": "/bin/sh", "id": "a"}, {"path": "/bin/sh", "id": "a"}]}"#
            ),
            Err(ConfigError::DiskId(_))
        ));
        for n in [0, 17, 100_000] {
            let text = format!(
                r#"{{"firmware": {{"path": "/bin/sh"}}, "disks": [{{"path": "/bin/sh", "num_queues": {n}}}]}}"#
            );
            assert!(
                matches!(v(&text), Err(ConfigError::DiskQueues(got)) if got == n),
                "num_queues {n}"
            );
        }
        assert!(matches!(
            parse(
                r#"{"firmware": {"path": "/bin/sh"}, "disks": [{"path": "/bin/sh", "num_queues": -1}]}"#
            ),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            v(
                r#"{"firmware": {"path": "/bin/sh"}, "disks": [{"path": "/bin/sh", "poll_us": 5000}]}"#
            ),
            Err(ConfigError::DiskPoll(5000))
        ));
        assert!(matches!(
            v(
                r#"{"firmware": {"path": "/bin/sh"}, "hugepages": true, "transparent_hugepages": true}"#
            ),
            Err(ConfigError::HugePageKinds)
        ));
        assert!(matches!(
            v(r#"{"firmware": {"path": "/bin/sh"}, "vcpu_affinity": [[0], [0]]}"#),
            Err(ConfigError::AffinityLength(2, 1))
        ));
        assert!(matches!(
            v(r#"{"firmware": {"path": "/bin/sh"}, "vcpu_affinity": [[]]}"#),
            Err(ConfigError::AffinityEmpty { .. })
        ));
        assert!(matches!(
            v(
                r#"{"firmware": {"path": "/bin/sh"}, "disks": [{"path": "/bin/sh", "queue_affinity": [1023]}]}"#
            ),
            Err(ConfigError::AffinityCpu { cpu: 1023, .. })
        ));
        let cpu = crate::affinity::allowed_cpus().unwrap()[0];
        let ok = format!(
            r#"{{"firmware": {{"path": "/bin/sh"}}, "vcpu_affinity": [[{cpu}]],
                "disks": [{{"path": "/bin/sh", "queue_affinity": [{cpu}]}}]}}"#
        );
        assert!(v(&ok).is_ok());
        assert!(matches!(
            v(r#"{"firmware": {"path": "/bin/sh"}, "nics": [{"tap": "a/b"}]}"#),
            Err(ConfigError::NicTap(_))
        ));
        assert!(matches!(
            v(
                r#"{"firmware": {"path": "/bin/sh"}, "nics": [{"tap": "t", "mac": "01:02:03:04:05:06"}]}"#
            ),
            Err(ConfigError::NicMac(_))
        ));
        assert!(matches!(
            v(
                r#"{"firmware": {"path": "/bin/sh"}, "nics": [{"tap": "t", "id": "x"}, {"tap": "u", "id": "x"}]}"#
            ),
            Err(ConfigError::NicId(_))
        ));
        for bad in [0, 9] {
            assert!(matches!(
                v(&format!(r#"{{"firmware": {{"path": "/bin/sh"}}, "nics": [{{"tap": "t", "queue_pairs": {bad}}}]}}"#)),
                Err(ConfigError::NicQueuePairs(b)) if b == bad
            ));
        }
        assert!(v(
            r#"{"firmware": {"path": "/bin/sh"}, "nics": [{"tap": "t", "mac": "52:54:00:12:34:56", "id": "eth0"}]}"#
        )
        .is_ok());
        let nine = format!(
            r#"{{"firmware": {{"path": "/bin/sh"}}, "disks": [{}], "nics": [{{"tap": "t"}}]}}"#,
            [r#"{"path": "/bin/sh"}"#; 8].join(",")
        );
        assert!(matches!(v(&nine), Err(ConfigError::TooManySlots(9))));
        assert!(matches!(
            parse(
                r#"{"firmware": {"path": "/bin/sh"}, "disks": [{"path": "/bin/sh", "direct": "maybe"}]}"#
            ),
            Err(ConfigError::Json(_))
        ));
        assert!(matches!(
            v(r#"{"firmware": {"path": "/bin/sh"}, "cpuid_mask": ["nonsense"]}"#),
            Err(ConfigError::CpuidFeature(_))
        ));
    }

    #[test]
    fn full_config_parses() {
        let c = parse(
            r#"{"vcpus": 2, "memory_mib": 256, "hugepages": true,
                "kernel": {"path": "/bin/sh", "initrd": "/bin/sh", "cmdline": "console=ttyS0", "entry": "pvh"},
                "console": {"log": "/tmp/x.log", "stdout": true},
                "control_socket": "/tmp/x.sock", "cpuid_mask": ["cx16", "xsave"],
                "disks": [{"path": "/bin/sh", "read_only": true, "direct": false, "id": "root", "poll_us": 50},
                          {"path": "/bin/sh", "direct": "auto", "num_queues": 16}, {"path": "/bin/sh", "direct": true},
                          {"path": null, "id": "slot"}, {"id": "slot2"}],
                "shutdown_timeout_ms": 10}"#,
        )
        .unwrap();
        let b = c.validate().unwrap();
        assert!(c.disks[3].path.is_none() && c.disks[4].path.is_none());
        let queues: Vec<u32> = c.disks.iter().map(|d| d.num_queues).collect();
        assert_eq!(queues, [1, 16, 1, 1, 1], "num_queues defaults to 1");
        assert_eq!(b.entry, Entry::Pvh);
        assert_eq!(b.cmdline, "console=ttyS0");
        let modes: Vec<DirectMode> = c.disks.iter().map(|d| d.direct).collect();
        assert_eq!(
            modes[..3],
            [DirectMode::Off, DirectMode::Auto, DirectMode::On]
        );
        assert!(!b.firmware);
    }
}
