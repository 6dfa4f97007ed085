//! kiln-firmware: the freestanding guest ELF. The entry code (`src/entry.S`)
//! drops to ring 3 with IOPL=3 and calls `kiln_main`; everything here runs in
//! ring 3, where this platform executes guest code natively.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};

use kiln_firmware::cmdline;
use kiln_firmware::line::Line;
use kiln_firmware::net_echo::{self, Me};
use kiln_firmware::virtio_mmio::InitError;
use kiln_firmware::virtio_net::Net;

#[path = "kiln-firmware/blk_jobs.rs"]
mod blk_jobs;
#[path = "kiln-firmware/irq.rs"]
mod irq;
#[path = "kiln-firmware/pinger.rs"]
mod pinger;
#[path = "kiln-firmware/serve.rs"]
mod serve;

global_asm!(include_str!("../entry.S"), options(att_syntax));

/// COM1 data register.
const COM1: u16 = 0x3f8;
/// Boot-timer device (Firecracker's convention): write 123 at this address.
const BOOT_TIMER_MMIO: usize = 0xd000_0000;
const BOOT_TIMER_MAGIC: u8 = 123;
/// Linux boot protocol: offsets into `struct boot_params`.
const BP_EXT_CMD_LINE_PTR: usize = 0x0c8;
const BP_CMD_LINE_PTR: usize = 0x228;
const BP_CMDLINE_SIZE: usize = 0x238;
/// PVH `hvm_start_info`.
const PVH_MAGIC: u32 = 0x336e_c578;
const PVH_CMDLINE_PADDR: usize = 24;
/// Longest command line read.
const CMDLINE_MAX: usize = 4096;

/// Entry kinds passed by the entry code.
const ENTRY_LINUX64: u64 = 0;
const ENTRY_PVH: u64 = 1;

#[no_mangle]
extern "C" fn kiln_main(kind: u64, info: u64) -> ! {
    // SAFETY: `info` is the boot-params or start-info address the VMM handed
    // over; guest memory is identity-mapped for the firmware.
    let cmdline = unsafe { boot_cmdline(kind, info as usize) };
    write_com1(b"kiln-firmware: booted\n");
    // SAFETY: the boot-timer address is an MMIO slot in the identity map;
    // where no device sits there the write is ignored by the VMM.
    unsafe { core::ptr::write_volatile(BOOT_TIMER_MMIO as *mut u8, BOOT_TIMER_MAGIC) };
    for dev in cmdline::virtio_mmio_devices(cmdline) {
        let mut l = Line::new();
        l.bytes(b"kiln-firmware: virtio-mmio ")
            .hex(dev.addr)
            .bytes(b" irq ")
            .dec(u64::from(dev.irq))
            .bytes(b"\n");
        write_com1(l.as_bytes());
    }
    match cmdline::mode(cmdline) {
        b"probe" => {}
        b"blk-check" => blk_jobs::blk_check(cmdline, false),
        // Write and flush, say so, then wait to be killed (crash-consistency test).
        b"blk-write-hold" => blk_jobs::blk_check(cmdline, true),
        b"blk-watch" => blk_jobs::blk_watch(cmdline),
        b"blk-bench" => blk_jobs::blk_bench(cmdline),
        b"net-echo" => net_echo(cmdline),
        b"net-bench" => net_bench(cmdline),
        b"idle" => idle_until_ctrl_alt_del(cmdline),
        b"serve" => serve::serve(cmdline),
        // Test jobs for the VMM's failure paths: ignore every request, or
        // take an exception (the handler triple-faults).
        b"hang" => loop {
            core::hint::spin_loop();
        },
        // A page fault (nothing is mapped at 64 GiB): the exception handler
        // triple-faults. (#UD is the sleep call, see `irq`.)
        // SAFETY: the read faults; it never returns data.
        b"fault" => unsafe {
            core::ptr::read_volatile(0x10_0000_0000usize as *const u8);
        },
        other => {
            let mut l = Line::new();
            l.bytes(b"kiln-firmware: error: unknown mode ")
                .bytes(other)
                .bytes(b"\n");
            write_com1(l.as_bytes());
        }
    }
    // `kiln.after=idle`: stay up until Ctrl-Alt-Del (benchmarks read the
    // VMM's thread statistics before stopping it).
    if cmdline::value(cmdline, b"kiln.after") == Some(b"idle") {
        idle_until_ctrl_alt_del(cmdline);
    }
    power_off()
}

