#!/usr/bin/env bash
# Boots the microvm variant on a tap device inside a private network namespace (root), the way
# `cargo xtask tap` does, and removes the namespace (and the tap device in it) on exit.
# Usage: sudo qemu/tap.sh [app words...]; then: ip netns exec ${NETNS:-hermit-tap} curl http://10.0.5.3:8080/healthz
# No DHCP on a tap: the guest is 10.0.5.3/24, the host side of tap0 10.0.5.1. Nothing is routed
# out of the namespace. vnet_hdr=off: with it QEMU offers checksum offloads and kernel 0.11 never answers.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
ns="${NETNS:-hermit-tap}"
ip netns add "$ns"
trap 'ip netns delete "$ns"' EXIT
ip netns exec "$ns" ip link set lo up
ip netns exec "$ns" ip tuntap add dev tap0 mode tap
ip netns exec "$ns" ip addr add 10.0.5.1/24 dev tap0
ip netns exec "$ns" ip link set tap0 up
ip netns exec "$ns" qemu-system-x86_64 -nodefaults -display none -no-reboot -serial stdio \
  -M microvm,ioapic2=off -global virtio-mmio.force-legacy=false -accel tcg \
  -cpu Skylake-Client,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm,-rdseed,-3dnowprefetch,-xsavec,-spec-ctrl,-xsaves \
  -smp "${SMP:-1}" -m "${MEMORY:-256}M" \
  -device isa-debug-exit,iobase=0xf4,iosize=0x04 \
  -kernel "$root/target/image/hermit-loader-pvh" -initrd "$root/target/image-microvm/kernel-app.lz4" \
  -append "-ip 10.0.5.3 -gateway 10.0.5.1 -mask 255.255.255.0 -- $*" \
  -netdev tap,id=net0,ifname=tap0,script=no,downscript=no,vnet_hdr=off \
  -device virtio-net-device,netdev=net0
