//! Building QEMU command lines that boot the image (our loader + the application ELF).
//!
//! The guest's serial console is the process's stdio; the guest powers off through the
//! `isa-debug-exit` device, so QEMU's exit status tells how the guest ended (see [`GuestExit`]).

use std::fmt;
use std::path::Path;
use std::process::{Command, ExitStatus};

/// QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// I/O port of the `isa-debug-exit` device (hermit-kernel 0.11 writes its exit code there).
const DEBUG_EXIT_PORT: &str = "0xf4";

/// CPU model under TCG: Skylake without the features TCG cannot emulate (which QEMU would
/// otherwise drop with one warning each).
const TCG_CPU: &str = "Skylake-Client,-pcid,-x2apic,-tsc-deadline,-hle,-invpcid,-rtm,-rdseed,\
                       -3dnowprefetch,-xsavec,-spec-ctrl,-xsaves";

/// QEMU machine type.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Machine {
    /// Q35 + ICH9 (PCIe), the default.
    #[default]
    Q35,
    /// i440FX + PIIX (PCI).
    Pc,
    /// Minimal machine without PCI (second IOAPIC off, qboot firmware): its virtio-net on
    /// virtio-mmio needs the kernel variant without `pci` (`cargo xtask microvm-app`).
    Microvm,
}

/// Accelerator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM when it is usable for the hermit kernel (see `kvm_status`), else TCG.
    #[default]
    Auto,
    /// Hardware virtualization (fails if /dev/kvm is unusable).
    Kvm,
    /// Software emulation.
    Tcg,
}

/// Guest network card.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum NicModel {
    /// Modern-only virtio-net on PCI (kernel 0.11 skips legacy/transitional virtio devices).
    #[default]
    VirtioNetPci,
    /// Realtek RTL8139 (needs the kernel's `rtl8139` feature).
    Rtl8139,
}

/// How QEMU enters our loader (QEMU's `-kernel` picks multiboot when the file has a multiboot
/// header and the PVH note otherwise, so each entry has its own loader file).
///
/// PVH is the default: `cargo xtask bench boot` found no measurable difference in boot time (see
/// the README), and PVH is the entry Firecracker and Cloud Hypervisor use, so every QEMU test
/// exercises it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum BootEntry {
    /// Multiboot v1: the flat `hermit-loader`.
    Multiboot,
    /// PVH (`XEN_ELFNOTE_PHYS32_ENTRY`, `hvm_start_info`): the ELF `hermit-loader-pvh`, the entry
    /// Firecracker and Cloud Hypervisor use too.
    #[default]
    Pvh,
}

/// How to run the VM.
#[derive(Clone, Debug)]
pub struct QemuConfig {
    /// Machine type.
    pub machine: Machine,
    /// Number of virtual CPUs.
    pub smp: u32,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// Accelerator.
    pub accel: Accel,
    /// TCP forwards `(host port, guest port)`; the host side binds 127.0.0.1 only.
    pub forwards: Vec<(u16, u16)>,
    /// Network card (ignored when there are no forwards and `network` is false).
    pub nic: NicModel,
    /// Whether to attach a NIC at all (it is attached anyway when `forwards` is not empty).
    pub network: bool,
    /// Kernel command line (`-ip ... --` kernel options first, then the app's words).
    pub append: String,
    /// More raw QEMU arguments, appended last.
    pub extra_args: Vec<String>,
    /// TCG translation cache in MiB (`-accel tcg,tb-size=`); `None`: QEMU's default, which
    /// grows up to 1 GiB as code is translated (a booted image fills ~20 MiB of it).
    pub tcg_cache_mib: Option<u32>,
}

impl Default for QemuConfig {
    fn default() -> Self {
        Self {
            machine: Machine::Q35,
            smp: 1,
            memory_mib: 512,
            accel: Accel::Auto,
            forwards: Vec::new(),
            nic: NicModel::VirtioNetPci,
            network: true,
            append: String::new(),
            extra_args: Vec::new(),
            tcg_cache_mib: None,
        }
    }
}

impl QemuConfig {
    /// The accelerator that [`command`] will use.
    pub fn effective_accel(&self) -> Accel {
        match self.accel {
            Accel::Auto if kvm_status().is_ok() => Accel::Kvm,
            Accel::Auto => Accel::Tcg,
            other => other,
        }
    }
}

/// The `-M` value of `machine`.
pub fn machine_name(machine: Machine) -> &'static str {
    match machine {
        Machine::Q35 => "q35",
        Machine::Pc => "pc",
        // kernel 0.11 panics on a second IOAPIC (it sets its IOAPIC address once).
        Machine::Microvm => "microvm,ioapic2=off",
    }
}

