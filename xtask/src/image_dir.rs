//! `cargo xtask image`: a self-contained directory to deploy: both loaders (multiboot, PVH), both
//! application ELFs (q35/pc with DHCP, microvm with a static address), `vm.json` (how to boot
//! them), `firecracker.json` (untested), `BOOTING.md` (QEMU, uhyve, Firecracker, orchestrators)
//! and a Nomad job and a KubeVirt manifest for a fleet ([`crate::orchestrators`]). Also the
//! microvm variant's paths and kernel options.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::json;

use crate::image::Image;
use crate::orchestrators;
use crate::qemu::{self, Accel, BootEntry, Machine, NicModel, QemuConfig};
use crate::util;

/// Kernel options of the microvm variant (no `dhcpv4`) on QEMU's user network, whose DHCP
/// server would hand out exactly these.
pub const USER_NET_STATIC_OPTIONS: &str = "-ip 10.0.2.15 -gateway 10.0.2.2 -mask 255.255.255.0";

/// Least guest RAM the microvm variant is given: what q35 serves in. (It needed 256 MiB while
/// kernel 0.11 sized virtio-mmio queues at 1024 entries; kernel/patches/0031 caps them at 256.)
pub const MICROVM_MIN_MEMORY_MIB: u32 = 64;

/// The microvm variant's application ELF (`cargo xtask microvm-app`).
pub fn microvm_app_path() -> PathBuf {
    util::target_dir().join("image-microvm/kernel-app")
}

/// The microvm image: our loader and the microvm variant (with the guests it embeds), built
/// unless `build` is false.
pub fn microvm_image(build: bool) -> Result<Image> {
    let image = if build {
        // The app embeds the boot functions (crates/boot-functions reads target/guests).
        crate::image::build_boot_functions()?;
        let app = crate::app::build_microvm_app()?;
        Image {
            loader: crate::loader::build_loader()?,
            loader_pvh: crate::loader::pvh_loader_image_path(),
            module: crate::compress::module_path(&app),
            app,
        }
    } else {
        Image {
            loader: crate::loader::loader_image_path(),
            loader_pvh: crate::loader::pvh_loader_image_path(),
            app: microvm_app_path(),
            module: crate::compress::module_path(&microvm_app_path()),
        }
    };
    for part in [&image.loader, &image.loader_pvh, &image.app, &image.module] {
        ensure!(part.exists(), "{} is missing: build first", part.display());
    }
    Ok(image)
}

/// `append` with the kernel options `options` put before the app's words (adding the `--`).
pub fn with_kernel_options(options: &str, append: &str) -> String {
    let append = append.trim();
    match append
        .split_once(" -- ")
        .or_else(|| append.strip_prefix("-- ").map(|rest| ("", rest)))
    {
        Some((kernel, app)) => format!("{options} {kernel} -- {app}"),
        None if append == "--" || append.ends_with(" --") => {
            format!("{options} {}", append)
        }
        None => format!("{options} -- {append}"),
    }
    .split_whitespace()
    .collect::<Vec<_>>()
    .join(" ")
}

/// Options of `cargo xtask image`.
#[derive(clap::Args, Debug, Clone)]
pub struct ImageArgs {
    /// Output directory (default target/microvm-image).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// App words of the kernel command line (e.g. `log=warn workers=2`).
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
    /// Virtual CPUs recorded in vm.json.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Guest RAM in MiB recorded in vm.json.
    #[arg(long, default_value_t = 64)]
    pub memory: u32,
    /// Guest port (the app's `port=`) and host port of the example forwards.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Skip building (use the artifacts of a previous build).
    #[arg(long)]
    pub no_build: bool,
    /// Instances in the orchestrator manifests (Nomad job, KubeVirt manifest).
    #[arg(long, default_value_t = 3)]
    pub instances: u32,
}

/// File names inside the image directory.
const LOADER_FILE: &str = "hermit-loader";
const LOADER_PVH_FILE: &str = "hermit-loader-pvh";
/// The application compressed for our loader (`crate::compress`), what VMMs load as the initrd.
const APP_FILE: &str = "kernel-app.lz4";
const MICROVM_APP_FILE: &str = "kernel-app-microvm.lz4";
/// The application ELF uncompressed: uhyve loads it itself, without our loader.
const UHYVE_APP_FILE: &str = "kernel-app";

