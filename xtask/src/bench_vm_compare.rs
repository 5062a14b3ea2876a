//! `cargo xtask bench vm-compare`: the image next to a Linux guest running the same server
//! (our native build) under identical QEMU settings, in one run (figures only).
//!
//! (a) the image, started as a user starts it: `xtask run --no-build --append log=warn` (q35,
//!     1 vCPU, user networking by default; `--smp`/`--memory`/... of the bench apply);
//! (b) Debian's kernel with our initrd (see `bench_linux_guest.rs`) running target/release/kernel-app
//!     `port=8080 bind=0.0.0.0 log=warn`. Its QEMU command is the image's command from
//!     `vm::command` (machine, accelerator, CPU model, vCPUs, memory, NIC, user network with
//!     hostfwd) with only `-kernel`, `-initrd` and `-append` replaced; the report checks that
//!     the flags of both running QEMU processes agree apart from those three.

use std::ffi::OsString;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::BenchArgs;
use super::bench_linux_guest::{self, LinuxGuest};
use super::bench_server::{Group, XtaskRun, host_load, mib, rss_kib, wait_ready};
use super::bench_wrk::{self, Wrk};
use crate::image::Image;
use crate::qemu::{Machine, NicModel};
use crate::vm::VmArgs;

/// Routes compared: the platform alone, a `_start` module, a Spiderlightning guest.
const ROUTES: [&str; 3] = ["/healthz", "/exec/answer", "/http-server-demo/hello"];

/// Keep-alive connections per run.
const CONNECTIONS: [usize; 2] = [1, 4];

/// The image's `--append` (as `cargo xtask run` would get it).
const IMAGE_APPEND: &str = "log=warn";

/// The server's words in the Linux guest: the image's defaults spelled out, plus the log level.
const LINUX_APP_ARGS: &str = "port=8080 bind=0.0.0.0 log=warn";

/// Linux's own command line (the server's words follow after `--`).
const LINUX_KERNEL_ARGS: &str = "console=ttyS0 quiet panic=1";

/// How long a guest may take to answer every route after QEMU starts (TCG on a busy host).
const READY_LIMIT: Duration = Duration::from_secs(240);

/// QEMU options whose values differ between the two guests.
const REPLACED: [&str; 3] = ["-kernel", "-initrd", "-append"];

/// Results of one guest.
struct Guest {
    name: &'static str,
    first_200: Duration,
    ready: Duration,
    rss_kib: Option<u64>,
    qemu_args: Vec<String>,
    runs: Vec<(&'static str, Wrk)>,
}

impl Guest {
    fn find(&self, route: &str, connections: usize) -> Option<&Wrk> {
        self.runs
            .iter()
            .find(|(r, w)| *r == route && w.connections == connections)
            .map(|(_, w)| w)
    }
}

/// Boots both, loads both, prints the side-by-side table.
pub(crate) fn bench_vm_compare(args: &BenchArgs, image: &Image) -> Result<()> {
    bench_wrk::ensure_wrk()?;
    if !matches!(args.vm.machine, Machine::Q35 | Machine::Pc)
        || args.vm.nic != NicModel::VirtioNetPci
    {
        bail!(
            "vm-compare needs --machine q35 or pc with --nic virtio-net-pci (the Linux guest loads virtio_pci + virtio_net)"
        );
    }
    let started = Instant::now();
    let load_before = host_load();
    let server = crate::native::build_server()?;
    let prepare_start = Instant::now();
    let linux = bench_linux_guest::prepare(&server)?;
    let prepared = prepare_start.elapsed();

    // (a) The image through `xtask run`.
    let boot = Instant::now();
    let mut run = XtaskRun::start("vm-compare-image", Some(&args.vm), IMAGE_APPEND)?;
    let first_200 = run.wait_ready(&ROUTES[..1], READY_LIMIT)?;
    run.wait_ready(&ROUTES, READY_LIMIT)?;
    let ready = boot.elapsed();
    let qemu = run.server_pid()?;
    let qemu_args = proc_args(qemu);
    let image_run_command = run.command().to_string();
    let runs = load_all(run.port, args.seconds)?;
    let image_guest = Guest {
        name: "image",
        first_200,
        ready,
        rss_kib: rss_kib(qemu),
        qemu_args,
        runs,
    };
    drop(run);

    // (b) The Linux guest with the same QEMU flags.
    let port = super::free_port()?;
    let cmd = linux_command(&args.vm, image, port, &linux)?;
    let boot = Instant::now();
    let mut group = Group::spawn(cmd, "vm-compare-linux")?;
    let first_200 = wait_ready(&mut group, port, &ROUTES[..1], READY_LIMIT)?;
    wait_ready(&mut group, port, &ROUTES, READY_LIMIT)?;
    let ready = boot.elapsed();
    let qemu_args = proc_args(group.pid());
    let runs = load_all(port, args.seconds)?;
    let linux_guest = Guest {
        name: "Linux guest",
        first_200,
        ready,
        rss_kib: rss_kib(group.pid()),
        qemu_args,
        runs,
    };
    let linux_log = group.log.clone();
    let clocksource = std::fs::read_to_string(&linux_log)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("init: clocksource ").map(str::to_string))
        .unwrap_or_else(|| "?".into());
    drop(group);

