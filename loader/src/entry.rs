//! The entry points (multiboot v1 and PVH, both 32-bit protected mode): build identity page
//! tables, enter long mode and call [`crate::loader_main`].
//!
//! Page tables (what hermit-kernel 0.11 expects when it starts): the first GiB is identity-mapped,
//! the first 2 MiB with 4 KiB pages (page 0 unmapped) because the kernel later remaps single 4 KiB
//! frames there (SMP trampoline at 0x8000), the rest with 2 MiB pages because the kernel
//! identity-maps free RAM with 2 MiB frames and accepts an existing mapping only if it is the same
//! 2 MiB frame. While the loader runs, page 0 and 1..4 GiB are mapped too (see
//! [`unmap_what_the_kernel_does_not_expect`]).

use crate::KERNEL_STACK_SIZE;

/// What the PVH entry puts in EAX for [`crate::loader_main`] (the `hvm_start_info` magic).
pub const PVH_MARKER: u32 = crate::pvh::START_INFO_MAGIC;

/// Size of the loader's own stack.
const LOADER_STACK_SIZE: usize = 0x4000;

/// The multiboot (v1) header: only the multiboot build (`src/multiboot_main.rs`) carries it,
/// because QEMU's `-kernel` tries multiboot before PVH and would never take the PVH note otherwise.
#[macro_export]
macro_rules! multiboot_header {
    () => {
        core::arch::global_asm!(
            r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010003          /* page-align modules | memory info | a.out kludge */

    .section .multiboot_header, "a"
    .align 4
multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long multiboot_header             /* header_addr */
    .long __load_start                 /* load_addr */
    .long __load_end                   /* load_end_addr */
    .long __bss_end                    /* bss_end_addr */
    .long loader_entry32               /* entry_addr */
"#
        );
    };
}

core::arch::global_asm!(
    r#"
    /* PVH: Xen's ELF note XEN_ELFNOTE_PHYS32_ENTRY (18) names the 32-bit entry point. */
    .section .note.Xen, "a", @note
    .align 4
    .long 4                            /* name size: "Xen" and its NUL */
    .long 4                            /* descriptor size */
    .long 18                           /* XEN_ELFNOTE_PHYS32_ENTRY */
    .asciz "Xen"
    .long pvh_entry32

    .section .text.entry32, "ax"
    .code32
    /* PVH entry: 32-bit protected mode, paging off, EBX = hvm_start_info; EAX is undefined, so
       it gets a marker that tells loader_main which structure EBX points to. */
    .global pvh_entry32
pvh_entry32:
    mov eax, {pvh_marker}
    .global loader_entry32
    /* Multiboot entry: EAX = multiboot magic, EBX = multiboot information. */
loader_entry32:
    cli
    cld
    mov dword ptr [boot_magic], eax
    mov dword ptr [boot_info_address], ebx
    /* BIOS data area: EBDA segment (0 without a BIOS, e.g. under Firecracker) */
    movzx eax, word ptr [0x40E]
    mov dword ptr [ebda_segment], eax
    mov esp, offset loader_stack_top

    /* long mode available? */
    mov eax, 0x80000000
    cpuid
    cmp eax, 0x80000001
    jb 8f
    mov eax, 0x80000001
    cpuid
    test edx, 1 << 29
    jz 8f

    /* clear the page tables (PML4, PDPT, four PDs, PT) */
    mov edi, offset boot_pml4
    xor eax, eax
    mov ecx, 7 * 4096 / 4
    rep stosd

    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    /* PDPT[0..4] -> the four PDs (0..4 GiB; entries 1..4 are removed before the kernel starts) */
    mov ecx, 0
1:
    mov eax, ecx
    shl eax, 12
    add eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt + ecx * 8], eax
    inc ecx
    cmp ecx, 4
    jb 1b
    mov eax, offset boot_pt
    or eax, 3
    mov dword ptr [boot_pd], eax
    /* PD[1..2048]: 2 MiB pages 2 MiB..4 GiB */
    mov ecx, 1
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 2048
    jb 2b
    /* PT[0..512]: 4 KiB pages 0..2 MiB (page 0 is unmapped again before the kernel starts) */
    mov ecx, 0
