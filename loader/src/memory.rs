//! Reading the boot protocols' structures from physical memory (identity-mapped below 4 GiB).

/// Reads a `u32` at physical `address`.
pub fn read_u32(address: u64) -> u32 {
    // SAFETY: callers pass addresses inside the structures the boot protocol handed over, which
    // lie in identity-mapped RAM.
    unsafe { core::ptr::read_unaligned(address as *const u32) }
}

/// Reads a `u64` at physical `address`.
pub fn read_u64(address: u64) -> u64 {
    // SAFETY: as in `read_u32`.
    unsafe { core::ptr::read_unaligned(address as *const u64) }
}

/// The NUL-terminated string at `address`, without its NUL.
///
/// # Safety
/// `address` must point to a NUL-terminated string in identity-mapped memory that stays valid.
pub unsafe fn c_string(address: u64) -> &'static [u8] {
    // SAFETY: guaranteed by the caller.
    unsafe { core::ffi::CStr::from_ptr(address as *const core::ffi::c_char) }.to_bytes()
}
