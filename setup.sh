#!/usr/bin/env bash
# One-time, idempotent set-up of a fresh Debian 12 machine (root, package registries only):
# Debian's Rust toolchain with std sources, LLVM/LLD for the kernel and wasm links, QEMU, binaryen,
# wasi-libc, redis-server, g++ (for libFuzzer), and uhyve from crates.io. Safe to run again: it
# installs only what is missing.
set -euo pipefail

APT_PACKAGES=(
  rustc-web cargo-web rust-web-src   # rustc/cargo 1.96 + std sources for -Zbuild-std
  rust-web-clippy rustfmt-web        # lints and formatting for the same toolchain
  llvm-22 lld-22                     # llvm-as/objcopy/ar/nm for the kernel, ld.lld for hermit links
  lld-19                             # wasm-ld for wasm32 guests
  qemu-system-x86                    # boots the image
  binaryen wasi-libc                 # wasm-opt; libc for wasm32-wasip1 guests
  redis-server                       # the real keyvalue backend, started by tests
  haproxy                            # the load balancer in front of a fleet (e2e fleet test, bench fleet)
  wrk                                # HTTP load generator of `cargo xtask bench connections/vm-compare`
  g++                                # libfuzzer-sys compiles libFuzzer (C++) for `cargo xtask fuzz`
  iproute2 curl ca-certificates pkg-config  # ip netns for the tap test
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian redis-server package starts a system instance; tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
# Likewise HAProxy: tests start their own on free ports.
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now haproxy >/dev/null 2>&1 || true; fi

# uhyve (the hermit hypervisor) from crates.io. Built outside the project so that our
# rust-toolchain.toml does not apply.
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v uhyve >/dev/null 2>&1; then
  echo "setup: cargo install uhyve (one time, a few minutes)"
  (cd / && cargo install --locked --quiet uhyve) || echo "setup: WARNING: uhyve did not install; cargo xtask test reports its test as not run"
fi

echo "setup: ok ($(/usr/bin/rustc --version))"
