/* kiln-firmware entry code: the only ring-0 code of the firmware.
 *
 * Two entries reach kiln_common64 with %rbx = boot info pointer and
 * %r12 = entry kind (0: Linux 64-bit boot protocol, rsi = boot params;
 * 1: PVH, ebx = hvm_start_info). kiln_common64 loads the firmware's own page
 * tables (identity map of 4 GiB, user-accessible), GDT (ring-3 segments, TSS)
 * and IDT (every exception → kiln_fault), then irets to kiln_main in ring 3 with
 * IOPL=3. The platform's ring-0 emulation keeps IOPL at 0 through iretq and
 * popfq, so the TSS also carries an I/O bitmap opening ports 0..0x7ff. Ring 0
 * is emulated instruction by instruction on the measured platform, so every
 * instruction here counts. */

    .section .text.entry, "ax"
    .code64
    .globl kiln_entry64
kiln_entry64:
    cli
    movq %rsi, %rbx
    xorl %r12d, %r12d
kiln_common64:
    leaq kiln_pml4(%rip), %rax
    movq %rax, %cr3
    movq %cr4, %rax
    orq $0x620, %rax            /* PAE | OSFXSR | OSXMMEXCPT: SSE usable */
    movq %rax, %cr4
    movq %cr0, %rax
    andq $~0x4, %rax            /* EM off */
    orq $0x2, %rax              /* MP on */
    movq %rax, %cr0
    lgdt kiln_gdtr(%rip)
    lidt kiln_idtr(%rip)
    movw $0x28, %ax
    ltr %ax
    movw $0x23, %ax             /* ring-3 data segments: string I/O reads via DS */
    movw %ax, %ds
    movw %ax, %es
    pushq $0x23                 /* SS: user data, RPL 3 */
    leaq kiln_stack_top(%rip), %rax
    subq $8, %rax               /* as if kiln_main had been called */
    pushq %rax
    pushq $0x3002               /* RFLAGS: IOPL=3, IF=0 */
    pushq $0x1b                 /* CS: user code, RPL 3 */
    leaq kiln_main(%rip), %rax
    pushq %rax
    movq %r12, %rdi
    movq %rbx, %rsi
    iretq

    .code32
    .globl kiln_entry_pvh
kiln_entry_pvh:
    cli
    movl %cr4, %eax
    orl $0x620, %eax
    movl %eax, %cr4
    movl $kiln_pml4, %eax
    movl %eax, %cr3
    movl $0xc0000080, %ecx      /* EFER.LME */
    rdmsr
    orl $0x100, %eax
    wrmsr
    movl %cr0, %eax
    andl $~0x4, %eax
    orl $0x80000003, %eax       /* PG | MP | PE */
    movl %eax, %cr0
    lgdt kiln_gdtr
    ljmp $0x08, $kiln_pvh64
    .code64
kiln_pvh64:
    movl $0x10, %eax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl %ebx, %ebx
    movl $1, %r12d
    jmp kiln_common64

/* Any exception: say so on COM1, then triple-fault (the VMM sees a shutdown). */
    .globl kiln_fault
kiln_fault:
    leaq kiln_fault_msg(%rip), %rsi
    movl $kiln_fault_msg_len, %ecx
    movw $0x3f8, %dx
    rep outsb
    lidt kiln_null_idtr(%rip)
    ud2

/* kiln.mode jobs sleep with `ud2` in ring 3: #UD (vector 6) is the sleep
 * call. (`int $n` through a DPL-3 gate would be the textbook way, but this
 * platform's ring-0 emulation turns it into a fault; exceptions do reach
 * their handlers.) Skip the ud2, enable interrupts, halt until one arrives,
 * return to ring 3 with its own flags (IF clear again). Any interrupt taken meanwhile lands in
 * kiln_wake (EOI through the moffs form of mov: one instruction, any value
 * ends the interrupt in KVM's LAPIC) or, for the vector the devices' IO-APIC
 * pins use, kiln_wake_dev, which also notes that a device spoke. Five or
 * six emulated instructions per sleep. */
    .globl kiln_sleep
