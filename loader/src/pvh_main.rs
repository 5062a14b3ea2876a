//! `hermit-loader-pvh`: the PVH build, an ELF whose `XEN_ELFNOTE_PHYS32_ENTRY` note names the
//! 32-bit PVH entry (QEMU's `-kernel`, Firecracker, Cloud Hypervisor). It has no multiboot header:
//! QEMU would take that first.

#![no_std]
#![no_main]

use hermit_loader as _;