/// The command line the VMM passed, or an empty one.
///
/// # Safety
/// `info` must be the pointer the entry protocol `kind` defines.
unsafe fn boot_cmdline(kind: u64, info: usize) -> &'static [u8] {
    if info == 0 {
        return &[];
    }
    let ptr = match kind {
        ENTRY_LINUX64 => {
            // SAFETY: boot_params is a 4 KiB page at `info` (caller's contract).
            let lo = unsafe { read_u32(info + BP_CMD_LINE_PTR) } as usize;
            // SAFETY: as above.
            let hi = unsafe { read_u32(info + BP_EXT_CMD_LINE_PTR) } as usize;
            (hi << 32) | lo
        }
        ENTRY_PVH => {
            // SAFETY: hvm_start_info sits at `info` (caller's contract).
            if unsafe { read_u32(info) } != PVH_MAGIC {
                return &[];
            }
            // SAFETY: as above; cmdline_paddr is a u64 at offset 24.
            (unsafe { core::ptr::read_volatile((info + PVH_CMDLINE_PADDR) as *const u64) }) as usize
        }
        _ => 0,
    };
    if ptr == 0 || ptr >= 1 << 32 {
        return &[];
    }
    let max = if kind == ENTRY_LINUX64 {
        // SAFETY: as above.
        match unsafe { read_u32(info + BP_CMDLINE_SIZE) } as usize {
            0 => CMDLINE_MAX,
            n => n.min(CMDLINE_MAX),
        }
    } else {
        CMDLINE_MAX
    };
    // SAFETY: the command line is NUL-terminated guest memory below 4 GiB,
    // identity-mapped; we never read past `max` bytes.
    let bytes = unsafe { core::slice::from_raw_parts(ptr as *const u8, max) };
    let len = bytes.iter().position(|b| *b == 0).unwrap_or(max);
    &bytes[..len]
}

/// # Safety
/// `addr` must be mapped and readable.
unsafe fn read_u32(addr: usize) -> u32 {
    // SAFETY: caller's contract.
    unsafe { core::ptr::read_volatile(addr as *const u32) }
}

/// Send a line to COM1 with one `rep outsb`. On the measured platform every
/// port write from the guest is emulated (~45 µs each), but KVM's emulator
/// hands a whole `rep outs` to the device in one go: a 22-byte line costs ~75 µs
/// instead of ~1 ms with one `out` per byte (seen with `perf record -e
/// kvm:kvm_emulate_insn,kvm:kvm_pio`). The THR is not polled: every VMM this
/// runs on drains it at once.
fn write_com1(s: &[u8]) {
    // SAFETY: ring-3 string port I/O with IOPL=3 / the TSS I/O bitmap; it
    // only reads `s` (through DS, a ring-3 data segment set up at entry).
    unsafe {
        asm!(
            "rep outsb",
            in("dx") COM1,
            inout("rsi") s.as_ptr() => _,
            inout("rcx") s.len() => _,
            options(nostack, preserves_flags, readonly)
        )
    };
}

fn outb(port: u16, v: u8) {
    // SAFETY: ring-3 port I/O with IOPL=3.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags))
    };
}

fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: ring-3 port I/O with IOPL=3.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") v, options(nomem, nostack, preserves_flags))
    };
    v
}

fn say(parts: &[&[u8]]) {
    let mut l = Line::new();
    for p in parts {
        l.bytes(p);
    }
    l.bytes(b"\n");
    write_com1(l.as_bytes());
}

