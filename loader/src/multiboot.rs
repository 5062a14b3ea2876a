//! Reading the multiboot (v1) information structure handed over by QEMU.

use core::slice;

/// Value of EAX when a multiboot loader enters us.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

const FLAG_CMDLINE: u32 = 1 << 2;
const FLAG_MODULES: u32 = 1 << 3;
const FLAG_MEMORY_MAP: u32 = 1 << 6;

/// Memory map entry type of usable RAM.
const MEMORY_AVAILABLE: u32 = 1;

/// The parts of the multiboot information that the loader uses.
pub struct MultibootInfo {
    address: u64,
}

/// A boot module (the application ELF passed with `-initrd`).
#[derive(Clone, Copy)]
pub struct Module {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// A usable RAM region.
#[derive(Clone, Copy)]
pub struct RamRegion {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

fn read_u32(address: u64) -> u32 {
    // SAFETY: callers pass addresses inside the multiboot structures (identity-mapped low memory).
    unsafe { core::ptr::read_unaligned(address as *const u32) }
}

fn read_u64(address: u64) -> u64 {
    // SAFETY: as in `read_u32`.
    unsafe { core::ptr::read_unaligned(address as *const u64) }
}

impl MultibootInfo {
    /// Wraps the structure at `address` (from EBX at entry).
    pub fn new(address: u64) -> Self {
        Self { address }
    }

    /// Physical address of the structure.
    pub fn address(&self) -> u64 {
        self.address
    }

    fn flags(&self) -> u32 {
        read_u32(self.address)
    }

    /// The command line (QEMU passes `<kernel file name> <-append text>`), without its NUL.
    pub fn command_line(&self) -> Option<&'static [u8]> {
        if self.flags() & FLAG_CMDLINE == 0 {
            return None;
        }
        let start = u64::from(read_u32(self.address + 16));
        if start == 0 {
            return None;
        }
        let mut len = 0usize;
        // SAFETY: a NUL-terminated string provided by the boot loader.
        while unsafe { *((start as usize + len) as *const u8) } != 0 {
            len += 1;
        }
        // SAFETY: `len` bytes were just read.
        Some(unsafe { slice::from_raw_parts(start as *const u8, len) })
    }

    /// The boot modules.
    pub fn modules(&self) -> impl Iterator<Item = Module> {
        let (count, array) = if self.flags() & FLAG_MODULES != 0 {
            (
                read_u32(self.address + 20),
                u64::from(read_u32(self.address + 24)),
            )
        } else {
            (0, 0)
        };
        (0..u64::from(count)).map(move |index| {
            let entry = array + index * 16;
            Module {
                start: u64::from(read_u32(entry)),
                end: u64::from(read_u32(entry + 4)),
            }
        })
    }

    /// End of the module descriptor array (0 if there is none).
    pub fn modules_array_end(&self) -> u64 {
        if self.flags() & FLAG_MODULES == 0 {
            return 0;
        }
        u64::from(read_u32(self.address + 24)) + 16 * u64::from(read_u32(self.address + 20))
    }

    /// The usable RAM regions from the BIOS memory map.
    pub fn ram_regions(&self) -> impl Iterator<Item = RamRegion> {
        let (mut entry, end) = if self.flags() & FLAG_MEMORY_MAP != 0 {
            let length = u64::from(read_u32(self.address + 44));
            let start = u64::from(read_u32(self.address + 48));
            (start, start + length)
        } else {
            (0, 0)
        };
        core::iter::from_fn(move || {
            while entry < end {
                let size = u64::from(read_u32(entry));
                let base = read_u64(entry + 4);
                let length = read_u64(entry + 12);
                let kind = read_u32(entry + 20);
                entry += size + 4;
                if kind == MEMORY_AVAILABLE && length > 0 {
                    return Some(RamRegion {
                        start: base,
                        end: base + length,
                    });
                }
            }
            None
        })
    }

    /// End of the memory map array (0 if there is none).
    pub fn memory_map_end(&self) -> u64 {
        if self.flags() & FLAG_MEMORY_MAP == 0 {
            return 0;
        }
        u64::from(read_u32(self.address + 48)) + u64::from(read_u32(self.address + 44))
    }
}