3:
    mov eax, ecx
    shl eax, 12
    or eax, 3
    mov dword ptr [boot_pt + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jb 3b

    mov eax, offset boot_pml4
    mov cr3, eax
    /* CR4: PAE | OSFXSR | OSXMMEXCPT (the kernel's early Rust code uses SSE) */
    mov eax, cr4
    or eax, (1 << 5) | (1 << 9) | (1 << 10)
    mov cr4, eax
    /* EFER.LME */
    mov ecx, 0xC0000080
    rdmsr
    or eax, 1 << 8
    wrmsr
    /* CR0: paging, MP; no EM, caches on */
    mov eax, cr0
    and eax, ~((1 << 2) | (1 << 29) | (1 << 30))
    or eax, (1 << 31) | (1 << 1)
    mov cr0, eax

    lgdt [boot_gdt_pointer]
    mov eax, offset loader_entry64
    push 0x08
    push eax
    retf

8:  /* no long mode: say so on COM1 and stop */
    mov esi, offset no_long_mode_message
    mov dx, 0x3F8
9:
    lodsb
    test al, al
    jz 7f
    out dx, al
    jmp 9b
7:
    hlt
    jmp 7b

    .code64
loader_entry64:
    mov ax, 0x10
    mov ds, ax
    mov es, ax
    mov ss, ax
    xor eax, eax
    mov fs, ax
    mov gs, ax
    mov rsp, offset loader_stack_top
    mov edi, dword ptr [boot_info_address]
    mov esi, dword ptr [boot_magic]
    call {loader_main}
6:
    hlt
    jmp 6b

    .section .rodata.boot_gdt, "a"
    .align 16
boot_gdt:
    .quad 0
    .quad 0x00AF9A000000FFFF           /* 0x08: 64-bit code */
    .quad 0x00CF92000000FFFF           /* 0x10: data */
boot_gdt_pointer:
    .word boot_gdt_pointer - boot_gdt - 1
    .long boot_gdt
no_long_mode_message:
    .asciz "loader: CPU has no long mode\n"

    .section .data.boot_vars, "aw"
    .align 8
boot_magic: .long 0
boot_info_address: .long 0
    .global ebda_segment
ebda_segment: .long 0

    .section .bss.page_tables, "aw", @nobits
    .align 4096
boot_pml4: .skip 4096
    .global boot_pdpt
boot_pdpt: .skip 4096
    .global boot_pt
boot_pd: .skip 4 * 4096
boot_pt: .skip 4096
    .global kernel_boot_stack
kernel_boot_stack: .skip {kernel_stack_size}
loader_stack: .skip {loader_stack_size}
loader_stack_top:
    "#,
    loader_main = sym crate::loader_main,
    kernel_stack_size = const KERNEL_STACK_SIZE,
    loader_stack_size = const LOADER_STACK_SIZE,
    pvh_marker = const PVH_MARKER,
);

unsafe extern "C" {
    /// EBDA segment read from the BIOS data area (0x40E) before paging was enabled.
    static ebda_segment: u32;
    /// Bottom of the kernel's boot stack (`KERNEL_STACK_SIZE` bytes, page aligned).
    static mut kernel_boot_stack: u8;
    /// The page directory pointer table of the first 512 GiB.
    static mut boot_pdpt: [u64; 512];
    /// The page table of the first 2 MiB.
    static mut boot_pt: [u64; 512];
}

/// Leaves the mapping the kernel expects: unmaps page 0 and everything above 1 GiB
/// ([`crate::IDENTITY_MAPPED_END`]). The loader maps them to read what the boot protocol put
/// there (PVH structures in page 0, modules near the top of RAM).
pub fn unmap_what_the_kernel_does_not_expect() {
    // SAFETY: the loader runs on one CPU; neither page 0 nor anything above 1 GiB is used after
    // this point (the kernel image, its stack, boot information and device tree lie elsewhere).
    let (pdpt, pt) = (&raw mut boot_pdpt, &raw mut boot_pt);
    unsafe {
        for entry in (*pdpt).iter_mut().skip(1) {
            *entry = 0;
        }
        (*pt)[0] = 0;
        core::arch::asm!("mov {0}, cr3", "mov cr3, {0}", out(reg) _, options(nostack));
    }
}

/// Physical address of the EBDA (0 if the BIOS did not report one).
pub fn ebda_address() -> u64 {
    // SAFETY: written once by the entry code before Rust runs.
    u64::from(unsafe { ebda_segment }) << 4
}

/// Bottom (lowest address) of the kernel boot stack.
pub fn kernel_stack_bottom() -> u64 {
    (&raw mut kernel_boot_stack) as u64
}
