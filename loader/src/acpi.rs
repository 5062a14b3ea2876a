//! Finding the ACPI RSDP the way the kernel would (EBDA, then 0xE0000..0x100000), so that the
//! kernel gets it from the device tree and does not remap low memory itself.

const SIGNATURE: &[u8; 8] = b"RSD PTR ";

fn checksum_ok(address: u64, len: usize) -> bool {
    // SAFETY: low memory (BIOS area) is identity-mapped.
    let bytes = unsafe { core::slice::from_raw_parts(address as *const u8, len) };
    bytes.iter().fold(0u8, |sum, &byte| sum.wrapping_add(byte)) == 0
}

fn scan(start: u64, end: u64) -> Option<u64> {
    (start..end).step_by(16).find(|&address| {
        // SAFETY: as in `checksum_ok`.
        let signature = unsafe { &*(address as *const [u8; 8]) };
        if signature != SIGNATURE || !checksum_ok(address, 20) {
            return false;
        }
        // SAFETY: as in `checksum_ok`; byte 15 is the revision, bytes 20..24 the length (v2).
        let revision = unsafe { *((address + 15) as *const u8) };
        revision < 2 || checksum_ok(address, 36)
    })
}

/// Physical address of the RSDP, if the firmware provides one.
pub fn find_rsdp(ebda: u64) -> Option<u64> {
    let from_ebda = if ebda > 0x400 && ebda < 0xA0000 {
        scan(ebda, ebda + 1024)
    } else {
        None
    };
    from_ebda.or_else(|| scan(0xE0000, 0x100000))
}
