//! `cargo xtask bench boot`: QEMU start → first 200 from a Wasm function (and from `/healthz`)
//! on q35, pc and microvm, broken down by the lines the serial console printed on the way; and
//! the image's size by part.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStdout, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::{BenchArgs, ProbeFailure, Running, free_port, median, probe};
use crate::image::Image;
use crate::image_dir::MICROVM_MIN_MEMORY_MIB;
use crate::qemu::{BootEntry, Machine};
use crate::vm::VmArgs;

/// The function the boot is timed to: a Spiderlightning guest embedded in the image.
pub const FUNCTION_ROUTE: &str = "/http-server-demo/hello";

/// How long one boot may take before the measurement gives up (TCG on a busy host).
const BOOT_LIMIT: Duration = Duration::from_secs(120);

/// Stages of a boot that end with a serial line: the loader's first line (firmware done), the
/// kernel's first line (loader done), the kernel starting its network stack (devices found),
/// the network up (DHCP answered; with a static address, when the kernel enters the app).
const STAGES: [(&str, &[&str]); 4] = [
    ("firmware", &["loader: "]),
    ("loader", &["Welcome to Hermit"]),
    ("kernel", &["Try to initialize network!"]),
    (
        "network up",
        &["DHCP config acquired!", "Jumping into application"],
    ),
];

/// One timed boot: when each serial stage ended and when each route first answered 200.
struct BootSample {
    /// Per [`STAGES`] entry, when the last of its lines first arrived (`None` if none came).
    stages: [Option<Duration>; 4],
    healthz: Duration,
    function: Duration,
}

/// First arrival of each stage line on the guest's serial console (QEMU's stdout).
type SerialMarks = Arc<Mutex<Vec<(&'static str, Duration)>>>;

fn watch_serial(stdout: ChildStdout, start: Instant) -> SerialMarks {
    let seen: SerialMarks = Arc::default();
    let record = Arc::clone(&seen);
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let at = start.elapsed();
            let text = String::from_utf8_lossy(&line);
            if let Ok(mut seen) = record.lock() {
                for mark in STAGES.iter().flat_map(|(_, marks)| marks.iter()) {
                    if text.contains(mark) && !seen.iter().any(|(m, _)| m == mark) {
                        seen.push((mark, at));
                    }
                }
            }
            line.clear();
        }
    });
    seen
}

/// When each stage ended: the latest first arrival of its lines.
fn stage_ends(seen: &[(&str, Duration)]) -> [Option<Duration>; 4] {
    STAGES.map(|(_, marks)| {
        seen.iter()
            .filter(|(mark, _)| marks.contains(mark))
            .map(|(_, at)| *at)
            .max()
    })
}

/// Polls `route` until it answers 200 (the function may not be deployed yet: a 404 or 503 is
/// retried after a short pause, which keeps the probing from loading the booting guest).
///
/// A connection that reaches the guest before the app listens is refused at once (the kernel
/// knows the gateway's hardware address from the moment its address is configured,
/// kernel/patches/0032) and retried 2 ms later; one attempt may take 1 s, each later one twice as
/// long (a slow attempt means a slow guest, and a request for a function still being deployed
/// waits for it).
fn wait_route(port: u16, route: &str, start: Instant) -> Result<Duration> {
    let mut attempt = Duration::from_secs(1);
    loop {
        match probe(port, route, attempt) {
            Ok(200) => return Ok(start.elapsed()),
            Ok(_) => std::thread::sleep(Duration::from_millis(5)),
            Err(ProbeFailure::Slow) => attempt = (attempt * 2).min(Duration::from_secs(2)),
            Err(ProbeFailure::NotUp) => std::thread::sleep(Duration::from_millis(2)),
        }
        if start.elapsed() > BOOT_LIMIT {
            bail!("{route} on port {port} did not answer 200 within {BOOT_LIMIT:?}");
        }
    }
}

