//! VM options shared by `run`, `test` and `bench`, and how they become a QEMU command.

use std::process::Command;

use anyhow::Result;

use crate::image::Image;
use crate::qemu::{Accel, BootEntry, Machine, NicModel, QemuConfig};

/// Kernel options put before the app's words when `--append` has no `--` of its own.
/// Empty: kernel 0.11 configures the network by DHCP (QEMU's user network answers at once).
pub const DEFAULT_KERNEL_OPTIONS: &str = "";

/// How to boot the VM.
#[derive(clap::Args, Debug, Clone)]
pub struct VmArgs {
    /// Virtual CPUs.
    #[arg(long, default_value_t = 1)]
    pub smp: u32,
    /// Guest RAM in MiB.
    #[arg(long, default_value_t = 256)]
    pub memory: u32,
    /// QEMU machine type.
    #[arg(long, value_enum, default_value_t = Machine::Q35)]
    pub machine: Machine,
    /// Accelerator (auto: KVM when usable for hermit, else TCG).
    #[arg(long, value_enum, default_value_t = Accel::Auto)]
    pub accel: Accel,
    /// Guest network card.
    #[arg(long, value_enum, default_value_t = NicModel::VirtioNetPci)]
    pub nic: NicModel,
    /// How QEMU enters our loader: multiboot (`hermit-loader`) or PVH (`hermit-loader-pvh`).
    #[arg(long, value_enum, default_value_t = BootEntry::default())]
    pub entry: BootEntry,
    /// TCG translation cache in MiB (default: QEMU's, up to 1 GiB as needed); a small one
    /// saves host memory per VM and costs retranslation.
    #[arg(long = "tcg-cache", value_name = "MIB")]
    pub tcg_cache_mib: Option<u32>,
    /// One more port forward, `HOST:GUEST` (127.0.0.1:HOST on the host to the guest's GUEST);
    /// may be given more than once.
    #[arg(long = "forward", value_name = "HOST:GUEST", value_parser = parse_forward)]
    pub forwards: Vec<(u16, u16)>,
}

/// Parses `HOST:GUEST` (two port numbers).
fn parse_forward(text: &str) -> Result<(u16, u16), String> {
    let (host, guest) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?}: expected HOST:GUEST, two port numbers"))?;
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("{p:?} is not a port number (1 to 65535)"))
    };
    Ok((port(host)?, port(guest)?))
}

impl VmArgs {
    /// A one-line description for logs.
    pub fn describe(&self) -> String {
        let config = self.config(0, 0, "");
        format!(
            "{:?}, {:?}, {:?} entry, {} vCPU, {} MiB",
            self.machine,
            config.effective_accel(),
            self.entry,
            self.smp,
            self.memory
        )
        .to_lowercase()
    }

    fn config(&self, host_port: u16, guest_port: u16, append: &str) -> QemuConfig {
        QemuConfig {
            machine: self.machine,
            smp: self.smp,
            memory_mib: self.memory,
            accel: self.accel,
            forwards: (host_port != 0)
                .then_some((host_port, guest_port))
                .into_iter()
                .chain(self.forwards.iter().copied())
                .collect(),
            nic: self.nic,
            network: true,
            append: kernel_command_line(append),
            extra_args: Vec::new(),
            tcg_cache_mib: self.tcg_cache_mib,
        }
    }
}

/// The kernel command line for the user's `--append`: app words go after `--`.
pub fn kernel_command_line(append: &str) -> String {
    let append = append.trim();
    if append.split_whitespace().any(|w| w == "--") {
        append.to_string()
    } else {
        format!("{DEFAULT_KERNEL_OPTIONS} -- {append}")
            .trim()
            .to_string()
    }
}

/// The QEMU command that boots `image` serving guest port `guest_port` on 127.0.0.1:`host_port`.
pub fn command(
    args: &VmArgs,
    image: &Image,
    host_port: u16,
    guest_port: u16,
    append: &str,
) -> Result<Command> {
    let config = args.config(host_port, guest_port, append);
    if config.accel == Accel::Kvm
        && let Err(reason) = crate::qemu::kvm_status()
    {
        anyhow::bail!("--accel kvm: {reason}");
    }
    Ok(crate::qemu::command(
        &config,
        image.loader_for(args.entry),
        &image.module,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_are_two_port_numbers() {
        assert_eq!(parse_forward("18081:7777"), Ok((18081, 7777)));
        for bad in ["18081", "0:80", "80:", "x:80", "70000:80"] {
            assert!(parse_forward(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn app_words_go_after_the_separator() {
        assert_eq!(
            kernel_command_line("port=1 log=debug"),
            "-- port=1 log=debug"
        );
        assert_eq!(kernel_command_line(""), "--");
        assert_eq!(
            kernel_command_line("-ip 10.0.2.15 -- port=1"),
            "-ip 10.0.2.15 -- port=1"
        );
    }
}
