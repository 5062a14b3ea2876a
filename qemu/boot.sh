#!/usr/bin/env bash
# Boots an already built image by hand (cargo xtask build), serving on 127.0.0.1:${PORT:-8080}.
# Usage: qemu/boot.sh [app words...]     e.g. qemu/boot.sh log=debug root=http-server-demo
# This is the command `cargo xtask run --accel tcg` uses, written out (PVH entry; the loader
# file hermit-loader instead boots through multiboot).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
image="${IMAGE_DIR:-$root/target/image}"
port="${PORT:-8080}"
exec qemu-system-x86_64 -nodefaults -display none -no-reboot -serial stdio \
  -M q35 -accel tcg \
  -cpu Skylake-Client,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm,-rdseed,-3dnowprefetch,-xsavec,-spec-ctrl,-xsaves \
  -smp "${SMP:-2}" -m "${MEMORY:-256}M" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$image/hermit-loader-pvh" -initrd "$image/kernel-app.lz4" \
  -append "-- $*" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:${port}-:8080" \
  -device virtio-net-pci,netdev=net0,disable-legacy=on
