//! hermit-loader: a minimal multiboot (v1) loader that boots a hermit-kernel 0.11 application ELF.
//!
//! QEMU loads this flat image at 1 MiB (`-kernel`) and the application ELF as the first module
//! (`-initrd`). The loader places the ELF above everything it was given (2 MiB aligned), relocates
//! it, describes RAM / command line / ACPI RSDP in a device tree, and jumps to the kernel's `_start`
//! with the boot information in `rdi`, `esi = 0` (CPU 0) and `rsp` at the bottom of a
//! `KERNEL_STACK_SIZE` boot stack. On failure it prints the reason and exits QEMU through the
//! `isa-debug-exit` device (status 5) if present.

#![no_std]
#![no_main]

mod acpi;
mod boot_info;
mod elf;
mod entry;
mod fdt;
mod multiboot;
mod pci;
mod serial;

use core::mem::MaybeUninit;

use boot_info::{BootInfo, RawBootInfo};
use elf::KernelElf;
use multiboot::MultibootInfo;
use serial::{print, print_dec, print_hex};

/// hermit-kernel 0.11's `KERNEL_STACK_SIZE` (its `_start` adds this minus a 16-byte marker to `rsp`).
pub const KERNEL_STACK_SIZE: usize = 0x8000;

/// 4 KiB.
const PAGE_SIZE: u64 = 0x1000;

/// 2 MiB, the alignment of the kernel image.
const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// End of the identity mapping built by the entry code.
const IDENTITY_MAPPED_END: u64 = 0x4000_0000;

/// Size of the device tree buffer.
const FDT_CAPACITY: usize = 4096;

/// Device tree passed to the kernel (stays below the kernel image, so the kernel never reuses it).
static mut FDT_BLOB: [u8; FDT_CAPACITY] = [0; FDT_CAPACITY];

/// Boot information passed to the kernel.
static mut RAW_BOOT_INFO: MaybeUninit<RawBootInfo> = MaybeUninit::uninit();

unsafe extern "C" {
    static __bss_end: u8;
}

fn fail(reason: &str) -> ! {
    print("loader: error: ");
    print(reason);
    print("\n");
    halt(2)
}

