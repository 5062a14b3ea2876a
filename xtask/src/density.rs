//! `cargo xtask bench density`: many instances side by side. Each boots with its own hostfwd
//! port and must answer `/healthz` and a function; the suite prints the time until all answered
//! and the host memory each QEMU process costs (RSS, PSS, private), then kills them all.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::ProcessGroup;

use crate::bench::{ProbeFailure, free_port, probe};
use crate::image::Image;
use crate::image_dir::{MICROVM_MIN_MEMORY_MIB, USER_NET_STATIC_OPTIONS, with_kernel_options};
use crate::qemu::Machine;
use crate::vm::VmArgs;

/// Most instances `bench density` starts.
pub const MAX_DENSITY_COUNT: usize = 128;

/// TCG translation cache of each density instance unless `--tcg-cache` says otherwise: a
/// booted image that served its functions translated ~20 MiB; 8 MiB costs some retranslation.
pub const DENSITY_TCG_CACHE_MIB: u32 = 8;

/// Route every instance must answer besides `/healthz` (a `_start` function embedded in the image).
const DENSITY_FUNCTION_ROUTE: &str = "/exec/answer";

/// How long all boots may take before the measurement gives up (N TCG guests on few cores).
const BOOT_LIMIT: Duration = Duration::from_secs(900);

/// A QEMU process in its own process group, killed (with the group) on drop.
struct Vm {
    group: ProcessGroup,
    port: u16,
}

/// Host memory of one QEMU process in KiB.
#[derive(Default, Clone, Copy)]
struct Memory {
    /// `VmRSS`: every resident page it maps, shared library pages included.
    rss: u64,
    /// `Pss` of smaps_rollup: shared pages divided among the processes sharing them.
    pss: u64,
    /// `RssAnon` + `RssShmem`: its own pages (guest RAM, translation cache, QEMU's heap).
    private: u64,
}

/// The value in KiB of `key` in a /proc status-like text.
fn kib_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl Vm {
    fn spawn(mut cmd: Command, port: u16) -> Result<Vm> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ProcessGroup::spawn(&mut cmd).with_context(|| format!("start {cmd:?}"))?;
        Ok(Vm { group, port })
    }

    fn memory(&self) -> Memory {
        let pid = self.group.id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rollup =
            std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
        let field = |text: &str, key| kib_field(text, key).unwrap_or(0);
        Memory {
            rss: field(&status, "VmRSS:"),
            pss: field(&rollup, "Pss:"),
            private: field(&status, "RssAnon:") + field(&status, "RssShmem:"),
        }
    }

    fn exited(&mut self) -> bool {
        self.group.exited()
    }
}

/// What booting `requested.machine` takes: the VM settings (microvm needs its minimum RAM), the
/// image (the microvm variant there) and the kernel command line with `app_words` (the microvm
/// variant needs its static address).
pub fn machine_setup<'a>(
    requested: &VmArgs,
    image: &'a Image,
    microvm: &'a Image,
    app_words: &str,
) -> (VmArgs, &'a Image, String) {
    match requested.machine {
        Machine::Microvm => (
            VmArgs {
                memory: requested.memory.max(MICROVM_MIN_MEMORY_MIB),
                ..requested.clone()
            },
            microvm,
            with_kernel_options(USER_NET_STATIC_OPTIONS, app_words),
        ),
        _ => (requested.clone(), image, app_words.to_string()),
    }
}

/// Boots one instance on a host port none of `taken` uses (`free_port` releases the port it
/// found, so two calls can return the same one, and QEMU would fail to forward it).
fn spawn_vm(requested: &VmArgs, image: &Image, microvm: &Image, taken: &[Vm]) -> Result<Vm> {
    let mut port = free_port()?;
    while taken.iter().any(|vm| vm.port == port) {
        port = free_port()?;
    }
    let (vm, image, append) = machine_setup(requested, image, microvm, "log=warn");
    let cmd = crate::vm::command(&vm, image, port, 8080, &append)?;
    Vm::spawn(cmd, port)
}

/// Polls `route` of `vm` until 200; the time since `start`.
///
/// An attempt may take 1 s, each later one twice as long up to 4 s: N TCG guests share few host
/// cores, so a first function call can take seconds of wall time, and a probe that gives up
/// sooner leaves the guest working on requests nobody waits for (with 100 ms attempts, 64
/// instances took twice as long to answer the function and one missed the final check).
fn wait_answer(vm: &mut Vm, route: &str, start: Instant) -> Result<Duration> {
    let mut attempt = Duration::from_secs(1);
    loop {
        match probe(vm.port, route, attempt) {
            Ok(200) => return Ok(start.elapsed()),
            Ok(_) | Err(ProbeFailure::NotUp) => std::thread::sleep(Duration::from_millis(20)),
            Err(ProbeFailure::Slow) => attempt = (attempt * 2).min(Duration::from_secs(4)),
        }
        if vm.exited() {
            bail!("QEMU on port {} exited before {route} answered", vm.port);
        }
        if start.elapsed() > BOOT_LIMIT {
            bail!(
                "{route} on port {} did not answer within {BOOT_LIMIT:?}",
                vm.port
            );
        }
    }
}