/// The QEMU command booting `loader` (our loader) with `app` (the application ELF, or its LZ4
/// module) as the initrd.
pub fn command(config: &QemuConfig, loader: &Path, app: &Path) -> Command {
    let mut cmd = Command::new(QEMU);
    let machine = machine_name(config.machine);
    let (accel, cpu) = match config.effective_accel() {
        Accel::Kvm => ("kvm".to_string(), "host"),
        _ => match config.tcg_cache_mib {
            Some(mib) => (format!("tcg,tb-size={mib}"), TCG_CPU),
            None => ("tcg".to_string(), TCG_CPU),
        },
    };
    cmd.args([
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        "stdio",
    ])
    .args(["-M", machine, "-accel", &accel, "-cpu", cpu]);
    if config.machine == Machine::Microvm {
        // kernel 0.11 drives only modern (version 2) virtio-mmio devices; QEMU's default is legacy.
        cmd.args(["-global", "virtio-mmio.force-legacy=false"]);
    }
    // Guest RAM in a memfd instead of anonymous memory: QEMU asks for transparent huge pages on
    // anonymous guest RAM, so every 2 MiB the guest touches cost the host 2 MiB (an idle image
    // touched 34 MiB that way, 17.5 MiB in 4 KiB pages); shared memory gets no huge pages.
    cmd.args([
        "-smp",
        &config.smp.to_string(),
        "-m",
        &format!("{}M", config.memory_mib),
        "-object",
        &format!("memory-backend-memfd,id=ram0,size={}M", config.memory_mib),
        "-machine",
        "memory-backend=ram0",
    ]);
    cmd.args([
        "-device",
        &format!("isa-debug-exit,iobase={DEBUG_EXIT_PORT},iosize=0x04"),
    ])
    .arg("-kernel")
    .arg(loader)
    .arg("-initrd")
    .arg(app);
    let append = kernel_command_line(config, accel.starts_with("tcg"));
    if !append.is_empty() {
        cmd.args(["-append", &append]);
    }
    if config.network || !config.forwards.is_empty() {
        let mut netdev = String::from("user,id=net0");
        for (host_port, guest_port) in &config.forwards {
            netdev.push_str(&format!(",hostfwd=tcp:127.0.0.1:{host_port}-:{guest_port}"));
        }
        cmd.args([
            "-netdev",
            &netdev,
            "-device",
            &nic_device(config.machine, config.nic, "net0"),
        ]);
        // `XTASK_PCAP=FILE` records the guest's traffic (for debugging the network).
        if let Some(file) = std::env::var_os("XTASK_PCAP") {
            let file = file.to_string_lossy();
            cmd.args([
                "-object",
                &format!("filter-dump,id=dump0,netdev=net0,file={file}"),
            ]);
        }
    }
    cmd.args(&config.extra_args);
    cmd
}

/// The `-device` value of the guest NIC attached to netdev `netdev_id`: on `microvm` always
/// virtio-net on virtio-mmio (it has no PCI bus), otherwise the chosen PCI card.
pub fn nic_device(machine: Machine, nic: NicModel, netdev_id: &str) -> String {
    match (machine, nic) {
        (Machine::Microvm, _) => format!("virtio-net-device,netdev={netdev_id}"),
        (_, NicModel::VirtioNetPci) => {
            format!("virtio-net-pci,netdev={netdev_id},disable-legacy=on")
        }
        (_, NicModel::Rtl8139) => format!("rtl8139,netdev={netdev_id}"),
    }
}

/// The kernel command line: `config.append`, under TCG prefixed with `-freq <host TSC MHz>`
/// (TCG's guest TSC runs at the host TSC rate) unless it already has `-freq`. That spares the
/// kernel its ~50 ms PIT calibration, which is also imprecise on a busy host.
fn kernel_command_line(config: &QemuConfig, tcg: bool) -> String {
    let has_freq = config
        .append
        .split_whitespace()
        .take_while(|w| *w != "--")
        .any(|w| w == "-freq");
    match host_tsc_mhz() {
        Some(mhz) if tcg && !has_freq => format!("-freq {mhz} {}", config.append)
            .trim_end()
            .to_string(),
        _ => config.append.clone(),
    }
}

/// The host's TSC frequency in MHz (measured once over 20 ms), if the TSC is constant-rate.
pub fn host_tsc_mhz() -> Option<u32> {
    static MHZ: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
    *MHZ.get_or_init(measure_host_tsc_mhz)
}