/// `cargo xtask image`: writes the directory and returns its path.
pub fn write(args: &ImageArgs) -> Result<PathBuf> {
    let default = if args.no_build {
        crate::image::existing()?
    } else {
        crate::image::build()?
    };
    let microvm = microvm_image(!args.no_build)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| util::target_dir().join("microvm-image"));
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    for (from, name) in [
        (&default.loader, LOADER_FILE),
        (&default.loader_pvh, LOADER_PVH_FILE),
        (&default.module, APP_FILE),
        (&microvm.module, MICROVM_APP_FILE),
        (&default.app, UHYVE_APP_FILE),
    ] {
        fs::copy(from, out.join(name))
            .with_context(|| format!("copying {} to {}", from.display(), out.display()))?;
    }
    let manifest = manifest(args, &out)?;
    fs::write(
        out.join("vm.json"),
        serde_json::to_string_pretty(&manifest)? + "\n",
    )?;
    fs::write(
        out.join("firecracker.json"),
        serde_json::to_string_pretty(&firecracker_config(args))? + "\n",
    )?;
    let fleet = fleet(args);
    fs::write(
        out.join(orchestrators::NOMAD_FILE),
        orchestrators::nomad_job(&fleet),
    )?;
    fs::write(
        out.join(orchestrators::KUBERNETES_FILE),
        orchestrators::kubernetes_manifest(&fleet),
    )?;
    fs::write(
        out.join(orchestrators::CONTAINERFILE),
        orchestrators::containerfile(&fleet),
    )?;
    fs::write(
        out.join("BOOTING.md"),
        booting_md(args, &manifest) + "\n" + &orchestrators::booting_section(&fleet),
    )?;
    Ok(out)
}

/// The fleet the orchestrator manifests describe.
fn fleet(args: &ImageArgs) -> orchestrators::Fleet<'_> {
    orchestrators::Fleet {
        instances: args.instances,
        port: args.port,
        memory_mib: args.memory,
        vcpus: args.smp,
        append: &args.append,
        loader: LOADER_FILE,
        app: APP_FILE,
    }
}

/// One way to boot the image, as QEMU arguments (run from inside the image directory).
fn qemu_args(args: &ImageArgs, machine: Machine, app: &str, append: &str) -> Vec<String> {
    let config = QemuConfig {
        machine,
        smp: args.smp,
        memory_mib: variant_memory(args, machine),
        accel: Accel::Tcg,
        forwards: vec![(args.port, args.port)],
        nic: NicModel::VirtioNetPci,
        network: true,
        // The TSC frequency `command` would add is this host's: leave it out of the file.
        append: format!("-freq 0 {append}"),
        extra_args: Vec::new(),
        tcg_cache_mib: None,
    };
    let loader = match BootEntry::default() {
        BootEntry::Multiboot => LOADER_FILE,
        BootEntry::Pvh => LOADER_PVH_FILE,
    };
    let cmd = qemu::command(&config, Path::new(loader), Path::new(app));
    let mut words: Vec<String> = std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Some(i) = words.iter().position(|w| w == "-append") {
        words[i + 1] = append.to_string();
    }
    words
}

/// Guest RAM of `machine`'s variant: `--memory`, at least [`MICROVM_MIN_MEMORY_MIB`] on microvm.
fn variant_memory(args: &ImageArgs, machine: Machine) -> u32 {
    match machine {
        Machine::Microvm => args.memory.max(MICROVM_MIN_MEMORY_MIB),
        _ => args.memory,
    }
}

