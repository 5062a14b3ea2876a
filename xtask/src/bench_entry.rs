//! `cargo xtask bench boot`, entry table: boot time through multiboot vs PVH on q35 and microvm,
//! in the same run, boots alternating between the two entries so that host load hits both alike.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Running, free_port, get_status, median, wait_first_response};
use crate::image::Image;
use crate::image_dir::{MICROVM_MIN_MEMORY_MIB, USER_NET_STATIC_OPTIONS, with_kernel_options};
use crate::qemu::{BootEntry, Machine};
use crate::vm::VmArgs;

/// The function whose first answer is timed (a boot function of both images).
const FUNCTION_PATH: &str = "/exec/answer";

/// How long one boot may take (TCG on a busy host).
const BOOT_LIMIT: Duration = Duration::from_secs(180);

/// QEMU start → first 200 from `/healthz`, and → first 200 from [`FUNCTION_PATH`].
fn boot_once(vm: &VmArgs, image: &Image, append: &str) -> Result<(Duration, Duration)> {
    let port = free_port()?;
    let cmd = crate::vm::command(vm, image, port, 8080, append)?;
    let start = Instant::now();
    let _running = Running::spawn(cmd)?;
    let healthz = wait_first_response(port, start, BOOT_LIMIT)?;
    loop {
        if get_status(port, FUNCTION_PATH) == Some(200) {
            return Ok((healthz, start.elapsed()));
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
        "\n## boot time by loader entry ({} vCPU, TCG unless KVM is usable; boots alternate)",
        args.smp
    );
    println!(
        "| machine | entry | → `/healthz` 200, median (min–max) | → `{FUNCTION_PATH}` 200 | boots |"
    );
    println!("| --- | --- | --- | --- | --- |");
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
        let mut times: [(Vec<Duration>, Vec<Duration>); 2] = Default::default();
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
                    Ok((healthz, function)) => {
                        times[index].0.push(healthz);
                        times[index].1.push(function);
                    }
                    Err(err) => failures[index] = Some(err.to_string()),
                }
            }
        }
        for (index, entry) in entries.iter().enumerate() {
            let (healthz, function) = &times[index];
            let name = crate::qemu::machine_name(machine);
            if healthz.is_empty() {
                let reason = failures[index].clone().unwrap_or_default();
                println!("| {name} | {entry:?} | failed: {reason} | | 0 |");
                continue;
            }
            println!(
                "| {name} | {entry:?} | {} | {} | {} |",
                spread(healthz),
                spread(function),
                healthz.len()
            );
        }
    }
    Ok(())
}