/// Make the VMM write out console bytes now: kiln-vmm's COM1 data port is
/// coalesced (bytes wait in KVM's ring until the next exit to the VMM), and
/// a sleeping guest's exits (hlt, LAPIC, ioeventfds) never reach it. Reading
/// the line status register is such an exit.
fn flush_console() {
    let _ = inb(COM1 + 5);
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc has no memory effects; CR4.TSD is clear, so ring 3 may use it.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// TSC ticks per second: `tsc_khz=N` from the command line when the host
/// knows better (a VMM without a PC speaker port, such as QEMU microvm,
/// gives no way to time the PIT), else measured against the PIT.
fn tsc_hz(cmdline: &[u8]) -> Option<u64> {
    match cmdline::value(cmdline, b"tsc_khz").map(cmdline::parse_u64) {
        Some(Some(khz)) if khz >= 100_000 => Some(khz * 1000),
        _ => pit_tsc_hz(),
    }
}

/// TSC ticks per second, measured against the PIT (channel 2 counting
/// 65535 ticks of 1.193182 MHz, ~55 ms, watched through port 0x61). Retried
/// while no PIT answers yet (kiln-vmm creates it just after the vCPUs start).
fn pit_tsc_hz() -> Option<u64> {
    for _ in 0..200 {
        let v = inb(0x61) & !0x03;
        outb(0x61, v); // gate off, speaker off
        outb(0x43, 0b1011_0000); // channel 2, lo/hi byte, mode 0
        outb(0x42, 0xff);
        outb(0x42, 0xff);
        let start = rdtsc();
        outb(0x61, v | 0x01); // gate on: counting starts
        let mut spins = 0u64;
        while inb(0x61) & 0x20 == 0 && spins < 100_000 {
            spins += 1;
        }
        let ticks = rdtsc() - start;
        // A real count takes ~55 ms: anything under 20 ms means no PIT.
        let hz = ticks * 1_193_182 / 65_535;
        if spins < 100_000 && ticks > hz / 50 && hz > 100_000_000 && ticks > 2_000_000 {
            return Some(hz);
        }
        for _ in 0..1_000_000 {
            core::hint::spin_loop();
        }
    }
    None
}

/// Append `n / 10^digits` with that many decimals.
fn fixed(l: &mut Line, n: u64, digits: u32) {
    let scale = 10u64.pow(digits);
    l.dec(n / scale).bytes(b".");
    let frac = n % scale;
    let mut d = scale / 10;
    while d > 0 {
        l.dec(frac / d % 10);
        d /= 10;
    }
}

/// The first virtio-net device among the command line's virtio-mmio slots, set up.
fn open_net(cmdline: &[u8]) -> Option<Net> {
    for dev in cmdline::virtio_mmio_devices(cmdline) {
        // SAFETY: the slot is an MMIO window in the identity map, and this is
        // the only driver instance (a failed init leaves nothing behind).
        match unsafe { Net::init(dev.addr as usize) } {
            Ok(n) => return Some(n),
            Err(InitError::WrongType) => continue,
            Err(e) => {
                say(&[b"net: cannot set up the device: ", e.text()]);
                return None;
            }
        }
    }
    say(&[b"net: no virtio-net device among the virtio-mmio slots"]);
    None
}

fn hex_byte(l: &mut Line, b: u8) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    l.bytes(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 15)]]);
}