#[cfg(target_arch = "x86_64")]
fn measure_host_tsc_mhz() -> Option<u32> {
    use std::time::{Duration, Instant};
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let constant_tsc = cpuinfo
        .lines()
        .find(|line| line.starts_with("flags"))?
        .split_whitespace()
        .any(|flag| flag == "constant_tsc");
    if !constant_tsc {
        return None;
    }
    let start = Instant::now();
    // SAFETY: `rdtsc` has no preconditions on x86_64.
    let start_ticks = unsafe { core::arch::x86_64::_rdtsc() };
    std::thread::sleep(Duration::from_millis(20));
    // SAFETY: as above.
    let end_ticks = unsafe { core::arch::x86_64::_rdtsc() };
    let seconds = start.elapsed().as_secs_f64();
    let mhz = (end_ticks.wrapping_sub(start_ticks) as f64 / seconds / 1e6).round();
    (100.0..=10_000.0).contains(&mhz).then_some(mhz as u32)
}

#[cfg(not(target_arch = "x86_64"))]
fn measure_host_tsc_mhz() -> Option<u32> {
    None
}

/// How the guest ended, decoded from QEMU's exit status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestExit {
    /// The kernel shut down with exit code 0 (QEMU status 3).
    Success,
    /// The kernel shut down with a non-zero code or panicked (QEMU status 1).
    Failure,
    /// Our loader could not start the kernel (QEMU status 5).
    LoaderError,
    /// QEMU itself ended otherwise (status 0 = powered off/reset, or killed by a signal).
    Other(Option<i32>),
}

impl GuestExit {
    /// Decodes QEMU's exit status (the `isa-debug-exit` value `v` makes QEMU exit with `2v+1`).
    pub fn from_status(status: ExitStatus) -> Self {
        match status.code() {
            Some(3) => Self::Success,
            Some(1) => Self::Failure,
            Some(5) => Self::LoaderError,
            code => Self::Other(code),
        }
    }
}

impl fmt::Display for GuestExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Success => write!(f, "guest exited successfully"),
            Self::Failure => write!(f, "guest exited with an error or panicked"),
            Self::LoaderError => write!(f, "the loader could not start the kernel"),
            Self::Other(Some(code)) => write!(f, "qemu exited with status {code}"),
            Self::Other(None) => write!(f, "qemu was killed by a signal"),
        }
    }
}

/// Whether KVM is usable for the hermit kernel; `Err` explains why not.
///
/// Besides a missing or inaccessible `/dev/kvm`, this rejects KVM-PVM (the `kvm_pvm` module,
/// nested virtualization without VMX/SVM), on which hermit-kernel 0.11 dies early.
pub fn kvm_status() -> Result<(), String> {
    let device = Path::new("/dev/kvm");
    if !device.exists() {
        return Err("/dev/kvm does not exist (no KVM on this host)".into());
    }
    if let Err(err) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        return Err(format!("/dev/kvm is not usable: {err}"));
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        return Err(
            "KVM here is kvm-pvm (nested, paravirtualized); the hermit kernel dies under it".into(),
        );
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let has_hardware_virtualization = cpuinfo
        .lines()
        .filter(|line| line.starts_with("flags"))
        .any(|line| {
            line.split_whitespace()
                .any(|flag| flag == "vmx" || flag == "svm")
        });
    if !has_hardware_virtualization {
        return Err("the CPU exposes neither vmx nor svm, so /dev/kvm is not hardware KVM".into());
    }
    Ok(())
}

/// Options of `cargo xtask boot`: boot an application ELF with our loader (a thin wrapper
/// around [`command`], for trying images by hand).
#[derive(clap::Args, Debug, Clone)]
pub struct BootArgs {
    /// Application ELF or its compressed module (hermit kernel + app); default
    /// target/image/kernel-app.lz4.
    #[arg(long)]
    pub app: Option<std::path::PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
    /// Machine, vCPUs, memory, accelerator and NIC (as for `cargo xtask run`).
    #[command(flatten)]
    pub vm: crate::vm::VmArgs,
    /// Boot without a network card.
    #[arg(long)]
    pub no_network: bool,
    /// Use the loader of a previous build instead of building it.
    #[arg(long)]
    pub no_build: bool,
}