/// Exits QEMU through `isa-debug-exit` (status `2 * code + 1`) if present, else halts forever.
fn halt(code: u32) -> ! {
    // SAFETY: port I/O; without the device the write is ignored.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") 0xF4u16, in("eax") code, options(nomem, nostack))
    };
    loop {
        // SAFETY: interrupts are off; this stops the CPU.
        unsafe { core::arch::asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    print("loader: panic");
    if let Some(location) = info.location() {
        print(" at ");
        print(location.file());
        print(":");
        print_dec(u64::from(location.line()));
    }
    print("\n");
    halt(2)
}

/// Drops the first word (QEMU passes `<kernel file name> <-append text>`) and surrounding blanks.
fn kernel_command_line(raw: &[u8]) -> &[u8] {
    let rest = match raw.iter().position(|&byte| byte == b' ') {
        Some(space) => &raw[space + 1..],
        None => &[],
    };
    rest.trim_ascii()
}

/// Prints the command line with its secrets as `<redacted>` (the serial console ends up in log
/// files): the value of `admin-token=` and the credentials of `kv=scheme://user:password@host`.
/// Words are split at blanks outside quotes, as the kernel splits them.
fn print_redacted_command_line(line: &str) {
    let mut quote = None;
    let mut start = 0;
    for (index, byte) in line.bytes().chain(Some(b' ')).enumerate() {
        match quote {
            Some(open) if byte == open => quote = None,
            None if byte == b'"' || byte == b'\'' => quote = Some(byte),
            None if byte.is_ascii_whitespace() => {
                let word = line.get(start..index).unwrap_or("");
                let bare = word.trim_start_matches(['"', '\'']);
                let userinfo = bare
                    .strip_prefix("kv=")
                    .and_then(|url| Some((url.split_once("://")?.0, url.rsplit_once('@')?.1)));
                if bare.starts_with("admin-token=") {
                    print("admin-token=<redacted>");
                } else if let Some((scheme, host)) = userinfo {
                    print("kv=");
                    print(scheme);
                    print("://<redacted>@");
                    print(host);
                } else {
                    print(word);
                }
                print(if index < line.len() { " " } else { "" });
                start = index + 1;
            }
            _ => {}
        }
    }
}

fn print_range(label: &str, start: u64, end: u64) {
    print(label);
    print_hex(start);
    print("..");
    print_hex(end);
    print("\n");
}

/// Writes the device tree; returns its address.
fn build_device_tree(
    info: &MultibootInfo,
    bootargs: &[u8],
    rsdp: Option<u64>,
) -> Result<u64, fdt::FdtFull> {
    let mut writer = fdt::FdtWriter::new();
    let mut hex = [0u8; 16];
    writer.begin_node(&[b""])?;
    writer.property_string("compatible", b"hermit,multiboot")?;
    writer.property_u32("#address-cells", 2)?;
    writer.property_u32("#size-cells", 2)?;
    writer.begin_node(&[b"chosen"])?;
    writer.property_string("bootargs", bootargs)?;
    writer.end_node()?;
    for region in info.ram_regions() {
        // The kernel's frame allocator wants page-aligned ranges.
        let start = region.start.next_multiple_of(PAGE_SIZE);
        let end = region.end & !(PAGE_SIZE - 1);
        if end <= start {
            continue;
        }
        writer.begin_node(&[b"memory@", fdt::hex_digits(start, &mut hex)])?;
        writer.property_string("device_type", b"memory")?;
        writer.property_reg(start, end - start)?;
        writer.end_node()?;
    }
    if let Some(rsdp) = rsdp {
        writer.begin_node(&[b"hermit,rsdp@", fdt::hex_digits(rsdp, &mut hex)])?;
        writer.property_reg(rsdp, 1)?;
        writer.end_node()?;
    }
    writer.end_node()?;
    // SAFETY: single-threaded; the blob is only written here.
    let blob = unsafe { &mut *(&raw mut FDT_BLOB) };
    writer.finish(blob)?;
    Ok(blob.as_ptr() as u64)
}

extern "C" fn loader_main(multiboot_info: u32, magic: u32) -> ! {
    print("loader: hermit-loader ");
    print(env!("CARGO_PKG_VERSION"));
    print("\n");
    if magic != multiboot::BOOTLOADER_MAGIC {
        fail("not started by a multiboot boot loader");
    }
    let info = MultibootInfo::new(u64::from(multiboot_info));

    let Some(module) = info.modules().next() else {
        fail("no boot module: pass the application ELF with -initrd");
    };
    print_range("loader: application ELF at ", module.start, module.end);
    // SAFETY: the module was loaded by the boot loader into identity-mapped RAM.
    let elf_bytes = unsafe {
        core::slice::from_raw_parts(
            module.start as *const u8,
            (module.end - module.start) as usize,
        )
    };
    let kernel = KernelElf::parse(elf_bytes).unwrap_or_else(|reason| fail(reason));

    // Everything the boot loader handed over lies below `used_end`.
    let raw_command_line = info.command_line();
    let used_end = [
        (&raw const __bss_end) as u64,
        info.address() + 0x80,
        raw_command_line.map_or(0, |line| line.as_ptr() as u64 + line.len() as u64 + 1),
        info.modules_array_end(),
        info.memory_map_end(),
        info.modules().map(|module| module.end).max().unwrap_or(0),
    ]
    .into_iter()
    .max()
    .unwrap_or(0);

    let bias = if kernel.is_relocatable() {
        used_end
            .saturating_sub(kernel.vaddr_start)
            .next_multiple_of(LARGE_PAGE_SIZE)
    } else if kernel.vaddr_start >= used_end {
        0
    } else {
        fail("the non-relocatable ELF overlaps the loader or its modules");
    };
    let image_start = bias + kernel.vaddr_start;
    let image_end = bias + kernel.vaddr_end;
    let fits_in_ram = info
        .ram_regions()
        .any(|region| region.start <= image_start && image_end <= region.end);
    if !fits_in_ram || image_end > IDENTITY_MAPPED_END {
        fail("not enough RAM below 1 GiB for the application image");
    }

    // SAFETY: the target range is free RAM above everything in use, identity-mapped.
    let loaded = unsafe { kernel.load(bias) }.unwrap_or_else(|reason| fail(reason));
    print_range(
        "loader: kernel image at ",
        loaded.image.start,
        loaded.image.end,
    );
    print("loader: relocations applied: ");
    print_dec(loaded.relocations);
    print("\n");

    let rsdp = acpi::find_rsdp(entry::ebda_address());
    match rsdp {
        Some(address) => {
            print("loader: ACPI RSDP at ");
            print_hex(address);
            print("\n");
        }
        None => print("loader: no ACPI RSDP found\n"),
    }

    let assigned_bars = pci::assign_unassigned_bars();
    if assigned_bars > 0 {
        print("loader: assigned PCI BARs: ");
        print_dec(u64::from(assigned_bars));
        print("\n");
    }

    let command_line = raw_command_line.map(kernel_command_line).unwrap_or(&[]);
    let command_line_str = match core::str::from_utf8(command_line) {
        Ok(text) => text,
        Err(_) => fail("the command line is not UTF-8"),
    };
    print("loader: command line: ");
    print_redacted_command_line(command_line_str);
    print("\n");

    let device_tree = build_device_tree(&info, command_line, rsdp)
        .unwrap_or_else(|_| fail("device tree does not fit its buffer"));
    let ram_end = info
        .ram_regions()
        .map(|region| region.end)
        .max()
        .unwrap_or(0);
    let boot_info = BootInfo {
        phys_addr_range: 0..ram_end,
        device_tree,
        kernel_image: loaded.image.clone(),
        tls_info: loaded.tls_info,
        command_line: (!command_line_str.is_empty()).then_some(command_line_str),
        multiboot_info: info.address(),
    };
    // SAFETY: single-threaded; written once right before the kernel starts.
    let raw_boot_info =
        unsafe { (*(&raw mut RAW_BOOT_INFO)).write(boot_info.to_raw()) as *const RawBootInfo };
    let stack_bottom = entry::kernel_stack_bottom();

    print("loader: jumping to ");
    print_hex(loaded.entry);
    print("\n");
    // SAFETY: hermit's entry contract: rdi = boot info, esi = CPU id 0, rsp = boot stack bottom.
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "jmp {entry}",
            stack = in(reg) stack_bottom,
            entry = in(reg) loaded.entry,
            in("rdi") raw_boot_info,
            in("esi") 0u32,
            options(noreturn),
        )
    }
}