/// `kiln.mode=net-echo ip=A/N [gw=G] [tcp=P,…]`: answer ARP for A, ICMP
/// echo, echo UDP datagrams to their sender, SYN-ACK TCP SYNs to the listed
/// ports and RST the others, until Ctrl-Alt-Del.
fn net_echo(cmdline: &[u8]) {
    let Some((mut net, me)) = net_setup(cmdline, b"net-echo") else {
        return;
    };
    irq::init(cmdline);
    let mut waker = Waker::new();
    loop {
        if waker.keyboard_due() && ctrl_alt_del(&mut waker.seen_del) {
            let mut l = Line::new();
            l.bytes(b"net-echo: received ")
                .dec(net.received)
                .bytes(b" sent ")
                .dec(net.sent)
                .bytes(b"\n");
            write_com1(l.as_bytes());
            return;
        }
        let n = net.receive(|net, frame| {
            net.send_with(|out| net_echo::answer(&me, frame, out));
        });
        if n > 0 || !net.rx_interrupts_before_sleep() {
            waker.busy();
            continue;
        }
        waker.sleep();
        net.rx_interrupts_off();
    }
}

/// The NIC and our addresses for the net jobs (`ip=A/N [gw=G] [tcp=P,…]`);
/// prints `<job> ready A/N <mac>`.
fn net_setup(cmdline: &[u8], job: &[u8]) -> Option<(Net, Me)> {
    let Some((ip, prefix)) = cmdline::value(cmdline, b"ip").and_then(net_echo::parse_ipv4) else {
        say(&[job, b": ip=A.B.C.D/N is required"]);
        return None;
    };
    if let Some(gw) = cmdline::value(cmdline, b"gw") {
        // Answers go to the sender's MAC, so the gateway is only checked.
        if net_echo::parse_ipv4(gw).is_none() {
            say(&[job, b": bad gw="]);
            return None;
        }
    }
    let net = open_net(cmdline)?;
    let mut me = Me {
        mac: net.mac,
        ip,
        tcp_ports: [0; net_echo::MAX_TCP_PORTS],
        n_tcp_ports: 0,
    };
    if let Some(ports) = cmdline::value(cmdline, b"tcp") {
        if !net_echo::parse_ports(ports, &mut me) {
            say(&[job, b": bad tcp= port list"]);
            return None;
        }
    }
    let mut l = Line::new();
    l.bytes(job).bytes(b" ready ");
    for (i, o) in ip.iter().enumerate() {
        if i > 0 {
            l.bytes(b".");
        }
        l.dec(u64::from(*o));
    }
    l.bytes(b"/").dec(u64::from(prefix)).bytes(b" ");
    for (i, b) in me.mac.iter().enumerate() {
        if i > 0 {
            l.bytes(b":");
        }
        hex_byte(&mut l, *b);
    }
    l.bytes(b"\n");
    write_com1(l.as_bytes());
    // kiln-vmm's console bytes wait in KVM's coalesced-PIO ring until the
    // next exit to the VMM, and queue notifications (ioeventfds) never
    // exit: read COM1's line status register so the line is out now.
    let _ = inb(COM1 + 5);
    Some((net, me))
}

