//! `cargo xtask run`: build what is needed and serve on 127.0.0.1:PORT, natively or in a VM.

use anyhow::{Result, bail};

use crate::{native, supervise};

/// Options of `cargo xtask run` (the command-line contract tests and benchmarks build on).
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Run the same server as a Linux process instead of booting the image.
    #[arg(long)]
    pub native: bool,
    /// Host port on 127.0.0.1 that serves HTTP.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Kernel command line: `key=value` words for the app (`port`, `log`, `workers`, ...);
    /// kernel options (e.g. `-ip`) may come first, separated from the app's words by `--`.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub append: String,
    /// Skip building (use the artifacts of a previous build).
    #[arg(long)]
    pub no_build: bool,
    /// Boot the application ELF under uhyve (needs usable KVM) instead of QEMU.
    #[arg(long, conflicts_with = "native")]
    pub uhyve: bool,
    #[command(flatten)]
    pub vm: crate::vm::VmArgs,
}

/// The value of `key=` among the app's words of `append`, if any.
pub fn app_value<'a>(append: &'a str, key: &str) -> Option<&'a str> {
    let words: Vec<&str> = append.split_whitespace().collect();
    let start = words.iter().position(|w| *w == "--").map_or(0, |i| i + 1);
    words[start..]
        .iter()
        .rev()
        .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
}

/// Runs the server in the foreground until it exits or we get Ctrl-C/SIGTERM.
pub fn run(args: &RunArgs) -> Result<()> {
    let status = if args.native {
        let binary = if args.no_build {
            crate::util::target_dir().join("release/kernel-app")
        } else {
            native::build_server()?
        };
        // Natively the app listens on the host port itself, on loopback only.
        let mut words = native::app_args(&args.append);
        words.retain(|w| !w.starts_with("port=") && !w.starts_with("bind="));
        words.push(format!("port={}", args.port));
        words.push("bind=127.0.0.1".into());
        println!("serving natively on http://127.0.0.1:{}/", args.port);
        let mut cmd = std::process::Command::new(&binary);
        cmd.args(&words);
        supervise::run_foreground(&mut cmd)?
    } else if args.uhyve {
        if let Err(reason) = crate::qemu::kvm_status() {
            bail!("uhyve needs KVM: {reason}");
        }
        let image = if args.no_build {
            crate::image::existing()?
        } else {
            crate::image::build()?
        };
        let mut cmd = std::process::Command::new(uhyve_binary());
        cmd.arg(&image.app)
            .args(crate::vm::kernel_command_line(&args.append).split_whitespace());
        println!(
            "booting {} under uhyve (no network: uhyve needs a tap device for that)",
            image.app.display()
        );
        supervise::run_foreground(&mut cmd)?
    } else {
        let guest_port: u16 = match app_value(&args.append, "port") {
            Some(p) => p.parse()?,
            None => 8080,
        };
        let (image, vm, append) = if args.vm.machine == crate::qemu::Machine::Microvm {
            // The microvm variant: virtio-mmio without PCI, static address (no DHCP client).
            use crate::image_dir::{MICROVM_MIN_MEMORY_MIB, USER_NET_STATIC_OPTIONS};
            let vm = crate::vm::VmArgs {
                memory: args.vm.memory.max(MICROVM_MIN_MEMORY_MIB),
                ..args.vm.clone()
            };
            let append =
                crate::image_dir::with_kernel_options(USER_NET_STATIC_OPTIONS, &args.append);
            (crate::image_dir::microvm_image(!args.no_build)?, vm, append)
        } else {
            let image = if args.no_build {
                crate::image::existing()?
            } else {
                crate::image::build()?
            };
            (image, args.vm.clone(), args.append.clone())
        };
        let mut cmd = crate::vm::command(&vm, &image, args.port, guest_port, &append)?;
        println!(
            "booting {} ({}); serving on http://127.0.0.1:{}/",
            image.module.display(),
            vm.describe(),
            args.port
        );
        supervise::run_foreground(&mut cmd)?
    };
    if status.success() || supervise::stopped_by_signal() {
        return Ok(());
    }
    if !args.native && !args.uhyve {
        // QEMU reports the guest's exit code through the isa-debug-exit device.
        let exit = crate::qemu::GuestExit::from_status(status);
        if exit == crate::qemu::GuestExit::Success {
            println!("{exit}");
            return Ok(());
        }
        bail!("{exit}");
    }
    bail!("server exited with {status}")
}

/// The uhyve binary: on `PATH`, or where `cargo install` puts it.
pub fn uhyve_binary() -> std::path::PathBuf {
    let installed = std::env::var_os("HOME")
        .map(|home| std::path::PathBuf::from(home).join(".cargo/bin/uhyve"))
        .filter(|p| p.exists());
    installed.unwrap_or_else(|| "uhyve".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_value_reads_the_last_app_word() {
        assert_eq!(app_value("port=1 log=debug port=2", "port"), Some("2"));
        assert_eq!(app_value("-ip 10.0.2.15 -- port=9", "port"), Some("9"));
        assert_eq!(app_value("portx=1", "port"), None);
        assert_eq!(app_value("", "port"), None);
    }
}
