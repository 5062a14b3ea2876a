//! Multiboot (v1) header and the 32-bit entry: build identity page tables, enter long mode and call
//! [`crate::loader_main`].
//!
//! Page tables (what hermit-kernel 0.11 expects): the first GiB is identity-mapped, the first 2 MiB
//! with 4 KiB pages (page 0 left unmapped) because the kernel later remaps single 4 KiB frames there
//! (SMP trampoline at 0x8000), the rest with 2 MiB pages because the kernel identity-maps free RAM
//! with 2 MiB frames and accepts an existing mapping only if it is the same 2 MiB frame.

use crate::KERNEL_STACK_SIZE;

/// Size of the loader's own stack.
const LOADER_STACK_SIZE: usize = 0x4000;

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

    .section .text.entry32, "ax"
    .code32
    .global loader_entry32
loader_entry32:
    cli
    cld
    mov dword ptr [multiboot_magic], eax
    mov dword ptr [multiboot_info], ebx
    /* BIOS data area: EBDA segment (read before paging; page 0 stays unmapped later) */
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

    /* clear the four page tables */
    mov edi, offset boot_pml4
    xor eax, eax
    mov ecx, 4 * 4096 / 4
    rep stosd

    mov eax, offset boot_pdpt
    or eax, 3
    mov dword ptr [boot_pml4], eax
    mov eax, offset boot_pd
    or eax, 3
    mov dword ptr [boot_pdpt], eax
    mov eax, offset boot_pt
    or eax, 3
    mov dword ptr [boot_pd], eax
    /* PD[1..512]: 2 MiB pages 2 MiB..1 GiB */
    mov ecx, 1
2:
    mov eax, ecx
    shl eax, 21
    or eax, 0x83
    mov dword ptr [boot_pd + ecx * 8], eax
    inc ecx
    cmp ecx, 512
    jb 2b
    /* PT[1..512]: 4 KiB pages 4 KiB..2 MiB */
    mov ecx, 1
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
    mov edi, dword ptr [multiboot_info]
    mov esi, dword ptr [multiboot_magic]
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
multiboot_magic: .long 0
multiboot_info: .long 0
    .global ebda_segment
ebda_segment: .long 0

    .section .bss.page_tables, "aw", @nobits
    .align 4096
boot_pml4: .skip 4096
boot_pdpt: .skip 4096
boot_pd: .skip 4096
boot_pt: .skip 4096
    .global kernel_boot_stack
kernel_boot_stack: .skip {kernel_stack_size}
loader_stack: .skip {loader_stack_size}
loader_stack_top:
    "#,
    loader_main = sym crate::loader_main,
    kernel_stack_size = const KERNEL_STACK_SIZE,
    loader_stack_size = const LOADER_STACK_SIZE,
);

unsafe extern "C" {
    /// EBDA segment read from the BIOS data area (0x40E) before paging was enabled.
    static ebda_segment: u32;
    /// Bottom of the kernel's boot stack (`KERNEL_STACK_SIZE` bytes, page aligned).
    static mut kernel_boot_stack: u8;
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