/// `kiln.mode=net-bench ip=A/N dst=B [port=P] [size=S] [seconds=T]`:
/// resolve B by ARP, then for T seconds (default 2) send UDP datagrams of S
/// payload bytes (default 64, at most 1472) to B:P (default 9) as fast as
/// the tx ring takes them, while counting UDP datagrams that arrive for us
/// (and answering ARP). One line: pps and Gbit/s (Ethernet frame bytes) both ways.
fn net_bench(cmdline: &[u8]) {
    let Some(dst) = cmdline::value(cmdline, b"dst").and_then(net_echo::parse_ipv4) else {
        return say(&[b"net-bench: dst=A.B.C.D is required"]);
    };
    let dst = dst.0;
    let num = |key: &[u8], default: u64| {
        cmdline::value(cmdline, key)
            .map(cmdline::parse_u64)
            .unwrap_or(Some(default))
    };
    let (Some(port), Some(size), Some(seconds)) =
        (num(b"port", 9), num(b"size", 64), num(b"seconds", 2))
    else {
        return say(&[b"net-bench: bad port=, size= or seconds="]);
    };
    let (Ok(port), true) = (u16::try_from(port), size <= 1472) else {
        return say(&[b"net-bench: port must fit 16 bits and size at most 1472"]);
    };
    let Some(hz) = tsc_hz(cmdline) else {
        return say(&[b"net-bench: no PIT to calibrate the TSC against (pass tsc_khz=)"]);
    };
    let Some((mut net, me)) = net_setup(cmdline, b"net-bench") else {
        return;
    };
    // Resolve dst: a request every 100 ms for up to 5 s.
    let mut dst_mac = None;
    let give_up = rdtsc() + 5 * hz;
    let mut next_ask = 0u64;
    while dst_mac.is_none() {
        let now = rdtsc();
        if now > give_up {
            return say(&[b"net-bench: no ARP reply from dst"]);
        }
        if now >= next_ask {
            net.send_with(|out| net_echo::arp_request(&me, dst, out));
            next_ask = now + hz / 10;
        }
        net.receive(|net, frame| {
            if let Some(mac) = net_echo::arp_reply_from(frame, dst) {
                dst_mac = Some(mac);
            } else {
                net.send_with(|out| net_echo::answer(&me, frame, out));
            }
        });
    }
    let Some(dst_mac) = dst_mac else { return };
    let size = size as usize;
    let frame_bytes = (14 + 28 + size) as u64;
    let (mut sent, mut received, mut rx_bytes) = (0u64, 0u64, 0u64);
    let t0 = rdtsc();
    let end = t0 + seconds * hz;
    let mut now = t0;
    while now < end {
        if net.send_with(|out| net_echo::udp_frame(&me, dst_mac, dst, (port, port), size, out)) {
            sent += 1;
        }
        net.receive(|net, frame| match net_echo::udp_to_me(&me, frame) {
            Some(_) => {
                received += 1;
                rx_bytes += frame.len() as u64;
            }
            None => {
                net.send_with(|out| net_echo::answer(&me, frame, out));
            }
        });
        now = rdtsc();
    }
    let elapsed = now.saturating_sub(t0).max(1);
    let per_s = |n: u64| (u128::from(n) * u128::from(hz) / u128::from(elapsed)) as u64;
    // Gbit/s with three decimals: bits per second / 10^6 → fixed(…, 3).
    let gbps_milli = |bytes: u64| per_s(bytes) * 8 / 1_000_000;
    let mut l = Line::new();
    l.bytes(b"net-bench size=")
        .dec(size as u64)
        .bytes(b" seconds=")
        .dec(seconds)
        .bytes(b" tx_frames=")
        .dec(sent)
        .bytes(b" tx_pps=")
        .dec(per_s(sent))
        .bytes(b" tx_gbps=");
    fixed(&mut l, gbps_milli(sent * frame_bytes), 3);
    l.bytes(b" rx_frames=")
        .dec(received)
        .bytes(b" rx_pps=")
        .dec(per_s(received))
        .bytes(b" rx_gbps=");
    fixed(&mut l, gbps_milli(rx_bytes), 3);
    l.bytes(b" tx_ring_full=").dec(net.tx_dropped).bytes(b"\n");
    write_com1(l.as_bytes());
}

/// Drain the i8042 output buffer; true once a Delete make code was seen.
fn ctrl_alt_del(seen_del: &mut bool) -> bool {
    while inb(0x64) & 1 != 0 {
        // Scancode set 1: Delete make code is E0 53.
        if inb(0x60) == 0x53 {
            *seen_del = true;
        }
    }
    *seen_del
}

/// Wait for Ctrl-Alt-Del on the i8042 keyboard (how kiln-vmm asks a guest to
/// shut down), asleep in `hlt` between looks (see `irq`).
fn idle_until_ctrl_alt_del(cmdline: &[u8]) {
    irq::init(cmdline);
    let mut waker = Waker::new();
    loop {
        if waker.keyboard_due() && ctrl_alt_del(&mut waker.seen_del) {
            write_com1(b"kiln-firmware: ctrl-alt-del, powering off\n");
            return;
        }
        waker.sleep();
    }
}

