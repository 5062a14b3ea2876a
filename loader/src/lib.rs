//! hermit-loader: a minimal loader that boots a hermit-kernel 0.11 application ELF, entered through
//! multiboot v1 or PVH.
//!
//! Two builds share this library: `hermit-loader` (`src/multiboot_main.rs`, a flat multiboot image
//! for QEMU's `-kernel`) and `hermit-loader-pvh` (`src/pvh_main.rs`, an ELF with the PVH note for
//! QEMU's `-kernel`, Firecracker and Cloud Hypervisor). The VMM loads the application ELF as the
//! first module (`-initrd`). The loader places the ELF in the lowest free RAM (2 MiB aligned),
//! loads and relocates it with `hermit-entry`, describes RAM / command line / ACPI RSDP in a device
//! tree, and jumps to the kernel's `_start` with the boot information in `rdi`, `esi = 0` (CPU 0)
//! and `rsp` at the bottom of a `KERNEL_STACK_SIZE` boot stack. On failure it prints the reason
//! and exits QEMU through the `isa-debug-exit` device (status 5) if present.

#![no_std]

mod acpi;
mod compressed;
mod entry;
mod fdt;
mod handover;
mod memory;
mod multiboot;
mod pci;
mod pvh;
mod serial;

use core::mem::MaybeUninit;
use core::num::{NonZeroU16, NonZeroU64};

use compressed::Compressed;
use handover::{Handover, Protocol, Span};
use hermit_entry::boot_info::{BootInfo, HardwareInfo, PlatformInfo, RawBootInfo};
use hermit_entry::elf::KernelObject;
use serial::{print, print_dec, print_hex};

/// hermit-kernel 0.11's `KERNEL_STACK_SIZE` (its `_start` adds this minus a 16-byte marker to `rsp`).
pub const KERNEL_STACK_SIZE: usize = 0x8000;

/// 2 MiB, the alignment of the kernel image.
const LARGE_PAGE_SIZE: u64 = 0x20_0000;

/// 4 KiB.
const PAGE_SIZE: u64 = 0x1000;

/// End of the identity mapping the kernel starts with (the loader's own mapping reaches 4 GiB).
const IDENTITY_MAPPED_END: u64 = 0x4000_0000;

/// Size of the device tree buffer.
const FDT_CAPACITY: usize = 4096;

/// Longest kernel command line (Linux's `COMMAND_LINE_SIZE` on x86).
const COMMAND_LINE_CAPACITY: usize = 2048;

/// Device tree passed to the kernel (stays below the kernel image, so the kernel never reuses it).
static mut FDT_BLOB: [u8; FDT_CAPACITY] = [0; FDT_CAPACITY];

/// The command line, copied below the kernel image (the VMM may have put it where the kernel's
/// heap will be).
static mut COMMAND_LINE: [u8; COMMAND_LINE_CAPACITY] = [0; COMMAND_LINE_CAPACITY];

/// Boot information passed to the kernel.
static mut RAW_BOOT_INFO: MaybeUninit<RawBootInfo> = MaybeUninit::uninit();

unsafe extern "C" {
    static __load_start: u8;
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
    print(": ");
    serial::print_display(&info.message());
    print("\n");
    halt(2)
}

fn print_range(label: &str, span: Span) {
    print(label);
    print_hex(span.start);
    print("..");
    print_hex(span.end);
    print("\n");
}

/// Prints the kernel command line (the one place that does, so that redaction stays in one spot).
fn print_command_line(command_line: &str) {
    print("loader: command line: ");
    print_redacted_command_line(command_line);
    print("\n");
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

/// Copies `command_line` below the kernel image; returns the copy.
fn keep_command_line(command_line: &[u8]) -> &'static str {
    let buffer = &raw mut COMMAND_LINE;
    // SAFETY: single-threaded; the buffer is only written here, once.
    let buffer = unsafe { &mut *buffer };
    let Some(copy) = buffer.get_mut(..command_line.len()) else {
        fail("the command line is longer than 2048 bytes");
    };
    copy.copy_from_slice(command_line);
    match core::str::from_utf8(copy) {
        Ok(text) => text,
        Err(_) => fail("the command line is not UTF-8"),
    }
}

