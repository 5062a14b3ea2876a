#!/usr/bin/env bash
# Boots the microvm variant by hand (cargo xtask microvm-app), serving on 127.0.0.1:${PORT:-8080}.
# Usage: qemu/microvm.sh [app words...]     e.g. qemu/microvm.sh log=debug
# -M microvm: no PCI, qboot firmware; second IOAPIC off (kernel 0.11 handles one IOAPIC);
# virtio-net on virtio-mmio in modern mode (force-legacy=false: the kernel drives only version 2);
# static address (the variant has no DHCP client): QEMU's user network expects 10.0.2.15.
# 64 MiB also serve (kernel/patches/0031 keeps the virtio-mmio queues at 256 entries).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
port="${PORT:-8080}"
exec qemu-system-x86_64 -nodefaults -display none -no-reboot -serial stdio \
  -M microvm,ioapic2=off -global virtio-mmio.force-legacy=false -accel tcg \
  -cpu Skylake-Client,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm,-rdseed,-3dnowprefetch,-xsavec,-spec-ctrl,-xsaves \
  -smp "${SMP:-1}" -m "${MEMORY:-256}M" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$root/target/image/hermit-loader-pvh" -initrd "$root/target/image-microvm/kernel-app.lz4" \
  -append "-ip 10.0.2.15 -gateway 10.0.2.2 -mask 255.255.255.0 -- $*" \
  -netdev "user,id=net0,hostfwd=tcp:127.0.0.1:${port}-:8080" \
  -device virtio-net-device,netdev=net0
