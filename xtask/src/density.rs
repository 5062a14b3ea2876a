//! Deployment-form figures for `cargo xtask bench`: boot time per QEMU machine type (`machines`)
//! and many instances side by side (`density`): time until all answer, RSS per QEMU process.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::ProcessGroup;

use crate::bench::{free_port, get_status, median};
use crate::image::Image;
use crate::image_dir::{MICROVM_MIN_MEMORY_MIB, USER_NET_STATIC_OPTIONS, with_kernel_options};
use crate::qemu::Machine;
use crate::vm::VmArgs;

/// Most instances `bench density` starts (bounded: the host has few cores and the suite must
/// stay friendly to it).
pub const MAX_DENSITY_COUNT: usize = 32;

/// How long one boot may take before the measurement gives up (TCG on a busy host).
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// A QEMU process in its own process group, killed (with the group) on drop.
struct Vm {
    group: ProcessGroup,
    port: u16,
}

impl Vm {
    fn spawn(mut cmd: Command, port: u16) -> Result<Vm> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ProcessGroup::spawn(&mut cmd).with_context(|| format!("start {cmd:?}"))?;
        Ok(Vm { group, port })
    }

    /// Resident set size of the QEMU process in KiB (`VmRSS` of /proc/PID/status).
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.group.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    }

    fn exited(&mut self) -> bool {
        self.group.exited()
    }
}

/// Kernel command line and image for `machine`: the microvm variant needs its static address.
fn boot_setup<'a>(machine: Machine, image: &'a Image, microvm: &'a Image) -> (&'a Image, String) {
    match machine {
        Machine::Microvm => (
            microvm,
            with_kernel_options(USER_NET_STATIC_OPTIONS, "log=warn"),
        ),
        _ => (image, "log=warn".to_string()),
    }
}

fn spawn_vm(vm: &VmArgs, image: &Image, microvm: &Image) -> Result<Vm> {
    let port = free_port()?;
    let (image, append) = boot_setup(vm.machine, image, microvm);
    let vm = match vm.machine {
        Machine::Microvm => VmArgs {
            memory: vm.memory.max(MICROVM_MIN_MEMORY_MIB),
            ..vm.clone()
        },
        _ => vm.clone(),
    };
    let cmd = crate::vm::command(&vm, image, port, 8080, &append)?;
    Vm::spawn(cmd, port)
}