kiln_sleep:
    addq $2, (%rsp)
    sti
    hlt
    iretq
    .globl kiln_wake_dev
kiln_wake_dev:
    movb $1, kiln_dev_irq(%rip)
    .globl kiln_wake
kiln_wake:
    movabs %eax, 0xfee000b0
    iretq

    .section .rodata
kiln_fault_msg:
    .ascii "kiln-firmware: fault\n"
    .set kiln_fault_msg_len, . - kiln_fault_msg
    .p2align 3
kiln_null_idtr:
    .word 0
    .quad 0

/* PVH: XEN_ELFNOTE_PHYS32_ENTRY (18), name "Xen", 32-bit entry address. */
    .section .note.pvh, "a"
    .p2align 2
    .long 4
    .long 8
    .long 18
    .asciz "Xen"
    .quad kiln_entry_pvh

    .section .data.pagetables, "aw"
    .p2align 12
kiln_pml4:
    .quad kiln_pdpt + 0x7
    .fill 511, 8, 0
kiln_pdpt:
    .quad kiln_pd + 0x7
    .quad kiln_pd + 0x1007
    .quad kiln_pd + 0x2007
    .quad kiln_pd + 0x3007
    .fill 508, 8, 0
kiln_pd:                        /* 2048 x 2 MiB: present, writable, user, large */
    .set kiln_i, 0
    .rept 2048
    .quad (kiln_i << 21) | 0x87
    .set kiln_i, kiln_i + 1
    .endr

    .section .data
    .p2align 4
kiln_gdt:
    .quad 0
    .quad 0x00af9a000000ffff    /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff    /* 0x10 kernel data */
    .quad 0x00affa000000ffff    /* 0x18 user code, 64-bit, DPL 3 */
    .quad 0x00cff2000000ffff    /* 0x20 user data, DPL 3 */
    .quad kiln_tss_desc_lo      /* 0x28 TSS */
    .quad kiln_tss_desc_hi
kiln_gdt_end:
    .p2align 3
kiln_gdtr:
    .word kiln_gdt_end - kiln_gdt - 1
    .quad kiln_gdt
    .p2align 3
kiln_idtr:
    .word 256 * 16 - 1
    .quad kiln_idt
    .p2align 4
    .globl kiln_tss
kiln_tss:
    .long 0
    .quad kiln_stack0_top       /* RSP0 */
    .fill 88, 1, 0
    .word 0
    .word 104                   /* I/O bitmap right after the TSS */
    .fill 256, 1, 0             /* ports 0..0x7ff open to ring 3 as well, */
    .byte 0xff                  /* end of bitmap */
    .globl kiln_tss_end
kiln_tss_end:
    .p2align 4
kiln_idt:
    .rept 6                     /* exceptions 0..5 */
    .quad kiln_idt_lo
    .quad kiln_idt_hi
    .endr
    .quad kiln_idt_sleep_lo     /* 6, #UD: the sleep call */
    .quad kiln_idt_sleep_hi
    .rept 25                    /* exceptions 7..31 */
    .quad kiln_idt_lo
    .quad kiln_idt_hi
    .endr
    .rept 16                    /* 0x20..0x2f */
    .quad kiln_idt_wake_lo
    .quad kiln_idt_wake_hi
    .endr
    .quad kiln_idt_dev_lo       /* 0x30: the devices' IO-APIC pins */
    .quad kiln_idt_dev_hi
    .rept 0x100 - 0x31          /* 0x31..0xff (0x40: LAPIC timer, 0xff: spurious) */
    .quad kiln_idt_wake_lo
    .quad kiln_idt_wake_hi
    .endr
    .globl kiln_dev_irq
kiln_dev_irq:
    .byte 0

    .section .bss
    .p2align 4
kiln_stack0:
    .skip 4096
kiln_stack0_top:
    .globl kiln_stack_top
kiln_stack:
    .skip 32768
kiln_stack_top:
