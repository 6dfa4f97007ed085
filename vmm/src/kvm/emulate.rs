//! Instructions KVM's emulator gives up on, done by the VMM instead.
//!
//! On the measured platform guest ring 0 runs through KVM's instruction
//! emulator, which lacks a few instructions Linux executes while booting.
//! When KVM reports an emulation failure with the instruction bytes, we
//! decode exactly the forms below and do what the CPU would; anything else
//! stays a guest crash (with the bytes in the crash line).
//!
//! - `int3` (cc): a #BP trap with the return address after it (Linux's int3
//!   self-test and text patching).
//! - `fwait` (9b): a no-op unless CR0.MP and CR0.TS are both set.
//! - `ldmxcsr m32` / `stmxcsr m32` (0f ae /2, /3): MXCSR through KVM_GET/SET_FPU,
//!   the operand through KVM_TRANSLATE and guest memory (Linux's
//!   `kernel_fpu_begin`).
//!
//! The decoder is a pure function over the bytes, unit-tested here; every
//! guest-controlled value (addresses, lengths) is checked, and a failure
//! leaves the instruction unhandled rather than guessing.

use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::memory::GuestMemory;

/// CR0.MP | CR0.TS.
const CR0_MP_TS: u64 = (1 << 1) | (1 << 3);
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
const CR4_OSFXSR: u64 = 1 << 9;
/// MXCSR bits a write may set (MXCSR_MASK of every CPU since the P4 with DAZ).
const MXCSR_WRITABLE: u32 = 0xffff;
const VEC_UD: u8 = 6;
const VEC_NM: u8 = 7;
const VEC_GP: u8 = 13;
const VEC_PF: u8 = 14;

/// What the failing instruction is, as far as we handle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insn {
    Int3,
    Fwait,
    /// `ldmxcsr` (load = true) or `stmxcsr`, with its memory operand.
    Mxcsr {
        load: bool,
        operand: MemOperand,
        len: usize,
    },
}

/// A ModRM memory operand: `seg:[base + index*scale + disp]` or `[rip + disp]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemOperand {
    pub base: Option<u8>,
    pub index: Option<u8>,
    pub scale: u8,
    pub disp: i64,
    pub rip_relative: bool,
    pub segment: Segment,
    /// 0x67 prefix: 32-bit address arithmetic.
    pub addr32: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Segment {
    Default,
    Fs,
    Gs,
}

/// Decode the 64-bit-mode instruction at the start of `bytes`.
pub fn decode(bytes: &[u8]) -> Option<Insn> {
    let mut i = 0;
    let mut segment = Segment::Default;
    let mut addr32 = false;
    let mut rex = 0u8;
    // Legacy prefixes, then at most one REX right before the opcode.
    loop {
        match *bytes.get(i)? {
            0x64 => segment = Segment::Fs,
            0x65 => segment = Segment::Gs,
            0x67 => addr32 = true,
            0x26 | 0x2e | 0x36 | 0x3e => {} // null segments in 64-bit mode
            _ => break,
        }
        i += 1;
    }
    if (0x40..=0x4f).contains(bytes.get(i)?) {
        rex = bytes[i];
        i += 1;
    }
    match *bytes.get(i)? {
        0xcc if i == 0 => return Some(Insn::Int3),
        0x9b if i == 0 => return Some(Insn::Fwait),
        0x0f if bytes.get(i + 1) == Some(&0xae) => {}
        _ => return None,
    }
    i += 2;
    let modrm = *bytes.get(i)?;
    i += 1;
    let (md, reg, rm) = (modrm >> 6, (modrm >> 3) & 7, modrm & 7);
    if md == 3 || (reg != 2 && reg != 3) {
        return None;
    }
    let rex_b = (rex & 1) << 3;
    let rex_x = ((rex >> 1) & 1) << 3;
    let mut op = MemOperand {
        base: None,
        index: None,
        scale: 1,
        disp: 0,
        rip_relative: false,
        segment,
        addr32,
    };
    let disp_len = match md {
        0 => 0,
        1 => 1,
        _ => 4,
    };
    let mut disp_len = disp_len;
    if rm == 4 {
        let sib = *bytes.get(i)?;
        i += 1;
        let (ss, idx, base) = (sib >> 6, (sib >> 3) & 7, sib & 7);
        op.scale = 1 << ss;
        let idx = idx | rex_x;
        if idx != 4 {
            op.index = Some(idx);
        }
        if base == 5 && md == 0 {
            disp_len = 4;
        } else {
            op.base = Some(base | rex_b);
        }
    } else if rm == 5 && md == 0 {
        op.rip_relative = true;
        disp_len = 4;
    } else {
        op.base = Some(rm | rex_b);
    }
    op.disp = match disp_len {
        0 => 0,
        1 => i64::from(*bytes.get(i)? as i8),
        _ => {
            let d = bytes.get(i..i + 4)?;
            i64::from(i32::from_le_bytes([d[0], d[1], d[2], d[3]]))
        }
    };
    i += disp_len;
    Some(Insn::Mxcsr {
        load: reg == 2,
        operand: op,
        len: i,
    })
}