fn manifest(args: &ImageArgs, out: &Path) -> Result<serde_json::Value> {
    let app_words = format!("port={} {}", args.port, args.append)
        .trim()
        .to_string();
    let q35_line = crate::vm::kernel_command_line(&app_words);
    let microvm_line = with_kernel_options(USER_NET_STATIC_OPTIONS, &app_words);
    let size = |name: &str| fs::metadata(out.join(name)).map(|m| m.len()).unwrap_or(0);
    Ok(json!({
        "loader": { "file": LOADER_FILE, "boot_protocol": "multiboot1", "bytes": size(LOADER_FILE) },
        "loader_pvh": {
            "file": LOADER_PVH_FILE,
            "boot_protocol": "pvh",
            "bytes": size(LOADER_PVH_FILE),
        },
        "qemu_entry": format!("{:?}", BootEntry::default()).to_lowercase(),
        "vcpus": args.smp,
        "memory_mib": args.memory,
        "memory_note": "per variant: the microvm variant is given at least 64 MiB",
        "guest_port": args.port,
        "variants": {
            "q35": {
                "app": APP_FILE,
                "bytes": size(APP_FILE),
                "kernel_features": "pci,acpi,smp,tcp,dhcpv4,fsgsbase",
                "machine": "q35",
                "memory_mib": variant_memory(args, Machine::Q35),
                "nic": "virtio-net-pci,disable-legacy=on",
                "network": "DHCPv4 (QEMU user network)",
                "kernel_command_line": q35_line,
                "qemu": qemu_args(args, Machine::Q35, APP_FILE, &q35_line),
            },
            "microvm": {
                "app": MICROVM_APP_FILE,
                "bytes": size(MICROVM_APP_FILE),
                "kernel_features": crate::kernel::MMIO_STATIC_FEATURES,
                "machine": qemu::machine_name(Machine::Microvm),
                "memory_mib": variant_memory(args, Machine::Microvm),
                "nic": "virtio-net-device (virtio-mmio)",
                "network": "static: -ip/-gateway/-mask on the kernel command line",
                "kernel_command_line": microvm_line,
                "qemu": qemu_args(args, Machine::Microvm, MICROVM_APP_FILE, &microvm_line),
            },
        },
    }))
}

/// Address of the Firecracker example's guest on its tap network.
const FIRECRACKER_GUEST: &str = "172.16.0.2";
/// Address of the host side of the Firecracker example's tap device.
const FIRECRACKER_HOST: &str = "172.16.0.1";

/// A Firecracker `--config-file` for the microvm variant through the PVH loader (not tested:
/// Firecracker cannot be installed here).
fn firecracker_config(args: &ImageArgs) -> serde_json::Value {
    let options =
        format!("-ip {FIRECRACKER_GUEST} -gateway {FIRECRACKER_HOST} -mask 255.255.255.0");
    let app_words = format!("port={} {}", args.port, args.append);
    json!({
        "boot-source": {
            "kernel_image_path": LOADER_PVH_FILE,
            "initrd_path": MICROVM_APP_FILE,
            "boot_args": with_kernel_options(&options, &app_words),
        },
        "drives": [],
        "machine-config": {
            "vcpu_count": args.smp,
            "mem_size_mib": variant_memory(args, Machine::Microvm),
        },
        "network-interfaces": [{ "iface_id": "net0", "host_dev_name": "tap0" }],
    })
}