/// Polls `/healthz` of `vm` until 200; the time since `start`.
fn wait_healthy(vm: &mut Vm, start: Instant) -> Result<Duration> {
    loop {
        if get_status(vm.port, "/healthz") == Some(200) {
            return Ok(start.elapsed());
        }
        if vm.exited() {
            bail!("QEMU on port {} exited before answering", vm.port);
        }
        if start.elapsed() > BOOT_LIMIT {
            bail!("no response on port {} within {BOOT_LIMIT:?}", vm.port);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Whether `/healthz` on `port` answers 200 within a few attempts (the probe's read timeout is
/// short, and N TCG guests share few host cores).
fn answers(port: u16) -> bool {
    (0..10).any(|_| {
        let ok = get_status(port, "/healthz") == Some(200);
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Boot time (QEMU start → first HTTP 200) on q35, pc and microvm: median of `boots` each.
pub fn bench_machines(args: &VmArgs, boots: usize, image: &Image, microvm: &Image) -> Result<()> {
    println!(
        "\n## boot time by machine type ({} vCPU, {} MiB, TCG unless KVM is usable)",
        args.smp, args.memory
    );
    println!("| machine | firmware | NIC | median | min | max | boots | app ELF |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for machine in [Machine::Q35, Machine::Pc, Machine::Microvm] {
        let vm_args = VmArgs {
            machine,
            ..args.clone()
        };
        let mut times = Vec::new();
        let mut failure = None;
        for _ in 0..boots.max(1) {
            let start = Instant::now();
            let result =
                spawn_vm(&vm_args, image, microvm).and_then(|mut vm| wait_healthy(&mut vm, start));
            match result {
                Ok(elapsed) => times.push(elapsed),
                Err(err) => failure = Some(err),
            }
        }
        let (firmware, nic) = match machine {
            Machine::Microvm => ("qboot", "virtio-net-device (mmio)"),
            _ => ("SeaBIOS", "virtio-net-pci"),
        };
        let (app, _) = boot_setup(machine, image, microvm);
        let app_bytes = std::fs::metadata(&app.module).map(|m| m.len()).unwrap_or(0);
        if times.is_empty() {
            let reason = failure.map(|e| e.to_string()).unwrap_or_default();
            println!(
                "| {} | {firmware} | {nic} | failed: {reason} | | | 0 | {app_bytes} B |",
                crate::qemu::machine_name(machine)
            );
            continue;
        }
        let min = times.iter().min().copied().unwrap_or_default();
        let max = times.iter().max().copied().unwrap_or_default();
        let count = times.len();
        println!(
            "| {} | {firmware} | {nic} | {:.0} ms | {:.0} ms | {:.0} ms | {count} | {:.2} MB |",
            crate::qemu::machine_name(machine),
            ms(median(times)),
            ms(min),
            ms(max),
            app_bytes as f64 / 1e6
        );
    }
    Ok(())
}

/// Boots `count` instances side by side (each with its own hostfwd port), waits until each
/// answers `/healthz`, prints time to boot all and RSS per QEMU process, then kills them all.
pub fn bench_density(args: &VmArgs, count: usize, image: &Image, microvm: &Image) -> Result<()> {
    if count == 0 || count > MAX_DENSITY_COUNT {
        bail!("--count must be 1..={MAX_DENSITY_COUNT}");
    }
    let start = Instant::now();
    let mut vms = Vec::with_capacity(count);
    for _ in 0..count {
        vms.push(spawn_vm(args, image, microvm)?);
    }
    let spawned = start.elapsed();
    let mut ready = Vec::with_capacity(count);
    for vm in &mut vms {
        ready.push(wait_healthy(vm, start)?);
    }
    let all = start.elapsed();
    // Every instance answered; each must still answer now that all run.
    let answering = vms.iter().filter(|vm| answers(vm.port)).count();
    let rss: Vec<u64> = vms.iter().map(|vm| vm.rss_kib().unwrap_or(0)).collect();
    println!(
        "\n## density: {count} instances side by side ({:?}, {} vCPU, {} MiB guest RAM each)",
        args.machine,
        args.smp,
        match args.machine {
            Machine::Microvm => args.memory.max(MICROVM_MIN_MEMORY_MIB),
            _ => args.memory,
        }
    );
    println!("| instance | host port | first 200 after | QEMU RSS |");
    println!("| --- | --- | --- | --- |");
    for (i, vm) in vms.iter().enumerate() {
        println!(
            "| {} | {} | {:.0} ms | {:.1} MiB |",
            i + 1,
            vm.port,
            ms(ready[i]),
            rss[i] as f64 / 1024.0
        );
    }
    let total: u64 = rss.iter().sum();
    println!("\n| figure | value |");
    println!("| --- | --- |");
    println!(
        "| started {count} QEMU processes in | {:.0} ms |",
        ms(spawned)
    );
    println!(
        "| all {count} answered /healthz after | {:.0} ms |",
        ms(all)
    );
    println!("| still answering with all running | {answering} of {count} |");
    println!(
        "| RSS per QEMU process, mean (min–max) | {:.1} MiB ({:.1}–{:.1}) |",
        total as f64 / 1024.0 / count as f64,
        rss.iter().min().copied().unwrap_or(0) as f64 / 1024.0,
        rss.iter().max().copied().unwrap_or(0) as f64 / 1024.0
    );
    println!("| RSS of all {count} | {:.1} MiB |", total as f64 / 1024.0);
    drop(vms);
    Ok(())
}