/// `cargo xtask boot`: builds the loader, boots the app in QEMU in the foreground, reports the exit.
pub fn boot(args: &BootArgs) -> anyhow::Result<()> {
    if !args.no_build {
        crate::loader::build_loader()?;
    }
    let loader = crate::loader::loader_path(args.vm.entry);
    let app = args
        .app
        .clone()
        .unwrap_or_else(|| crate::util::target_dir().join("image/kernel-app.lz4"));
    anyhow::ensure!(
        app.exists(),
        "{} does not exist (build the application first)",
        app.display()
    );
    let config = QemuConfig {
        machine: args.vm.machine,
        smp: args.vm.smp,
        memory_mib: args.vm.memory,
        accel: args.vm.accel,
        forwards: args.vm.forwards.clone(),
        nic: args.vm.nic,
        network: !args.no_network,
        append: args.append.clone(),
        extra_args: Vec::new(),
        tcg_cache_mib: args.vm.tcg_cache_mib,
    };
    if config.accel == Accel::Auto
        && let Err(reason) = kvm_status()
    {
        eprintln!("boot: using TCG: {reason}");
    }
    let mut cmd = command(&config, &loader, &app);
    eprintln!("boot: {}", crate::util::redacted(&format!("{cmd:?}")));
    let status = crate::supervise::run_foreground(&mut cmd)?;
    let exit = GuestExit::from_status(status);
    eprintln!("boot: {exit}");
    anyhow::ensure!(
        exit == GuestExit::Success || crate::supervise::stopped_by_signal(),
        "{exit}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args_of(cmd: &Command) -> Vec<String> {
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn forwards_bind_loopback_only() {
        let config = QemuConfig {
            accel: Accel::Tcg,
            forwards: vec![(18080, 8080), (18081, 9000)],
            ..QemuConfig::default()
        };
        let args = args_of(&command(&config, Path::new("l"), Path::new("a")));
        let netdev = &args[args.iter().position(|a| a == "-netdev").expect("netdev") + 1];
        assert_eq!(
            netdev,
            "user,id=net0,hostfwd=tcp:127.0.0.1:18080-:8080,hostfwd=tcp:127.0.0.1:18081-:9000"
        );
    }

    #[test]
    fn tcg_command_has_loader_app_and_exit_device() {
        let config = QemuConfig {
            accel: Accel::Tcg,
            smp: 2,
            append: "-ip 10.0.2.15 -- port=8080".into(),
            ..QemuConfig::default()
        };
        let args = args_of(&command(&config, Path::new("loader"), Path::new("app"))).join(" ");
        assert!(args.contains("-accel tcg -cpu Skylake-Client"), "{args}");
        assert!(args.contains("-smp 2 -m 512M"), "{args}");
        assert!(args.contains("-kernel loader -initrd app"), "{args}");
        assert!(args.contains("isa-debug-exit,iobase=0xf4"), "{args}");
        assert!(args.contains("-ip 10.0.2.15 -- port=8080"), "{args}");
        if let Some(mhz) = host_tsc_mhz() {
            assert!(args.contains(&format!("-append -freq {mhz} -ip")), "{args}");
        }
        assert!(
            args.contains("virtio-net-pci,netdev=net0,disable-legacy=on"),
            "{args}"
        );
    }

    #[test]
    fn guest_ram_is_a_memfd_and_the_tcg_cache_is_sized_on_request() {
        let config = QemuConfig {
            accel: Accel::Tcg,
            memory_mib: 64,
            ..QemuConfig::default()
        };
        let args = args_of(&command(&config, Path::new("l"), Path::new("a"))).join(" ");
        assert!(
            args.contains(
                "-m 64M -object memory-backend-memfd,id=ram0,size=64M -machine memory-backend=ram0"
            ),
            "{args}"
        );
        assert!(args.contains("-accel tcg -cpu"), "{args}");
        let config = QemuConfig {
            tcg_cache_mib: Some(8),
            ..config
        };
        let args = args_of(&command(&config, Path::new("l"), Path::new("a"))).join(" ");
        assert!(args.contains("-accel tcg,tb-size=8 -cpu"), "{args}");
    }

    #[test]
    fn an_explicit_freq_is_kept() {
        let config = QemuConfig {
            append: "-freq 1234 -- a=-freq".into(),
            ..QemuConfig::default()
        };
        assert_eq!(kernel_command_line(&config, true), "-freq 1234 -- a=-freq");
        assert_eq!(kernel_command_line(&config, false), "-freq 1234 -- a=-freq");
    }

    #[test]
    fn host_tsc_is_plausible_when_measured() {
        if let Some(mhz) = host_tsc_mhz() {
            assert!((100..=10_000).contains(&mhz), "{mhz}");
        }
    }

    #[test]
    fn no_network_without_forwards_when_disabled() {
        let config = QemuConfig {
            accel: Accel::Tcg,
            network: false,
            ..QemuConfig::default()
        };
        let args = args_of(&command(&config, Path::new("l"), Path::new("a")));
        assert!(!args.iter().any(|a| a == "-netdev"));
    }
}
