//! virtio-blk on a raw file: the device (features, config space, backing
//! files and their run-time swap, attach to and detach from an empty slot)
//! and, in `worker`, the io_uring queue thread that serves requests;
//! `request` parses descriptor chains.

pub mod request;
pub mod worker;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use vmm_sys_util::eventfd::EventFd;

use super::threads::DeviceThreads;
use super::{
    read_config_bytes, Activation, VirtioDevice, VirtioError, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_BLOCK,
};
use crate::config::{DirectMode, DiskConfig};

/// Feature bits (virtio 1.2, 5.2.3).
pub const F_SIZE_MAX: u64 = 1 << 1;
pub const F_SEG_MAX: u64 = 1 << 2;
pub const F_RO: u64 = 1 << 5;
pub const F_BLK_SIZE: u64 = 1 << 6;
pub const F_FLUSH: u64 = 1 << 9;
pub const F_MQ: u64 = 1 << 12;
pub const F_DISCARD: u64 = 1 << 13;
pub const F_WRITE_ZEROES: u64 = 1 << 14;

/// Request types.
pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;

/// Request status bytes.
pub const S_OK: u8 = 0;
pub const S_IOERR: u8 = 1;
pub const S_UNSUPP: u8 = 2;

/// Sector size of the virtio-blk protocol.
pub const SECTOR: u64 = 512;
/// Size of each queue (descriptors).
pub const QUEUE_SIZE: u16 = 256;
/// Most request queues a disk offers (`DiskConfig::num_queues`).
pub const MAX_QUEUES: u32 = 16;
/// Data segments per request and bytes per segment the driver may use.
pub const SEG_MAX: u32 = 126;
pub const SIZE_MAX: u32 = 1 << 20;
/// Largest DISCARD / WRITE_ZEROES range, in sectors (one segment each).
pub const MAX_DISCARD_SECTORS: u32 = u32::MAX / 512;
/// Longest id GET_ID returns.
pub const ID_BYTES: usize = 20;

/// The open backing file: an O_DIRECT descriptor when the file system
/// allows it (aligned I/O goes there) and a buffered one (everything else,
/// and fdatasync).
pub struct DiskFiles {
    pub path: PathBuf,
    pub direct: Option<File>,
    pub buffered: File,
    /// Capacity in 512-byte sectors.
    pub sectors: u64,
}

impl DiskFiles {
    /// Open `path` (read-only or read-write) with the O_DIRECT policy `mode`.
    pub fn open(path: &Path, read_only: bool, mode: DirectMode) -> Result<Self, VirtioError> {
        let open_err = |source| VirtioError::Open {
            path: path.to_path_buf(),
            source,
        };
        // Refuse what is not a disk before opening it (a directory opens
        // read-only just fine; a FIFO would block the open).
        let kind = std::fs::metadata(path).map_err(open_err)?.file_type();
        if !kind.is_file() && !kind.is_block_device() {
            return Err(VirtioError::NotADisk(path.to_path_buf()));
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(!read_only);
        let buffered = opts.open(path).map_err(open_err)?;
        let meta = buffered.metadata().map_err(open_err)?;
        let bytes = if meta.file_type().is_block_device() {
            block_device_size(&buffered).map_err(open_err)?
        } else if meta.is_file() {
            meta.len()
        } else {
            return Err(VirtioError::NotADisk(path.to_path_buf()));
        };
        let direct = match mode {
            DirectMode::Off => None,
            DirectMode::On => {
                Some(
                    open_direct(path, read_only).map_err(|source| VirtioError::Direct {
                        path: path.to_path_buf(),
                        source,
                    })?,
                )
            }
            DirectMode::Auto => match open_direct(path, read_only) {
                Ok(f) => Some(f),
                Err(e) => {
                    eprintln!(
                        "kiln-vmm: disk {}: O_DIRECT not usable ({e}); using buffered I/O",
                        path.display()
                    );
                    None
                }
            },
        };
        Ok(DiskFiles {
            path: path.to_path_buf(),
            direct,
            buffered,
            sectors: bytes / SECTOR,
        })
    }
}

/// Open with O_DIRECT and prove it works with one aligned read of the first
/// sector (some file systems accept the flag at open and fail every I/O).
fn open_direct(path: &Path, read_only: bool) -> std::io::Result<File> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .read(true)
        .write(!read_only)
        .custom_flags(libc::O_DIRECT)
        .open(path)?;
    #[repr(C, align(4096))]
    struct Block([u8; 4096]);
    let mut b = Box::new(Block([0; 4096]));
    f.read_at(&mut b.0, 0)?;
    Ok(f)
}

