//! `cargo xtask bench boot`, entry table: boot time through multiboot vs PVH on q35 and microvm,
//! in the same run, boots alternating between the two entries so that host load hits both alike.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use harness::process_group::ProcessGroup;

use super::{free_port, get_status, median, wait_first_response};
use crate::image::Image;
use crate::image_dir::{MICROVM_MIN_MEMORY_MIB, USER_NET_STATIC_OPTIONS, with_kernel_options};
use crate::qemu::{BootEntry, Machine};
use crate::vm::VmArgs;

/// The function whose first answer is timed (a boot function of both images).
const FUNCTION_PATH: &str = "/exec/answer";

/// How long one boot may take (TCG on a busy host).
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// What one boot took, from QEMU's start.
struct BootTimes {
    /// Until the loader's first serial line (firmware: QEMU loads the files, the entry runs).
    loader_start: Duration,
    /// Until the loader's `loader: jumping to` line on the serial console (firmware + loader).
    kernel_start: Duration,
    /// Until the first 200 from `/healthz`.
    healthz: Duration,
    /// Until the first 200 from [`FUNCTION_PATH`].
    function: Duration,
}

/// Boots once and times it (see [`BootTimes`]).
fn boot_once(vm: &VmArgs, image: &Image, append: &str) -> Result<BootTimes> {
    let port = free_port()?;
    let mut cmd = crate::vm::command(vm, image, port, 8080, append)?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut group = ProcessGroup::spawn(&mut cmd).with_context(|| format!("start {cmd:?}"))?;
    let serial = group.child().stdout.take().context("QEMU's stdout")?;
    let (seen, serial_times) = mpsc::channel();
    std::thread::spawn(move || {
        let lines = BufReader::new(serial).lines().map_while(Result::ok);
        for line in lines {
            if line.starts_with("loader: hermit-loader") || line.starts_with("loader: jumping to") {
                let _ = seen.send(start.elapsed());
            }
        }
    });
    let healthz = wait_first_response(port, start, BOOT_LIMIT)?;
    let serial_time = || {
        serial_times
            .recv_timeout(Duration::from_secs(1))
            .context("the loader's first and last lines are missing on the serial console")
    };
    let loader_start = serial_time()?;
    let kernel_start = serial_time()?;
    loop {
        if get_status(port, FUNCTION_PATH) == Some(200) {
            return Ok(BootTimes {
                loader_start,
                kernel_start,
                healthz,
                function: start.elapsed(),
            });
        }
        if start.elapsed() > BOOT_LIMIT {
            bail!("no 200 from {FUNCTION_PATH} within {BOOT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn spread(times: &[Duration]) -> String {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let min = times.iter().min().copied().unwrap_or_default();
    let max = times.iter().max().copied().unwrap_or_default();
    format!(
        "{:.0} ms ({:.0}–{:.0})",
        ms(median(times.to_vec())),
        ms(min),
        ms(max)
    )
}

/// Prints, for q35 and microvm, the median (min–max) of `boots` boots through each entry.
pub fn bench_entries(args: &VmArgs, boots: usize, image: &Image, microvm: &Image) -> Result<()> {
    println!(
        "\n## boot time by loader entry: median (min–max) from QEMU's start ({} vCPU, TCG unless \
         KVM is usable; boots alternate)",
        args.smp
    );
    println!(
        "| machine | entry | → loader starts | → kernel starts | → `/healthz` 200 | \
         → `{FUNCTION_PATH}` 200 | boots |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for machine in [Machine::Q35, Machine::Microvm] {
        let (image, append, memory) = match machine {
            Machine::Microvm => (
                microvm,
                with_kernel_options(USER_NET_STATIC_OPTIONS, "log=warn"),
                args.memory.max(MICROVM_MIN_MEMORY_MIB),
            ),
            _ => (image, "log=warn".to_string(), args.memory),
        };
        let entries = [BootEntry::Multiboot, BootEntry::Pvh];
        let mut times: [[Vec<Duration>; 4]; 2] = Default::default();
        let mut failures: [Option<String>; 2] = Default::default();
        for _ in 0..boots.max(1) {
            for (index, entry) in entries.iter().enumerate() {
                let vm = VmArgs {
                    machine,
                    memory,
                    entry: *entry,
                    ..args.clone()
                };
                match boot_once(&vm, image, &append) {
                    Ok(boot) => {
                        times[index][0].push(boot.loader_start);
                        times[index][1].push(boot.kernel_start);
                        times[index][2].push(boot.healthz);
                        times[index][3].push(boot.function);
                    }
                    Err(err) => failures[index] = Some(err.to_string()),
                }
            }
        }
        for (index, entry) in entries.iter().enumerate() {
            let [loader_start, kernel_start, healthz, function] = &times[index];
            let name = crate::qemu::machine_name(machine);
            if healthz.is_empty() {
                let reason = failures[index].clone().unwrap_or_default();
                println!("| {name} | {entry:?} | failed: {reason} | | | | 0 |");
                continue;
            }
            println!(
                "| {name} | {entry:?} | {} | {} | {} | {} | {} |",
                spread(loader_start),
                spread(kernel_start),
                spread(healthz),
                spread(function),
                healthz.len()
            );
        }
    }
    Ok(())
}
