//! The boot information handed to the kernel: a mirror of `hermit_entry::boot_info::RawBootInfo`
//! (hermit-entry 0.10, the version hermit-kernel 0.11 reads). Field types and order are identical,
//! so `repr(C)` gives the same layout; `SIZE_CHECK` pins the size the kernel expects.

use core::num::{NonZeroU16, NonZeroU32, NonZeroU64};

/// TLS image of the kernel (`PT_TLS`), absolute addresses.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TlsInfo {
    /// Start of the TLS initialization image.
    pub start: u64,
    /// `p_filesz` of `PT_TLS`.
    pub filesz: u64,
    /// `p_memsz` of `PT_TLS`.
    pub memsz: u64,
    /// `p_align` of `PT_TLS`.
    pub align: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawHardwareInfo {
    phys_addr_start: u64,
    phys_addr_end: u64,
    serial_port_base: Option<NonZeroU16>,
    device_tree: Option<NonZeroU64>,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct RawLoadInfo {
    kernel_image_addr_start: u64,
    kernel_image_addr_end: u64,
    tls_info: TlsInfo,
}

#[repr(C, align(8))]
#[derive(Clone, Copy)]
struct Align8<T>(T);

#[allow(
    dead_code,
    reason = "only Multiboot is built; the others fix the layout"
)]
#[repr(C)]
#[derive(Clone, Copy)]
enum RawPlatformInfo {
    Multiboot {
        command_line_data: *const u8,
        command_line_len: u64,
        multiboot_info_addr: NonZeroU64,
    },
    Uhyve {
        has_pci: bool,
        num_cpus: NonZeroU64,
        cpu_freq: Option<NonZeroU32>,
        boot_time: Align8<[u8; 16]>,
    },
    LinuxBootParams {
        command_line_data: *const u8,
        command_line_len: u64,
        boot_params_addr: NonZeroU64,
    },
    Fdt,
}

/// `RawBootInfo` as the kernel reads it from `rdi` at `_start`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct RawBootInfo {
    hardware_info: RawHardwareInfo,
    load_info: RawLoadInfo,
    platform_info: RawPlatformInfo,
}

/// Size of hermit-entry 0.10's `RawBootInfo` on x86_64 (checked against the crate on the host).
const SIZE_CHECK: () = assert!(core::mem::size_of::<RawBootInfo>() == 128);

/// What the loader knows when it starts the kernel.
pub struct BootInfo {
    /// Range of physical addresses (RAM).
    pub phys_addr_range: core::ops::Range<u64>,
    /// Device tree blob address.
    pub device_tree: u64,
    /// Address range of the loaded kernel image.
    pub kernel_image: core::ops::Range<u64>,
    /// Kernel TLS image, if any.
    pub tls_info: Option<TlsInfo>,
    /// Kernel command line.
    pub command_line: Option<&'static str>,
    /// Multiboot information address.
    pub multiboot_info: u64,
}

impl BootInfo {
    /// Converts into the raw form passed to the kernel.
    pub fn to_raw(&self) -> RawBootInfo {
        let () = SIZE_CHECK;
        RawBootInfo {
            hardware_info: RawHardwareInfo {
                phys_addr_start: self.phys_addr_range.start,
                phys_addr_end: self.phys_addr_range.end,
                serial_port_base: NonZeroU16::new(crate::serial::COM1),
                device_tree: NonZeroU64::new(self.device_tree),
            },
            load_info: RawLoadInfo {
                kernel_image_addr_start: self.kernel_image.start,
                kernel_image_addr_end: self.kernel_image.end,
                tls_info: self.tls_info.unwrap_or(TlsInfo {
                    start: 0,
                    filesz: 0,
                    memsz: 0,
                    align: 0,
                }),
            },
            platform_info: RawPlatformInfo::Multiboot {
                command_line_data: self.command_line.map_or(core::ptr::null(), str::as_ptr),
                command_line_len: self.command_line.map_or(0, |line| line.len() as u64),
                multiboot_info_addr: NonZeroU64::new(self.multiboot_info)
                    .unwrap_or(NonZeroU64::MIN),
            },
        }
    }
}
