//! Reading the PVH `hvm_start_info` (Xen's `arch-x86/hvm/start_info.h`, version 1): memory map,
//! command line, modules (the first is the application ELF, QEMU's and Firecracker's initrd) and
//! the ACPI RSDP.

use crate::handover::{Handover, Protocol, Span};
use crate::memory::{c_string, read_u32, read_u64};

/// `hvm_start_info.magic`.
pub const START_INFO_MAGIC: u32 = 0x336E_C578;

/// Size of `hvm_start_info` (version 1).
const START_INFO_SIZE: u64 = 56;
/// Size of one `hvm_modlist_entry`.
const MODULE_ENTRY_SIZE: u64 = 32;
/// Size of one `hvm_memmap_table_entry`.
const MEMORY_MAP_ENTRY_SIZE: u64 = 24;
/// `hvm_memmap_table_entry.type` of usable RAM (the E820 type).
const MEMORY_RAM: u32 = 1;

/// Reads the start information at `address` (EBX at the PVH entry).
pub fn handover(address: u64) -> Result<Handover, &'static str> {
    if read_u32(address) != START_INFO_MAGIC {
        return Err("entered through PVH, but EBX does not point to an hvm_start_info");
    }
    let version = read_u32(address + 4);
    let module_count = u64::from(read_u32(address + 12));
    let module_list = read_u64(address + 16);
    let command_line_address = read_u64(address + 24);
    let rsdp = read_u64(address + 32);
    let mut handover = Handover::new(Protocol::Pvh);
    handover
        .reserved
        .push(Span::with_len(address, START_INFO_SIZE))?;

    if version < 1 {
        return Err("the PVH start info has no memory map (version 0)");
    }
    let memory_map = read_u64(address + 40);
    let memory_map_entries = u64::from(read_u32(address + 48));
    let entries = handover.reserve_array(memory_map, memory_map_entries, MEMORY_MAP_ENTRY_SIZE)?;
    for entry in entries {
        if read_u32(entry + 16) == MEMORY_RAM {
            handover
                .ram
                .push(Span::with_len(read_u64(entry), read_u64(entry + 8)))?;
        }
    }

    if module_count == 0 {
        return Err("no boot module: pass the application ELF as the initrd");
    }
    let entries = handover.reserve_array(module_list, module_count, MODULE_ENTRY_SIZE)?;
    for entry in entries {
        handover.add_module(Span::with_len(read_u64(entry), read_u64(entry + 8)))?;
    }

    if command_line_address != 0 {
        // SAFETY: a NUL-terminated string the VMM placed in RAM (identity-mapped below 4 GiB).
        let command_line = unsafe { c_string(command_line_address) };
        handover.reserved.push(Span::with_len(
            command_line_address,
            command_line.len() as u64 + 1,
        ))?;
        handover.command_line = command_line.trim_ascii();
    }
    handover.rsdp = (rsdp != 0).then_some(rsdp);
    Ok(handover)
}
