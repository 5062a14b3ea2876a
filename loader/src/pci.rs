//! Assigning PCI BARs that the firmware left unassigned (qboot, QEMU's fast minimal firmware,
//! leaves memory BARs at 0, and hermit-kernel 0.11 expects them programmed). SeaBIOS assigns
//! everything itself; then this only reads a few configuration registers.

const CONFIG_ADDRESS: u16 = 0xCF8;
const CONFIG_DATA: u16 = 0xCFC;
const COMMAND_IO: u32 = 1 << 0;
const COMMAND_MEMORY: u32 = 1 << 1;
/// Memory BARs are placed downwards from here (below the IOAPIC, where SeaBIOS puts them too).
const MMIO_TOP: u64 = 0xFEC0_0000;
/// Lowest address the loader hands out for memory BARs.
const MMIO_BOTTOM: u64 = 0xFE00_0000;
/// I/O BARs are placed upwards from here (as SeaBIOS does).
const IO_START: u32 = 0xC000;
const IO_END: u32 = 0x1_0000;

fn outl(port: u16, value: u32) {
    // SAFETY: PCI configuration mechanism #1; no memory effects.
    unsafe {
        core::arch::asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack))
    };
}

fn inl(port: u16) -> u32 {
    let value: u32;
    // SAFETY: see `outl`.
    unsafe {
        core::arch::asm!("in eax, dx", out("eax") value, in("dx") port, options(nomem, nostack))
    };
    value
}

fn select(device: u32, function: u32, offset: u32) {
    outl(
        CONFIG_ADDRESS,
        0x8000_0000 | (device << 11) | (function << 8) | (offset & 0xFC),
    );
}

fn read(device: u32, function: u32, offset: u32) -> u32 {
    select(device, function, offset);
    inl(CONFIG_DATA)
}

fn write(device: u32, function: u32, offset: u32, value: u32) {
    select(device, function, offset);
    outl(CONFIG_DATA, value);
}

/// Address allocator for BARs.
struct Windows {
    mmio_next: u64,
    io_next: u32,
}

/// Assigns every unassigned BAR of the normal devices on bus 0; returns how many it assigned.
pub fn assign_unassigned_bars() -> u32 {
    let mut windows = Windows {
        mmio_next: MMIO_TOP,
        io_next: IO_START,
    };
    let mut assigned = 0;
    for device in 0..32 {
        if read(device, 0, 0) & 0xFFFF == 0xFFFF {
            continue;
        }
        let multi_function = (read(device, 0, 0x0C) >> 16) & 0x80 != 0;
        for function in 0..if multi_function { 8 } else { 1 } {
            if read(device, function, 0) & 0xFFFF == 0xFFFF {
                continue;
            }
            assigned += assign_function(device, function, &mut windows);
        }
    }
    assigned
}

fn assign_function(device: u32, function: u32, windows: &mut Windows) -> u32 {
    // Only normal devices (header type 0); bridges would need bus numbering.
    if (read(device, function, 0x0C) >> 16) & 0x7F != 0 {
        return 0;
    }
    let mut command_bits = 0;
    let mut assigned = 0;
    let mut bar = 0;
    while bar < 6 {
        let offset = 0x10 + bar * 4;
        let original = read(device, function, offset);
        if original & 1 == 1 {
            bar += 1;
            if original & !0x3 != 0 {
                continue;
            }
            write(device, function, offset, 0xFFFF_FFFF);
            let mask = read(device, function, offset) & 0xFFFC;
            write(device, function, offset, original);
            if mask == 0 {
                continue;
            }
            let size = (!mask & 0xFFFF) + 1;
            let base = windows.io_next.next_multiple_of(size);
            if base + size > IO_END {
                continue;
            }
            windows.io_next = base + size;
            write(device, function, offset, base);
            command_bits |= COMMAND_IO;
            assigned += 1;
            continue;
        }
        let is_64_bit = (original >> 1) & 0x3 == 0x2;
        let high = if is_64_bit {
            read(device, function, offset + 4)
        } else {
            0
        };
        bar += if is_64_bit { 2 } else { 1 };
        if original & !0xF != 0 || high != 0 {
            continue;
        }
        write(device, function, offset, 0xFFFF_FFFF);
        let low_mask = read(device, function, offset) & !0xF;
        write(device, function, offset, original);
        let high_mask = if is_64_bit {
            write(device, function, offset + 4, 0xFFFF_FFFF);
            let mask = read(device, function, offset + 4);
            write(device, function, offset + 4, high);
            mask
        } else {
            0xFFFF_FFFF
        };
        let mask = (u64::from(high_mask) << 32) | u64::from(low_mask);
        if low_mask == 0 && (!is_64_bit || high_mask == 0) {
            continue;
        }
        let size = (!mask).wrapping_add(1);
        let Some(base) = windows
            .mmio_next
            .checked_sub(size)
            .map(|top| top & !(size - 1))
        else {
            continue;
        };
        if base < MMIO_BOTTOM {
            continue;
        }
        windows.mmio_next = base;
        write(device, function, offset, base as u32 | (original & 0xF));
        if is_64_bit {
            write(device, function, offset + 4, 0);
        }
        command_bits |= COMMAND_MEMORY;
        assigned += 1;
    }
    if command_bits != 0 {
        let command = read(device, function, 0x04) & 0xFFFF;
        write(device, function, 0x04, command | command_bits);
    }
    assigned
}