/// Ticks between looks at the keyboard when its interrupt did not fire
/// (a safety net: Ctrl-Alt-Del raises IRQ 1, which wakes the sleep at once).
const KEYBOARD_EVERY_TICKS: u32 = 3;

/// Polls without a sleep between keyboard looks (a job kept busy by a
/// flood of frames still hears Ctrl-Alt-Del).
const KEYBOARD_EVERY_POLLS: u32 = 20_000;

/// What woke a sleeping job, and when the keyboard is worth a look (each
/// look is an exit to the VMM).
struct Waker {
    ticks: u32,
    busy_polls: u32,
    /// A device interrupt came or the safety-net tick passed.
    due: bool,
    seen_del: bool,
}

impl Waker {
    fn new() -> Self {
        Waker {
            ticks: 0,
            busy_polls: 0,
            due: true,
            seen_del: false,
        }
    }

    fn sleep(&mut self) {
        let dev = irq::sleep();
        self.ticks = self.ticks.wrapping_add(1);
        self.due |= dev || self.ticks.is_multiple_of(KEYBOARD_EVERY_TICKS);
    }

    /// The job polled again instead of sleeping.
    fn busy(&mut self) {
        self.busy_polls = self.busy_polls.wrapping_add(1);
    }

    /// True when a device interrupt came since the last call, the
    /// safety-net period is up, or the job has been busy for a while.
    fn keyboard_due(&mut self) -> bool {
        if self.busy_polls >= KEYBOARD_EVERY_POLLS {
            self.busy_polls = 0;
            return true;
        }
        core::mem::take(&mut self.due)
    }
}

/// Power off in the way each VMM understands: i8042 CPU reset (kiln-vmm,
/// Firecracker), Cloud Hypervisor's shutdown port, QEMU's isa-debug-exit.
fn power_off() -> ! {
    outb(0x64, 0xfe);
    outb(0x600, 0x34);
    outb(0xf4, 0x00);
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    write_com1(b"kiln-firmware: panic\n");
    power_off()
}

// The compiler may emit calls to these; there is no libc to provide them.

/// # Safety
/// Standard `memcpy` contract.
#[no_mangle]
unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: caller's contract; rep movsb copies exactly n bytes forward.
    unsafe {
        asm!("rep movsb", inout("rdi") dst => _, inout("rsi") src => _, inout("rcx") n => _,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// Standard `memmove` contract.
#[no_mangle]
unsafe extern "C" fn memmove(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dst as usize) <= (src as usize) || (dst as usize) >= (src as usize).wrapping_add(n) {
        // SAFETY: a forward copy is correct when dst does not overlap src's tail.
        return unsafe { memcpy(dst, src, n) };
    }
    // SAFETY: overlapping with dst above src: copy backwards with DF set.
    unsafe {
        asm!("std", "rep movsb", "cld",
             inout("rdi") dst.add(n - 1) => _, inout("rsi") src.add(n - 1) => _, inout("rcx") n => _,
             options(nostack));
    }
    dst
}

/// # Safety
/// Standard `memset` contract.
#[no_mangle]
unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: caller's contract; rep stosb writes exactly n bytes.
    unsafe {
        asm!("rep stosb", inout("rdi") dst => _, inout("rcx") n => _, in("al") c as u8,
             options(nostack, preserves_flags));
    }
    dst
}

/// # Safety
/// Standard `memcmp` contract.
#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n, within both buffers by the caller's contract.
        let (x, y) = unsafe {
            (
                core::ptr::read_volatile(a.add(i)),
                core::ptr::read_volatile(b.add(i)),
            )
        };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// # Safety
/// Standard `bcmp` contract.
#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: same contract as memcmp.
    unsafe { memcmp(a, b, n) }
}

/// The prebuilt `core` references an unwinding personality routine even with
/// `panic = "abort"`; nothing ever unwinds here.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
