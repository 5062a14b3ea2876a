//! Reading the multiboot (v1) information structure handed over by QEMU.

use crate::handover::{Handover, Protocol, Span};
use crate::memory::{c_string, read_u32, read_u64};

/// Value of EAX when a multiboot loader enters us.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODULES: u32 = 1 << 3;
const FLAG_MEMORY_MAP: u32 = 1 << 6;

/// Size of the information structure (up to the fields QEMU fills).
const INFO_SIZE: u64 = 0x80;
/// Size of one module descriptor.
const MODULE_ENTRY_SIZE: u64 = 16;

/// Memory map entry type of usable RAM.
const MEMORY_AVAILABLE: u32 = 1;

/// Drops the first word (QEMU passes `<kernel file name> <-append text>`) and surrounding blanks.
fn kernel_command_line(raw: &'static [u8]) -> &'static [u8] {
    let rest = match raw.iter().position(|&byte| byte == b' ') {
        Some(space) => raw.get(space + 1..).unwrap_or(&[]),
        None => &[],
    };
    rest.trim_ascii()
}

/// Reads the information structure at `address` (EBX at the multiboot entry).
pub fn handover(address: u64) -> Result<Handover, &'static str> {
    let mut handover = Handover::new(Protocol::Multiboot(address));
    handover.reserved.push(Span::with_len(address, INFO_SIZE))?;
    let flags = read_u32(address);

    if flags & FLAG_CMDLINE != 0 {
        let start = u64::from(read_u32(address + 16));
        if start != 0 {
            // SAFETY: a NUL-terminated string provided by the boot loader.
            let raw = unsafe { c_string(start) };
            handover
                .reserved
                .push(Span::with_len(start, raw.len() as u64 + 1))?;
            handover.command_line = kernel_command_line(raw);
        }
    }

    if flags & FLAG_MODULES != 0 {
        let count = u64::from(read_u32(address + 20));
        let array = u64::from(read_u32(address + 24));
        for entry in handover.reserve_array(array, count, MODULE_ENTRY_SIZE)? {
            handover.add_module(Span {
                start: u64::from(read_u32(entry)),
                end: u64::from(read_u32(entry + 4)),
            })?;
        }
    }
    if handover.module.end <= handover.module.start {
        return Err("no boot module: pass the application ELF with -initrd");
    }

    if flags & FLAG_MEMORY_MAP != 0 {
        let length = u64::from(read_u32(address + 44));
        let mut entry = u64::from(read_u32(address + 48));
        let end = entry + length;
        handover.reserved.push(Span { start: entry, end })?;
        while entry < end {
            let size = u64::from(read_u32(entry));
            let base = read_u64(entry + 4);
            let length = read_u64(entry + 12);
            if read_u32(entry + 20) == MEMORY_AVAILABLE {
                handover.ram.push(Span::with_len(base, length))?;
            }
            entry += size + 4;
        }
    }
    Ok(handover)
}