/// Whether `route` on `port` answers 200 within three attempts of up to 5 s each.
fn answers(port: u16, route: &str) -> bool {
    (0..3).any(|_| {
        let ok = matches!(probe(port, route, Duration::from_secs(5)), Ok(200));
        if !ok {
            std::thread::sleep(Duration::from_millis(100));
        }
        ok
    })
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Boots `count` instances side by side (each with its own hostfwd port), waits until each
/// answers `/healthz` and a function, prints the time until all answered and the host memory
/// per QEMU process, then kills them all. Without `--tcg-cache`, the instances use
/// [`DENSITY_TCG_CACHE_MIB`].
pub fn bench_density(args: &VmArgs, count: usize, image: &Image, microvm: &Image) -> Result<()> {
    if count == 0 || count > MAX_DENSITY_COUNT {
        bail!("--count must be 1..={MAX_DENSITY_COUNT}");
    }
    let args = VmArgs {
        tcg_cache_mib: Some(args.tcg_cache_mib.unwrap_or(DENSITY_TCG_CACHE_MIB)),
        ..args.clone()
    };
    let start = Instant::now();
    let mut vms = Vec::with_capacity(count);
    for _ in 0..count {
        let vm = spawn_vm(&args, image, microvm, &vms)?;
        vms.push(vm);
    }
    let spawned = start.elapsed();
    let mut healthy = Vec::with_capacity(count);
    let mut served = Vec::with_capacity(count);
    for vm in &mut vms {
        healthy.push(wait_answer(vm, "/healthz", start)?);
    }
    for vm in &mut vms {
        served.push(wait_answer(vm, DENSITY_FUNCTION_ROUTE, start)?);
    }
    let all = start.elapsed();
    // Let the last boots settle (they were still translating code), then measure idle VMs.
    std::thread::sleep(Duration::from_secs(2));
    let memory: Vec<Memory> = vms.iter().map(Vm::memory).collect();
    // Every instance answered; each must still answer now that all run.
    let answering = vms
        .iter()
        .filter(|vm| answers(vm.port, "/healthz") && answers(vm.port, DENSITY_FUNCTION_ROUTE))
        .count();
    let (vm_args, _, _) = machine_setup(&args, image, microvm, "");
    println!(
        "\n## density: {count} instances side by side ({}, TCG cache {} MiB)",
        vm_args.describe(),
        args.tcg_cache_mib.unwrap_or(0)
    );
    println!(
        "| instance | host port | /healthz 200 after | {DENSITY_FUNCTION_ROUTE} 200 after | RSS | PSS | private |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (i, vm) in vms.iter().enumerate() {
        let m = memory.get(i).copied().unwrap_or_default();
        println!(
            "| {} | {} | {:.0} ms | {:.0} ms | {:.1} MiB | {:.1} MiB | {:.1} MiB |",
            i + 1,
            vm.port,
            healthy.get(i).map_or(0.0, |d| ms(*d)),
            served.get(i).map_or(0.0, |d| ms(*d)),
            mib(m.rss),
            mib(m.pss),
            mib(m.private)
        );
    }
    let sum = |f: fn(&Memory) -> u64| memory.iter().map(f).sum::<u64>();
    let range = |f: fn(&Memory) -> u64| {
        let values = memory.iter().map(f);
        (
            mib(values.clone().min().unwrap_or(0)),
            mib(values.max().unwrap_or(0)),
        )
    };
    println!("\n| figure | value |");
    println!("| --- | --- |");
    println!(
        "| started {count} QEMU processes in | {:.0} ms |",
        ms(spawned)
    );
    println!(
        "| all {count} answered /healthz and {DENSITY_FUNCTION_ROUTE} after | {:.0} ms |",
        ms(all)
    );
    println!("| still answering both with all running | {answering} of {count} |");
    for (name, f) in [
        ("RSS", (|m: &Memory| m.rss) as fn(&Memory) -> u64),
        ("PSS (shared pages split)", |m: &Memory| m.pss),
        ("private (anonymous + guest RAM)", |m: &Memory| m.private),
    ] {
        let (min, max) = range(f);
        println!(
            "| {name} per QEMU process, mean (min–max) | {:.1} MiB ({min:.1}–{max:.1}) |",
            mib(sum(f)) / count as f64
        );
        println!("| {name} of all {count} | {:.0} MiB |", mib(sum(f)));
    }
    drop(vms);
    Ok(())
}