fn block_device_size(f: &File) -> std::io::Result<u64> {
    use std::os::unix::io::AsRawFd;
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: the ioctl writes one u64 into `size`, which outlives the call.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64, &mut size as *mut u64) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// The backing files (none: an empty slot), shared by the device and its
/// queue threads; a swap bumps `generation` and each thread picks the new
/// files up once its in-flight I/O on the old ones has completed.
pub struct SharedDisk {
    files: Mutex<Option<Arc<DiskFiles>>>,
    generation: AtomicU64,
}

impl SharedDisk {
    pub fn new(files: Option<DiskFiles>) -> Self {
        SharedDisk {
            files: Mutex::new(files.map(Arc::new)),
            generation: AtomicU64::new(0),
        }
    }

    pub fn current(&self) -> Option<Arc<DiskFiles>> {
        self.files.lock().ok().and_then(|f| f.clone())
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Put `files` in (None empties the slot); returns the files taken out.
    pub fn replace(&self, files: Option<DiskFiles>) -> Option<Arc<DiskFiles>> {
        let old = match self.files.lock() {
            Ok(mut f) => std::mem::replace(&mut *f, files.map(Arc::new)),
            Err(_) => None,
        };
        self.generation.fetch_add(1, Ordering::AcqRel);
        old
    }

    pub fn sectors(&self) -> u64 {
        self.current().map_or(0, |f| f.sectors)
    }
}

/// What the control socket shows of a disk slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DiskInfo {
    pub id: String,
    /// The backing file; None for an empty slot.
    pub path: Option<PathBuf>,
    pub bytes: u64,
    pub read_only: bool,
}

/// How long a swap waits for the queue threads to let go of the old files.
const SWAP_DRAIN: std::time::Duration = std::time::Duration::from_secs(5);

/// Settings a queue thread needs besides the queue itself.
#[derive(Clone)]
pub struct BlkSettings {
    pub read_only: bool,
    pub id: [u8; ID_BYTES],
    /// How long the queue thread polls after activity (see `DiskConfig::poll_us`).
    pub poll: std::time::Duration,
    /// Host CPUs the queue threads run on (empty: any).
    pub affinity: Vec<usize>,
}

/// A virtio-blk device.
pub struct Blk {
    disk: Arc<SharedDisk>,
    settings: BlkSettings,
    id: String,
    direct: DirectMode,
    /// One entry per queue offered (`DiskConfig::num_queues`).
    sizes: Vec<u16>,
    workers: DeviceThreads,
    /// The queues' notifiers (ioeventfds): written to wake a queue thread.
    wakers: Vec<EventFd>,
}

impl Blk {
    /// Open the disk of `cfg` (an empty slot without a path); `index` names
    /// it when it has no id.
    pub fn new(cfg: &DiskConfig, index: usize) -> Result<Self, VirtioError> {
        if !(1..=MAX_QUEUES).contains(&cfg.num_queues) {
            return Err(VirtioError::QueueCount(cfg.num_queues));
        }
        let files = match &cfg.path {
            Some(p) => Some(DiskFiles::open(p, cfg.read_only, cfg.direct)?),
            None => None,
        };
        let id = cfg.id.clone().unwrap_or_else(|| format!("disk{index}"));
        let mut id_bytes = [0u8; ID_BYTES];
        for (d, s) in id_bytes.iter_mut().zip(id.bytes()) {
            *d = s;
        }
        Ok(Blk {
            disk: Arc::new(SharedDisk::new(files)),
            settings: BlkSettings {
                read_only: cfg.read_only,
                id: id_bytes,
                poll: std::time::Duration::from_micros(u64::from(cfg.poll_us)),
                affinity: cfg.queue_affinity.clone(),
            },
            id,
            direct: cfg.direct,
            sizes: vec![QUEUE_SIZE; cfg.num_queues as usize],
            workers: DeviceThreads::default(),
            wakers: Vec::new(),
        })
    }