/// The general-purpose register numbered as in ModRM (rax=0 .. r15=15).
fn gpr(r: &kvm_bindings::kvm_regs, n: u8) -> u64 {
    [
        r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11, r.r12,
        r.r13, r.r14, r.r15,
    ][usize::from(n & 15)]
}

impl MemOperand {
    /// The operand's linear address; `next_rip` is the address after the
    /// instruction (RIP-relative operands count from there).
    pub fn linear(&self, r: &kvm_bindings::kvm_regs, seg_base: u64, next_rip: u64) -> u64 {
        let mut ea = self.disp as u64;
        if self.rip_relative {
            ea = ea.wrapping_add(next_rip);
        }
        if let Some(b) = self.base {
            ea = ea.wrapping_add(gpr(r, b));
        }
        if let Some(x) = self.index {
            ea = ea.wrapping_add(gpr(r, x).wrapping_mul(u64::from(self.scale)));
        }
        if self.addr32 {
            ea &= 0xffff_ffff;
        }
        ea.wrapping_add(seg_base)
    }
}

/// Handle the emulation failure whose instruction bytes KVM reported.
/// True if the instruction was carried out (or its fault injected).
pub fn handle(vcpu: &VcpuFd, mem: &GuestMemory, bytes: &[u8]) -> bool {
    let Some(insn) = decode(bytes) else {
        return false;
    };
    let Ok(mut regs) = vcpu.get_regs() else {
        return false;
    };
    let Ok(sregs) = vcpu.get_sregs() else {
        return false;
    };
    match insn {
        Insn::Fwait => {
            if sregs.cr0 & CR0_MP_TS == CR0_MP_TS {
                return inject(vcpu, VEC_NM, None);
            }
            regs.rip = regs.rip.wrapping_add(1);
            vcpu.set_regs(&regs).is_ok()
        }
        Insn::Int3 => {
            // A trap: the saved RIP is the instruction after it.
            regs.rip = regs.rip.wrapping_add(1);
            vcpu.set_regs(&regs).is_ok() && inject(vcpu, 3, None)
        }
        Insn::Mxcsr { load, operand, len } => {
            if sregs.cr0 & CR0_EM != 0 || sregs.cr4 & CR4_OSFXSR == 0 {
                return inject(vcpu, VEC_UD, None);
            }
            if sregs.cr0 & CR0_TS != 0 {
                return inject(vcpu, VEC_NM, None);
            }
            let seg_base = match operand.segment {
                Segment::Fs => sregs.fs.base,
                Segment::Gs => sregs.gs.base,
                Segment::Default => 0,
            };
            let next_rip = regs.rip.wrapping_add(len as u64);
            let gva = operand.linear(&regs, seg_base, next_rip);
            let Ok(mut fpu) = vcpu.get_fpu() else {
                return false;
            };
            let done = if load {
                let mut buf = [0u8; 4];
                if read_virt(vcpu, mem, gva, &mut buf).is_err() {
                    return inject(vcpu, VEC_PF, Some(0));
                }
                let v = u32::from_le_bytes(buf);
                if v & !MXCSR_WRITABLE != 0 {
                    return inject(vcpu, VEC_GP, Some(0));
                }
                fpu.mxcsr = v;
                vcpu.set_fpu(&fpu).is_ok()
            } else if write_virt(vcpu, mem, gva, &fpu.mxcsr.to_le_bytes()).is_err() {
                return inject(vcpu, VEC_PF, Some(2));
            } else {
                true
            };
            regs.rip = next_rip;
            done && vcpu.set_regs(&regs).is_ok()
        }
    }
}

/// Inject exception `vector` (with an error code for #GP/#PF).
fn inject(vcpu: &VcpuFd, vector: u8, error_code: Option<u32>) -> bool {
    let Ok(mut events) = vcpu.get_vcpu_events() else {
        return false;
    };
    events.exception.injected = 1;
    events.exception.nr = vector;
    events.exception.has_error_code = u8::from(error_code.is_some());
    events.exception.error_code = error_code.unwrap_or(0);
    vcpu.set_vcpu_events(&events).is_ok()
}

