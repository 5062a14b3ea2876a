//! `cargo xtask tap`: boots the image on a tap device inside a private network namespace.
//!
//! QEMU runs inside a fresh namespace (`ip netns exec NS qemu-system-x86_64 ...`) that holds the
//! tap device `tap0` with the host-side address [`HOST_ADDRESS`]; the guest uses the static
//! address [`GUEST_ADDRESS`]. Nothing is routed out of the namespace, so traffic never leaves
//! it. A tap has no DHCP server (QEMU's user network has one built in), so the image must be
//! built without the kernel's `dhcpv4` feature, which ignores `-ip`: that is the microvm variant
//! (`cargo xtask microvm-app`, virtio-net on virtio-mmio, hence `--machine microvm` by default).
//! Needs root (network namespaces and tap devices).

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::qemu::{self, Accel, Machine, NicModel, QemuConfig};
use crate::{image_dir, supervise};

/// Name of the tap device inside the namespace.
pub const TAP_DEVICE: &str = "tap0";
/// Host-side address of the tap device (the guest's gateway).
pub const HOST_ADDRESS: &str = "10.0.5.1";
/// The guest's static address (also hermit-kernel 0.11's default without `dhcpv4`).
pub const GUEST_ADDRESS: &str = "10.0.5.3";
/// Netmask of the namespace's network.
pub const NETMASK: &str = "255.255.255.0";
/// Prefix length of [`NETMASK`].
const PREFIX_LEN: u8 = 24;

/// Options of `cargo xtask tap`.
#[derive(clap::Args, Debug, Clone)]
pub struct TapArgs {
    /// Network namespace to create (it must not exist; removed on exit). Default `hermit-tap-PID`.
    #[arg(long)]
    pub netns: Option<String>,
    /// Kernel command line (app words; kernel options before `--`). The static address options
    /// (`-ip`, `-gateway`, `-mask`) are added.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Guest RAM in MiB (the virtio-mmio driver of kernel 0.11 needs 256 MiB: it panics with an
    /// allocation error at 192).
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// Machine: `microvm` (virtio-mmio) fits the microvm variant; `q35`/`pc` need an `--app`
    /// whose kernel has `pci` but not `dhcpv4`.
    #[arg(long, value_enum, default_value_t = Machine::Microvm)]
    pub machine: Machine,
    /// Accelerator.
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Application ELF; default the microvm variant (target/image-microvm/kernel-app).
    #[arg(long)]
    pub app: Option<PathBuf>,
    /// Skip building (use the artifacts of a previous build).
    #[arg(long)]
    pub no_build: bool,
}

/// A network namespace with a tap device, deleted (with the device) on drop.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates namespace `name` with loopback up and `tap0` at [`HOST_ADDRESS`]/24.
    pub fn create(name: &str) -> Result<Namespace> {
        ensure!(
            !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "namespace name {name:?}: use letters, digits, '-' and '_'"
        );
        ip(&["netns", "add", name])?;
        // From here on, the guard removes the namespace also when a later step fails.
        let namespace = Namespace {
            name: name.to_string(),
        };
        let host_cidr = format!("{HOST_ADDRESS}/{PREFIX_LEN}");
        for args in [
            &["link", "set", "lo", "up"][..],
            &["tuntap", "add", "dev", TAP_DEVICE, "mode", "tap"],
            &["addr", "add", &host_cidr, "dev", TAP_DEVICE],
            &["link", "set", TAP_DEVICE, "up"],
        ] {
            let mut all = vec!["netns", "exec", name, "ip"];
            all.extend_from_slice(args);
            ip(&all)?;
        }
        Ok(namespace)
    }

    /// `program` run inside the namespace (`ip netns exec NAME program`, which execs it: the
    /// child's pid is the program's).
    pub fn command(&self, program: &std::ffi::OsStr) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace deletes the tap device in it.
        let _ = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
    }
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> Result<()> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .context("could not run `ip` (apt-get install iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// The QEMU arguments of a tap NIC on `machine`. `vnet_hdr=off`: with the tap's virtio-net
/// header QEMU offers checksum offloads (CSUM, GUEST_CSUM), and kernel 0.11 then never answers
/// (not even ARP); without it the NIC offers what QEMU's user network offers, which works.
pub fn tap_nic_args(machine: Machine) -> Vec<String> {
    vec![
        "-netdev".into(),
        format!("tap,id=net0,ifname={TAP_DEVICE},script=no,downscript=no,vnet_hdr=off"),
        "-device".into(),
        qemu::nic_device(machine, NicModel::VirtioNetPci, "net0"),
    ]
}

/// Why tap devices in a network namespace cannot be used here, or `None` when they can.
pub fn unusable_reason() -> Option<String> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("needs root (network namespaces, tap devices)".into());
    }
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun does not exist".into());
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return Some("`ip` (iproute2) is not installed".into());
    }
    None
}

/// `cargo xtask tap`: creates the namespace, boots QEMU in it in the foreground, removes it.
pub fn run(args: &TapArgs) -> Result<()> {
    // SAFETY: geteuid(2) has no preconditions.
    ensure!(
        unsafe { libc::geteuid() } == 0,
        "tap devices and network namespaces need root"
    );
    if !args.no_build {
        crate::loader::build_loader()?;
    }
    let loader = crate::loader::loader_path(qemu::BootEntry::default());
    let app = match &args.app {
        Some(app) => app.clone(),
        None if args.no_build => crate::compress::module_path(&image_dir::microvm_app_path()),
        None => image_dir::microvm_image(true)?.module,
    };
    for part in [&loader, &app] {
        ensure!(
            part.exists(),
            "{} is missing: build first (drop --no-build)",
            part.display()
        );
    }
    let name = args
        .netns
        .clone()
        .unwrap_or_else(|| format!("hermit-tap-{}", std::process::id()));
    let namespace = Namespace::create(&name)?;
    let static_options = format!("-ip {GUEST_ADDRESS} -gateway {HOST_ADDRESS} -mask {NETMASK}");
    let config = QemuConfig {
        machine: args.machine,
        smp: args.smp,
        memory_mib: args.memory,
        accel: args.accel,
        forwards: Vec::new(),
        nic: NicModel::VirtioNetPci,
        network: false,
        append: image_dir::with_kernel_options(&static_options, &args.append),
        extra_args: tap_nic_args(args.machine),
        tcg_cache_mib: None,
    };
    let qemu_cmd = qemu::command(&config, &loader, &app);
    let mut cmd = namespace.command(qemu_cmd.get_program());
    cmd.args(qemu_cmd.get_args());
    let guest_port = crate::run::app_value(&args.append, "port").unwrap_or("8080");
    println!(
        "booting {} on {TAP_DEVICE} in network namespace {name}; guest http://{GUEST_ADDRESS}:{guest_port}/ \
         (try: ip netns exec {name} curl http://{GUEST_ADDRESS}:{guest_port}/healthz)",
        app.display()
    );
    let status = supervise::run_foreground(&mut cmd)?;
    drop(namespace);
    if status.success() || supervise::stopped_by_signal() {
        return Ok(());
    }
    bail!("qemu exited with {status}")
}
