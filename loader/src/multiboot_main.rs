//! `hermit-loader`: the multiboot (v1) build, a flat image for QEMU's `-kernel` (`cargo xtask
//! loader` turns the ELF into the flat image). It carries the multiboot header, which QEMU tries
//! before PVH.

#![no_std]
#![no_main]

use hermit_loader as _;

hermit_loader::multiboot_header!();