/// Guest-physical address of each byte run of `len` bytes at `gva`, split at
/// page boundaries; None if a page is not mapped or outside guest memory.
fn pages(vcpu: &VcpuFd, gva: u64, len: usize) -> Option<Vec<(GuestAddress, usize)>> {
    let mut out = Vec::with_capacity(2);
    let mut at = gva;
    let mut left = len;
    while left > 0 {
        let t = vcpu.translate_gva(at).ok()?;
        if t.valid == 0 {
            return None;
        }
        let in_page = (4096 - (at & 0xfff)) as usize;
        let n = in_page.min(left);
        out.push((GuestAddress(t.physical_address), n));
        at = at.wrapping_add(n as u64);
        left -= n;
    }
    Some(out)
}

fn read_virt(vcpu: &VcpuFd, mem: &GuestMemory, gva: u64, buf: &mut [u8]) -> Result<(), ()> {
    let mut off = 0;
    for (gpa, n) in pages(vcpu, gva, buf.len()).ok_or(())? {
        mem.read_slice(&mut buf[off..off + n], gpa)
            .map_err(|_| ())?;
        off += n;
    }
    Ok(())
}

fn write_virt(vcpu: &VcpuFd, mem: &GuestMemory, gva: u64, buf: &[u8]) -> Result<(), ()> {
    let runs = pages(vcpu, gva, buf.len()).ok_or(())?;
    // Check every page first, so a fault leaves memory untouched.
    if runs
        .iter()
        .any(|(gpa, n)| mem.checked_offset(*gpa, n - 1).is_none())
    {
        return Err(());
    }
    let mut off = 0;
    for (gpa, n) in runs {
        mem.write_slice(&buf[off..off + n], gpa).map_err(|_| ())?;
        off += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mx(bytes: &[u8]) -> (bool, MemOperand, usize) {
        match decode(bytes) {
            Some(Insn::Mxcsr { load, operand, len }) => (load, operand, len),
            other => panic!("{bytes:x?} decoded as {other:?}"),
        }
    }

    #[test]
    fn decodes_linux_ldmxcsr_on_the_stack() {
        // ldmxcsr 0x4(%rsp), as Linux 6.12 executes it (trailing bytes follow).
        let (load, op, len) = mx(&[0x0f, 0xae, 0x54, 0x24, 0x04, 0x48, 0x8b]);
        assert!(load);
        assert_eq!(len, 5);
        assert_eq!(op.base, Some(4));
        assert_eq!(op.index, None);
        assert_eq!(op.disp, 4);
        let regs = kvm_bindings::kvm_regs {
            rsp: 0x1000,
            ..Default::default()
        };
        assert_eq!(op.linear(&regs, 0, 0), 0x1004);
    }

    #[test]
    fn decodes_stmxcsr_forms() {
        // stmxcsr (%rax)
        let (load, op, len) = mx(&[0x0f, 0xae, 0x18]);
        assert!(!load);
        assert_eq!((op.base, len), (Some(0), 3));
        // stmxcsr -0x10(%r13) with REX.B, disp8
        let (_, op, len) = mx(&[0x41, 0x0f, 0xae, 0x5d, 0xf0]);
        assert_eq!((op.base, op.disp, len), (Some(13), -16, 5));
        // ldmxcsr 0x12345678(%rip)
        let (_, op, len) = mx(&[0x0f, 0xae, 0x15, 0x78, 0x56, 0x34, 0x12]);
        assert!(op.rip_relative);
        assert_eq!(len, 7);
        let regs = kvm_bindings::kvm_regs::default();
        assert_eq!(op.linear(&regs, 0, 0x1000), 0x1234_6678);
        // ldmxcsr %gs:0x20(,%r9,8) — SIB without base, REX.X, GS override
        let (_, op, len) = mx(&[0x65, 0x42, 0x0f, 0xae, 0x14, 0xcd, 0x20, 0, 0, 0]);
        assert_eq!(op.base, None);
        assert_eq!((op.index, op.scale, op.disp), (Some(9), 8, 0x20));
        assert_eq!(op.segment, Segment::Gs);
        assert_eq!(len, 10);
        let regs = kvm_bindings::kvm_regs {
            r9: 2,
            ..Default::default()
        };
        assert_eq!(op.linear(&regs, 0x10_0000, 0), 0x10_0030);
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bytes in [
            &[0x0f, 0xae, 0xf0][..],   // mfence-class (register form)
            &[0x0f, 0xae, 0x00],       // fxsave: KVM's job, not ours
            &[0x0f, 0xae, 0x28],       // xrstor
            &[0x0f, 0xae],             // truncated
            &[0x0f, 0xae, 0x54, 0x24], // truncated SIB displacement
            &[0x0f, 0xae, 0x15, 0x78], // truncated RIP displacement
            &[0x66, 0xcc],             // int3 with a prefix is not int3
            &[],
            &[0x90],
        ] {
            assert_eq!(decode(bytes), None, "{bytes:x?}");
        }
        assert_eq!(decode(&[0xcc, 0x90]), Some(Insn::Int3));
        assert_eq!(decode(&[0x9b]), Some(Insn::Fwait));
    }
}