    /// Wake every queue thread and wait (at most `SWAP_DRAIN`) until none
    /// holds `old` any more: its in-flight requests have completed (or
    /// failed) and later ones go to the new backing. False on timeout.
    fn drain_old(&self, old: Arc<DiskFiles>) -> bool {
        let deadline = std::time::Instant::now() + SWAP_DRAIN;
        loop {
            if Arc::strong_count(&old) == 1 {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            for w in &self.wakers {
                let _ = w.write(1);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// The config space (virtio 1.2, 5.2.4), little-endian.
    pub fn config_space(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        let mut put = |off: usize, b: &[u8]| c[off..off + b.len()].copy_from_slice(b);
        put(0, &self.disk.sectors().to_le_bytes());
        put(8, &SIZE_MAX.to_le_bytes());
        put(12, &SEG_MAX.to_le_bytes());
        put(20, &(SECTOR as u32).to_le_bytes());
        put(34, &(self.sizes.len() as u16).to_le_bytes()); // num_queues
        put(36, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(40, &1u32.to_le_bytes()); // max_discard_seg
        put(44, &1u32.to_le_bytes()); // discard_sector_alignment
        put(48, &MAX_DISCARD_SECTORS.to_le_bytes());
        put(52, &1u32.to_le_bytes()); // max_write_zeroes_seg
        put(56, &[1]); // write_zeroes_may_unmap
        c
    }
}

impl VirtioDevice for Blk {
    fn device_type(&self) -> u32 {
        TYPE_BLOCK
    }

    fn features(&self) -> u64 {
        let mut f = F_VERSION_1
            | F_RING_EVENT_IDX
            | F_RING_INDIRECT_DESC
            | F_SIZE_MAX
            | F_SEG_MAX
            | F_BLK_SIZE
            | F_FLUSH;
        if self.sizes.len() > 1 {
            f |= F_MQ;
        }
        if self.settings.read_only {
            f |= F_RO;
        } else {
            f |= F_DISCARD | F_WRITE_ZEROES;
        }
        f
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.sizes
    }

    /// Queue 0 only: with MQ a driver may use any number of queues from 1.
    fn required_queues(&self) -> usize {
        1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config_space(), offset, data);
    }

    /// One queue thread (own io_uring) per ready queue, named
    /// `blk-<id>-q<index>`. Without VIRTIO_BLK_F_MQ negotiated only queue
    /// 0 is served (virtio 1.2, 5.2.2), whatever else the driver readied.
    fn activate(&mut self, a: Activation) -> Result<(), VirtioError> {
        self.reset();
        let mq = a.features & F_MQ != 0;
        let ready = a.indices.into_iter().zip(a.queues).zip(a.notifiers);
        for ((i, queue), notifier) in ready {
            if i > 0 && !mq {
                continue;
            }
            self.wakers
                .push(notifier.try_clone().map_err(VirtioError::EventFd)?);
            let (mem, interrupt) = (a.mem.clone(), a.interrupt.clone());
            let (disk, settings) = (self.disk.clone(), self.settings.clone());
            self.workers
                .spawn(format!("blk-{}-q{i}", self.id), |stop| {
                    let w = worker::QueueWorker::new(
                        mem, queue, notifier, stop, interrupt, disk, settings,
                    )?;
                    Ok(move || w.run())
                })?;
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.workers.stop_all();
        self.wakers.clear();
    }

    fn disk_id(&self) -> Option<&str> {
        Some(&self.id)
    }

    fn swap_backing(&mut self, path: Option<&Path>) -> Result<(), String> {
        let files = match path {
            Some(p) => Some(
                DiskFiles::open(p, self.settings.read_only, self.direct)
                    .map_err(|e| e.to_string())?,
            ),
            None => None,
        };
        if let Some(old) = self.disk.replace(files) {
            if !self.drain_old(old) {
                return Err(format!(
                    "disk {}: the new backing is in place, but I/O on the old one \
                     did not finish within {} s",
                    self.id,
                    SWAP_DRAIN.as_secs()
                ));
            }
        }
        Ok(())
    }

    fn disk_info(&self) -> Option<DiskInfo> {
        let files = self.disk.current();
        Some(DiskInfo {
            id: self.id.clone(),
            path: files.as_ref().map(|f| f.path.clone()),
            bytes: files.map_or(0, |f| f.sectors * SECTOR),
            read_only: self.settings.read_only,
        })
    }
}

impl Drop for Blk {
    fn drop(&mut self) {
        self.reset();
    }
}