/// Writes the device tree; returns its address.
fn build_device_tree(
    handover: &Handover,
    bootargs: &[u8],
    rsdp: Option<u64>,
) -> Result<u64, fdt::FdtFull> {
    let mut writer = fdt::FdtWriter::new();
    let mut hex = [0u8; 16];
    writer.begin_node(&[b""])?;
    let compatible: &[u8] = match handover.protocol {
        Protocol::Multiboot(_) => b"hermit,multiboot",
        Protocol::Pvh => b"hermit,pvh",
    };
    writer.property_string("compatible", compatible)?;
    writer.property_u32("#address-cells", 2)?;
    writer.property_u32("#size-cells", 2)?;
    writer.begin_node(&[b"chosen"])?;
    writer.property_string("bootargs", bootargs)?;
    writer.end_node()?;
    for region in handover.ram.as_slice() {
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
    let blob = &raw mut FDT_BLOB;
    // SAFETY: single-threaded; the blob is only written here.
    let blob = unsafe { &mut *blob };
    writer.finish(blob)?;
    Ok(blob.as_ptr() as u64)
}

/// What the boot protocol handed over, by the value the entry code found in EAX.
fn read_handover(info_address: u64, magic: u32) -> Handover {
    let handover = match magic {
        multiboot::BOOTLOADER_MAGIC => multiboot::handover(info_address),
        entry::PVH_MARKER => pvh::handover(info_address),
        _ => fail("entered neither by a multiboot boot loader nor through PVH"),
    };
    let mut handover = handover.unwrap_or_else(|reason| fail(reason));
    // Linker-defined symbols; only their addresses are used.
    let loader = Span {
        start: (&raw const __load_start) as u64,
        end: (&raw const __bss_end) as u64,
    };
    handover
        .reserved
        .push(loader)
        .unwrap_or_else(|reason| fail(reason));
    handover
}

/// Where the kernel image goes: its fixed address, or the lowest free 2 MiB-aligned RAM at or above
/// the loader's end plus the module's size.
///
/// That floor gives the kernel the same place under both entries: QEMU's multiboot puts the module
/// right after the loader, PVH VMMs put it near the top of RAM. It matters because kernel 0.11
/// sizes its heap from the image's end address (it subtracts the whole range below the image end
/// from the RAM it counts above it): a lower image makes the heap bigger and leaves less memory for
/// task stacks and device queues, and the microvm variant at 256 MiB then fails to allocate a
/// task stack.
///
/// `elf_len` is the ELF's length (expanded, if the module is compressed): the same ELF gets the
/// same place whether or not it came compressed.
fn place_kernel(handover: &Handover, kernel: &KernelObject<'_>, size: u64, elf_len: u64) -> u64 {
    let floor = (&raw const __bss_end) as u64 + elf_len;
    match kernel.start_addr() {
        Some(fixed) if handover.is_free(Span::with_len(fixed, size), IDENTITY_MAPPED_END) => fixed,
        Some(_) => fail(
            "the non-relocatable ELF overlaps the loader, its modules, the expanded module or non-RAM",
        ),
        None => handover
            .lowest_free(size, LARGE_PAGE_SIZE, floor, IDENTITY_MAPPED_END)
            .unwrap_or_else(|| fail("not enough free RAM below 1 GiB for the application image")),
    }
}

/// Expands a compressed boot module into the highest free RAM below 1 GiB (out of the way of the
/// kernel image, which goes low; the kernel later reuses that RAM as heap) and returns the ELF.
fn expand(handover: &mut Handover, module: &Compressed<'_>) -> &'static [u8] {
    let len = module.expanded_len;
    let limit = handover.ram_end().min(IDENTITY_MAPPED_END);
    let start = handover
        .highest_free(len, PAGE_SIZE, limit)
        .unwrap_or_else(|| fail("not enough free RAM below 1 GiB to expand the boot module"));
    let span = Span::with_len(start, len);
    handover
        .reserved
        .push(span)
        .unwrap_or_else(|reason| fail(reason));
    // SAFETY: `highest_free` found this range in identity-mapped RAM that nothing uses, and it is
    // now reserved, so the kernel image is not placed over it.
    let out = unsafe { core::slice::from_raw_parts_mut(start as *mut u8, len as usize) };
    module
        .expand_into(out)
        .unwrap_or_else(|error| fail(error.message()));
    print_range("loader: expanded the LZ4 module to ", span);
    out
}

/// Called by the entry code in long mode with the protocol's information address and EAX.
extern "C" fn loader_main(info_address: u32, magic: u32) -> ! {
    print("loader: hermit-loader ");
    print(env!("CARGO_PKG_VERSION"));
    print("\n");
    let mut handover = read_handover(u64::from(info_address), magic);
    print(match handover.protocol {
        Protocol::Multiboot(_) => "loader: entered through multiboot\n",
        Protocol::Pvh => "loader: entered through PVH\n",
    });
    print_range("loader: boot module at ", handover.module);
    // SAFETY: the module lies in RAM the VMM loaded it into, identity-mapped below 4 GiB.
    let module_bytes = unsafe {
        core::slice::from_raw_parts(
            handover.module.start as *const u8,
            (handover.module.end - handover.module.start) as usize,
        )
    };
    let elf_bytes = match Compressed::parse(module_bytes) {
        None => module_bytes,
        Some(Ok(compressed)) => expand(&mut handover, &compressed),
        Some(Err(error)) => fail(error.message()),
    };
    // hermit-entry indexes the ELF without checks; this catches the usual mistake (a wrong initrd).
    if elf_bytes.get(..4) != Some(b"\x7fELF".as_slice()) {
        fail("the boot module is not an ELF file: pass the application ELF as the initrd");
    }
    let kernel = KernelObject::parse(elf_bytes).unwrap_or_else(|error| {
        print("loader: error: ");
        serial::print_display(&error);
        print("\n");
        halt(2)
    });
    let size = kernel.mem_size() as u64;
    let start = place_kernel(&handover, &kernel, size, elf_bytes.len() as u64);
    // SAFETY: `place_kernel` checked that this is free, identity-mapped RAM.
    let memory =
        unsafe { core::slice::from_raw_parts_mut(start as *mut MaybeUninit<u8>, size as usize) };
    let loaded = kernel.load_kernel(memory, start);
    let image = Span {
        start: loaded.load_info.kernel_image_addr_range.start,
        end: loaded.load_info.kernel_image_addr_range.end,
    };
    print_range("loader: kernel image at ", image);

    let rsdp = handover
        .rsdp
        .or_else(|| acpi::find_rsdp(entry::ebda_address()));
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

    let command_line = keep_command_line(handover.command_line);
    print_command_line(command_line);

    let device_tree = build_device_tree(&handover, command_line.as_bytes(), rsdp)
        .unwrap_or_else(|_| fail("device tree does not fit its buffer"));
    let command_line = (!command_line.is_empty()).then_some(command_line);
    let platform_info = match handover.protocol {
        Protocol::Multiboot(address) => PlatformInfo::Multiboot {
            command_line,
            multiboot_info_addr: NonZeroU64::new(address).unwrap_or(NonZeroU64::MIN),
        },
        // Kernel 0.11 reads the command line from the device tree's `/chosen/bootargs` here.
        Protocol::Pvh => PlatformInfo::Fdt,
    };
    let boot_info = BootInfo {
        hardware_info: HardwareInfo {
            phys_addr_range: 0..handover.ram_end(),
            serial_port_base: NonZeroU16::new(serial::COM1),
            device_tree: NonZeroU64::new(device_tree),
        },
        load_info: loaded.load_info,
        platform_info,
    };
    let raw_boot_info = &raw mut RAW_BOOT_INFO;
    // SAFETY: single-threaded; written once right before the kernel starts.
    let raw_boot_info =
        unsafe { (*raw_boot_info).write(RawBootInfo::from(boot_info)) as *const RawBootInfo };
    let stack_bottom = entry::kernel_stack_bottom();
    entry::unmap_what_the_kernel_does_not_expect();

    print("loader: jumping to ");
    print_hex(loaded.entry_point);
    print("\n");
    // SAFETY: hermit's entry contract: rdi = boot info, esi = CPU id 0, rsp = boot stack bottom.
    unsafe {
        core::arch::asm!(
            "mov rsp, {stack}",
            "xor ebp, ebp",
            "jmp {entry}",
            stack = in(reg) stack_bottom,
            entry = in(reg) loaded.entry_point,
            in("rdi") raw_boot_info,
            in("esi") 0u32,
            options(noreturn),
        )
    }
}