/// Waits until the serial console says the guest's network is up. Probing earlier only times
/// it worse: QEMU's user network accepts at once and the guest drops the SYN until its stack is
/// up, so each early probe waits out its timeout (longer and longer, not to load a slow guest)
/// and the first 200 came up to 200 ms after the guest was listening.
fn wait_network_up(seen: &SerialMarks, start: Instant) -> Result<()> {
    let (_, network_marks) = STAGES[3];
    loop {
        let up = seen
            .lock()
            .map_err(|_| anyhow::anyhow!("serial watcher panicked"))?
            .iter()
            .any(|(mark, _)| network_marks.contains(mark));
        if up {
            return Ok(());
        }
        if start.elapsed() > BOOT_LIMIT {
            bail!("the serial console did not say the network is up within {BOOT_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Boots `image` once with `append`, timing the serial stages, `/healthz` and [`FUNCTION_ROUTE`].
fn boot_once(vm: &VmArgs, image: &Image, append: &str) -> Result<BootSample> {
    let port = free_port()?;
    let cmd: Command = crate::vm::command(vm, image, port, 8080, append)?;
    let start = Instant::now();
    let (_running, stdout) = Running::spawn_with_stdout(cmd)?;
    let seen = watch_serial(stdout, start);
    wait_network_up(&seen, start)?;
    let healthz = wait_route(port, "/healthz", start)?;
    let function = wait_route(port, FUNCTION_ROUTE, start)?;
    let stages = stage_ends(
        &seen
            .lock()
            .map_err(|_| anyhow::anyhow!("serial watcher panicked"))?,
    );
    Ok(BootSample {
        stages,
        healthz,
        function,
    })
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1e3)
}

/// Median time spent in each stage (from the previous stage's end; a stage whose line did not
/// come counts into the next), in app start until `/healthz` and from there to the function.
fn stage_medians(samples: &[BootSample]) -> Vec<String> {
    let mut columns: Vec<Vec<Duration>> = vec![Vec::new(); STAGES.len() + 2];
    for sample in samples {
        let mut previous = Duration::ZERO;
        let ends = sample
            .stages
            .iter()
            .copied()
            .chain([Some(sample.healthz), Some(sample.function)]);
        for (column, end) in columns.iter_mut().zip(ends) {
            match end {
                Some(end) if end >= previous => {
                    column.push(end - previous);
                    previous = end;
                }
                _ => column.push(Duration::ZERO),
            }
        }
    }
    columns
        .into_iter()
        .map(|column| ms(median(column)))
        .collect()
}

/// One row of the boot table: a machine, its guest RAM and the loader's entry.
struct Row {
    machine: Machine,
    memory: u32,
    entry: BootEntry,
}

/// The rows: q35 through each entry and with 64 MiB, pc, and microvm through each entry.
fn rows(memory: u32) -> [Row; 6] {
    let row = |machine, memory, entry| Row {
        machine,
        memory,
        entry,
    };
    [
        row(Machine::Q35, memory, BootEntry::Pvh),
        row(Machine::Q35, memory, BootEntry::Multiboot),
        row(Machine::Q35, SMALL_MEMORY_MIB, BootEntry::Pvh),
        row(Machine::Pc, memory, BootEntry::Pvh),
        row(Machine::Microvm, memory, BootEntry::Pvh),
        row(Machine::Microvm, memory, BootEntry::Multiboot),
    ]
}

/// Boot time by machine type and entry (median of `--boots` each, the rows' boots taking turns
/// so that host load hits them alike), with the breakdown, then the size.
pub fn bench_boot(args: &BenchArgs, image: &Image, microvm: &Image) -> Result<()> {
    let rows = rows(args.vm.memory);
    let mut samples: Vec<Vec<BootSample>> = rows.iter().map(|_| Vec::new()).collect();
    let mut failures: Vec<Option<String>> = rows.iter().map(|_| None).collect();
    for _ in 0..args.boots.max(1) {
        for (index, row) in rows.iter().enumerate() {
            let requested = VmArgs {
                machine: row.machine,
                memory: row.memory,
                entry: row.entry,
                ..args.vm.clone()
            };
            let (vm, app, append) =
                crate::density::machine_setup(&requested, image, microvm, "log=warn");
            match boot_once(&vm, app, &append) {
                Ok(sample) => {
                    if let Some(row_samples) = samples.get_mut(index) {
                        row_samples.push(sample);
                    }
                }
                Err(err) => {
                    if let Some(failure) = failures.get_mut(index) {
                        *failure = Some(err.to_string());
                    }
                }
            }
        }
    }
    println!(
        "\n## boot: QEMU start → first 200 ({} vCPU, TCG unless KVM is usable; ms, median of {}, \
         boots taking turns)",
        args.vm.smp,
        args.boots.max(1)
    );
    println!(
        "| machine | entry | RAM | firmware | loader | kernel | network up | app → /healthz | \
         → function | total /healthz | total {FUNCTION_ROUTE} (min–max) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for ((row, samples), failure) in rows.iter().zip(&samples).zip(failures) {
        let name = crate::qemu::machine_name(row.machine);
        let memory = match row.machine {
            Machine::Microvm => row.memory.max(MICROVM_MIN_MEMORY_MIB),
            _ => row.memory,
        };
        let head = format!("| {name} | {:?} | {memory} MiB", row.entry);
        if samples.is_empty() {
            let reason = failure.unwrap_or_default();
            println!("{head} | failed: {reason} | | | | | | | |");
            continue;
        }
        let stages = stage_medians(samples);
        let healthz: Vec<Duration> = samples.iter().map(|s| s.healthz).collect();
        let function: Vec<Duration> = samples.iter().map(|s| s.function).collect();
        let min = function.iter().min().copied().unwrap_or_default();
        let max = function.iter().max().copied().unwrap_or_default();
        println!(
            "{head} | {} | {} | {} ({}–{}) |",
            stages.join(" | "),
            ms(median(healthz)),
            ms(median(function)),
            ms(min),
            ms(max)
        );
    }
    println!(
        "Stages end at serial lines: firmware at the loader's first line, loader at the kernel's \
         first, kernel when it starts its network stack, network up at DHCP's answer (static \
         address: when the kernel enters the app); each column is a median on its own."
    );
    print_size(image, args.vm.entry)
}

/// Guest RAM of the small-memory row (the image must serve in 64 MiB).
const SMALL_MEMORY_MIB: u32 = 64;

/// Bytes of the kernel's code and data in the linked app ELF: its symbols, which the kernel
/// build prefixes with `hermit` (kernel and builtins), plus the `sys_*` calls it exports.
fn kernel_bytes(linked: &Path) -> Result<u64> {
    let output = Command::new(crate::kernel::llvm_nm()?)
        .args(["--print-size", "--defined-only"])
        .arg(linked)
        .output()
        .with_context(|| format!("llvm-nm {}", linked.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_addr, size, _kind, name) = (
                fields.next()?,
                fields.next()?,
                fields.next()?,
                fields.next()?,
            );
            (name.starts_with("hermit") || name.starts_with("sys_"))
                .then(|| u64::from_str_radix(size, 16).ok())
                .flatten()
        })
        .sum())
}

/// Bytes of the functions embedded in the image (`crates/boot-functions`).
fn function_bytes() -> u64 {
    let guests = crate::util::target_dir().join("guests");
    crate::image::boot_function_files()
        .iter()
        .map(|file| size_of(&guests.join(file)))
        .sum()
}

fn size_of(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The image's size by part: loader, kernel, embedded functions, the rest of the app ELF, and
/// what QEMU loads (the loader and the compressed app ELF).
fn print_size(image: &Image, entry: BootEntry) -> Result<()> {
    let loader = size_of(image.loader_for(entry));
    let app = size_of(&image.app);
    let kernel = kernel_bytes(&crate::app::linked_app_path(true))?;
    let functions = function_bytes();
    let rest = app.saturating_sub(kernel + functions);
    let kb = |bytes: u64| format!("{:.0} KB", bytes as f64 / 1e3);
    println!("\n## image size (bytes of the files QEMU loads)");
    println!("| part | size |");
    println!("| --- | --- |");
    println!("| loader (`-kernel`, {entry:?} entry) | {} |", kb(loader));
    println!(
        "| kernel: hermit-kernel's symbols in the app ELF | {} |",
        kb(kernel)
    );
    println!(
        "| application: std, wasmi, our crates, ELF headers and relocations | {} |",
        kb(rest)
    );
    println!(
        "| embedded functions ({} files) | {} |",
        crate::image::boot_function_files().len(),
        kb(functions)
    );
    println!(
        "| app ELF (kernel + application + functions) | {} |",
        kb(app)
    );
    let module = size_of(&image.module);
    println!(
        "| **image: loader + compressed app ELF (`-initrd`)** | **{:.2} MB** ({loader} + {module} \
         bytes) |",
        (loader + module) as f64 / 1e6
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn a_stage_ends_at_the_last_of_its_lines() {
        let seen = [
            ("loader: ", at(100)),
            ("Welcome to Hermit", at(110)),
            ("Try to initialize network!", at(200)),
            ("Jumping into application", at(210)),
            ("DHCP config acquired!", at(230)),
        ];
        assert_eq!(
            stage_ends(&seen),
            [Some(at(100)), Some(at(110)), Some(at(200)), Some(at(230))]
        );
        // A static address: no DHCP line, the network is up when the app is entered.
        assert_eq!(stage_ends(&seen[..4])[3], Some(at(210)));
    }

    #[test]
    fn stages_are_timed_from_the_previous_end() {
        let sample = BootSample {
            stages: [Some(at(100)), Some(at(110)), None, Some(at(230))],
            healthz: at(300),
            function: at(350),
        };
        // The kernel's line is missing: its time counts into the network stage.
        assert_eq!(
            stage_medians(&[sample]),
            ["100", "10", "0", "120", "70", "50"]
        );
    }
}