    let same = without_replaced(&image_guest.qemu_args) == without_replaced(&linux_guest.qemu_args);
    println!(
        "\n## image vs Linux guest, same QEMU settings ({}), keep-alive (wrk, {} s per row)",
        args.vm.describe(),
        args.seconds
    );
    println!();
    println!("- image: `{image_run_command}`");
    println!("- image QEMU: `{}`", shell_words(&image_guest.qemu_args));
    println!(
        "- Linux guest: Debian kernel {} ({}), initrd with busybox, modules {} and target/release/kernel-app `{LINUX_APP_ARGS}` (log: {})",
        linux.release,
        linux.packages.join(", "),
        linux.modules.join(" → "),
        linux_log.display()
    );
    println!("- Linux QEMU: `{}`", shell_words(&linux_guest.qemu_args));
    println!("- Linux guest clocksource (untuned): {clocksource}");
    println!(
        "- QEMU flags identical apart from {}: {}",
        REPLACED.join("/"),
        if same {
            "yes"
        } else {
            "NO (see the two command lines)"
        }
    );
    println!(
        "- host before the runs: {load_before}; after: {}",
        host_load()
    );
    println!();
    println!(
        "| route | connections | image req/s | Linux req/s | image / Linux req/s | image p99 | Linux p99 | image / Linux p99 | non-2xx, socket errors (image; Linux) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for route in ROUTES {
        for connections in CONNECTIONS {
            let (Some(a), Some(b)) = (
                image_guest.find(route, connections),
                linux_guest.find(route, connections),
            ) else {
                continue;
            };
            println!(
                "| `{route}` | {connections} | {:.0} | {:.0} | {} | {} | {} | {} | {}, {}; {}, {} |",
                a.rps,
                b.rps,
                ratio(a.rps, b.rps),
                ms(a.p99_us),
                ms(b.p99_us),
                ratio(a.p99_us, b.p99_us),
                a.non_2xx,
                a.socket_errors_text(),
                b.non_2xx,
                b.socket_errors_text()
            );
        }
    }
    println!();
    println!(
        "| guest | QEMU start → first `/healthz` 200 | → all routes 200 | QEMU RSS after the load |"
    );
    println!("| --- | --- | --- | --- |");
    for g in [&image_guest, &linux_guest] {
        println!(
            "| {} | {:.2} s | {:.2} s | {} |",
            g.name,
            g.first_200.as_secs_f64(),
            g.ready.as_secs_f64(),
            mib(g.rss_kib)
        );
    }
    println!(
        "\n(vm-compare suite: {:.0} s, of which preparing the Linux guest {:.1} s; the image's start includes `xtask run`)",
        started.elapsed().as_secs_f64(),
        prepared.as_secs_f64()
    );
    Ok(())
}

/// wrk on every route and connection count.
fn load_all(port: u16, seconds: u64) -> Result<Vec<(&'static str, Wrk)>> {
    let mut runs = Vec::new();
    for route in ROUTES {
        for connections in CONNECTIONS {
            std::thread::sleep(Duration::from_millis(500));
            runs.push((route, bench_wrk::run(port, route, connections, seconds)?));
        }
    }
    Ok(runs)
}

/// The QEMU command of the Linux guest: the image's command (same `VmArgs`, same forward)
/// with the kernel, initrd and command line replaced.
fn linux_command(vm: &VmArgs, image: &Image, port: u16, linux: &LinuxGuest) -> Result<Command> {
    let template = crate::vm::command(vm, image, port, 8080, IMAGE_APPEND)?;
    let mut args: Vec<OsString> = template.get_args().map(|a| a.to_os_string()).collect();
    let append = format!("{LINUX_KERNEL_ARGS} -- {LINUX_APP_ARGS}");
    for (flag, value) in [
        ("-kernel", linux.vmlinuz.clone().into_os_string()),
        ("-initrd", linux.initrd.clone().into_os_string()),
        ("-append", OsString::from(append)),
    ] {
        match args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < args.len() => args[i + 1] = value,
            _ => {
                args.push(flag.into());
                args.push(value);
            }
        }
    }
    let mut cmd = Command::new(template.get_program());
    cmd.args(args);
    Ok(cmd)
}

/// A running process's arguments (from /proc/PID/cmdline).
fn proc_args(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .context("read cmdline")
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The arguments without the values of [`REPLACED`] options (and without the hostfwd port,
/// which differs per run), for comparing the two QEMU command lines.
fn without_replaced(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut skip = false;
    for arg in args {
        if skip {
            skip = false;
            out.push("…".into());
            continue;
        }
        skip = REPLACED.contains(&arg.as_str());
        out.push(match arg.split_once(",hostfwd=tcp:127.0.0.1:") {
            Some((head, rest)) => format!(
                "{head},hostfwd=tcp:127.0.0.1:…{}",
                rest.split_once('-').map_or("", |(_, g)| g)
            ),
            None => arg.clone(),
        });
    }
    out
}

/// Arguments joined for a shell (quoted where they hold spaces).
fn shell_words(args: &[String]) -> String {
    args.iter()
        .map(|a| {
            if a.is_empty() || a.contains(' ') {
                format!("'{a}'")
            } else {
                a.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1e3)
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.3}", a / b)
    } else {
        "–".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_ignores_kernel_initrd_append_and_port() {
        let a: Vec<String> = [
            "qemu",
            "-kernel",
            "l",
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:1234-:8080",
            "-append",
            "x",
        ]
        .map(String::from)
        .to_vec();
        let b: Vec<String> = [
            "qemu",
            "-kernel",
            "v",
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:999-:8080",
            "-append",
            "y z",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(without_replaced(&a), without_replaced(&b));
        let c: Vec<String> = [
            "qemu",
            "-kernel",
            "v",
            "-netdev",
            "user,id=net0,hostfwd=tcp:127.0.0.1:999-:9090",
        ]
        .map(String::from)
        .to_vec();
        assert_ne!(without_replaced(&a)[4], without_replaced(&c)[4]);
    }
}