fn shell_line(words: &serde_json::Value) -> String {
    words
        .as_array()
        .map(|w| {
            w.iter()
                .filter_map(|a| a.as_str())
                .map(|a| {
                    if a.is_empty() || a.contains(char::is_whitespace) {
                        format!("'{a}'")
                    } else {
                        a.to_string()
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default()
}

fn booting_md(args: &ImageArgs, manifest: &serde_json::Value) -> String {
    let q35 = shell_line(&manifest["variants"]["q35"]["qemu"]);
    let microvm = shell_line(&manifest["variants"]["microvm"]["qemu"]);
    let port = args.port;
    let qemu_loader = manifest["variants"]["q35"]["qemu"]
        .as_array()
        .and_then(|words| {
            let at = words.iter().position(|w| w == "-kernel")?;
            words.get(at + 1)?.as_str()
        })
        .unwrap_or(LOADER_FILE)
        .to_string();
    let firecracker = shell_line(&json!([
        "firecracker",
        "--no-api",
        "--config-file",
        "firecracker.json"
    ]));
    format!(
        r#"# Booting this image

Files: `{LOADER_FILE}` (our loader, multiboot v1 entry) and `{LOADER_PVH_FILE}` (the same loader
as an ELF with the PVH entry), `{APP_FILE}` (hermit kernel 0.11 + app, kernel with PCI and DHCPv4),
`{MICROVM_APP_FILE}` (same app, kernel without PCI and DHCPv4: virtio-mmio NIC, static address).
Both are the application ELF compressed with LZ4 behind a 12-byte header, which the loader expands;
`{UHYVE_APP_FILE}` is the uncompressed ELF of the first, for uhyve.
`vm.json` has the kernel command lines, vCPUs, memory, machine and NIC; `firecracker.json` is a
Firecracker configuration (see below, not tested). QEMU boots either loader with `-kernel`: it
takes multiboot when the file has a multiboot header ({LOADER_FILE}) and the PVH note otherwise
({LOADER_PVH_FILE}); the commands below use `{qemu_loader}` (`cargo xtask run --entry
multiboot|pvh` chooses). Run the commands from this directory; then `curl http://127.0.0.1:{port}/healthz`.
Under KVM replace `-accel tcg -cpu ...` by `-accel kvm -cpu host`.

## QEMU q35 (or `-M pc`), user network with DHCP

```sh
{q35}
```

## QEMU microvm, virtio-net on virtio-mmio, static address

```sh
{microvm}
```

## QEMU with a tap device

No DHCP on a tap: use `{MICROVM_APP_FILE}` on microvm with `-netdev
tap,id=net0,ifname=tap0,script=no,downscript=no,vnet_hdr=off -device virtio-net-device,netdev=net0`
(with the tap's vnet header QEMU offers checksum offloads, and kernel 0.11 then never answers) and
`-append "-ip 10.0.5.3 -gateway 10.0.5.1 -mask 255.255.255.0 -- port={port}"`, the host side of
`tap0` at 10.0.5.1/24 (`cargo xtask tap` does this inside a private network namespace).

## uhyve (needs KVM)

uhyve loads the application ELF itself (no loader, no firmware) and passes the words after the
ELF as the kernel command line (this is what `cargo xtask run --uhyve` runs). Not tested here: KVM
on our machines is nested kvm-pvm, where the kernel dies. uhyve has no user network; its network
needs a tap device.

```sh
uhyve {UHYVE_APP_FILE} -- port={port}
```

## Firecracker (NOT tested: Firecracker cannot be installed where this image is built)

Firecracker boots ELF kernels with a PVH note through PVH (Firecracker 1.12 and later). What a
user does with this directory:

- kernel: `{LOADER_PVH_FILE}` (`kernel_image_path`); initrd: `{MICROVM_APP_FILE}` (`initrd_path`),
  the variant without PCI, since Firecracker's devices are virtio-mmio, and without DHCP, since
  Firecracker's network is a tap device on the host.
- boot args: the kernel's static address before `--`, the app's words after it, e.g.
  `-ip {FIRECRACKER_GUEST} -gateway {FIRECRACKER_HOST} -mask 255.255.255.0 -- port={port}`, with
  the host side of the tap at {FIRECRACKER_HOST}/24.
- NIC: one `network-interfaces` entry (a tap device on the host). Firecracker puts it on
  virtio-mmio and announces it on the kernel command line as `virtio_mmio.device=4K@ADDR:IRQ`;
  the microvm variant's kernel reads that word and then drives the device at that address and
  interrupt (without the word it probes QEMU microvm's 0xfeb00000 range only). The word must
  stand before `--`: kernel 0.11 hands every word after `--` to the application, which rejects
  unknown keys. Check where your Firecracker version puts it: the loader prints the command line
  it got on the serial console.
- memory: at least 64 MiB (tested under QEMU microvm); serial console: Firecracker's
  COM1, where the loader and kernel log.
- Also unverified: kernel 0.11 needs the ACPI tables (the loader takes the RSDP from
  `hvm_start_info` or searches 0xE0000–0xFFFFF); with QEMU's tap the kernel did not answer when
  the virtio-net header's checksum offloads were on (`vnet_hdr=off` fixed it), and Firecracker's
  tap always uses that header.

`firecracker.json` holds that configuration (tap `tap0`):

```sh
{firecracker}
```

Tested instead: `cargo xtask run --entry pvh` boots `{LOADER_PVH_FILE}` through PVH in QEMU
(q35 and microvm, `crates/e2e/tests/e2e/boot_entry.rs`), the entry Firecracker uses.
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_options_go_before_the_app_words() {
        let ip = "-ip 1.2.3.4";
        assert_eq!(with_kernel_options(ip, "port=1"), "-ip 1.2.3.4 -- port=1");
        assert_eq!(with_kernel_options(ip, ""), "-ip 1.2.3.4 --");
        assert_eq!(
            with_kernel_options(ip, "-- port=1"),
            "-ip 1.2.3.4 -- port=1"
        );
        assert_eq!(
            with_kernel_options(ip, "-freq 9 -- port=1"),
            "-ip 1.2.3.4 -freq 9 -- port=1"
        );
        assert_eq!(
            with_kernel_options(ip, "-freq 9 --"),
            "-ip 1.2.3.4 -freq 9 --"
        );
    }
}
