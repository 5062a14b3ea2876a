//! `cargo xtask bench profile`: where the guest spends its time under load.
//!
//! Boots the image as the other benches do (`vm::command` with the bench's `VmArgs`, `log=warn`;
//! on `--machine microvm` the microvm variant, as `xtask run` does)
//! plus a QEMU human monitor on a unix socket in a temporary directory, waits until `/healthz`
//! answers, runs `wrk -t1 -c{clients} -d{seconds}s` on `--route` and meanwhile asks the monitor for
//! `info registers -a` every ~2 ms. Each vCPU's RIP is mapped to a function of the unstripped
//! application ELF ([`crate::app::linked_app_path`]; the image's copy is stripped), relocated by
//! the load base: the loader's serial line `loader: jumping to 0x...` minus the ELF's entry point.
//! Kernel symbols carry the `hermit__` prefix of the kernel build; they and the application's
//! are demangled with `rustc-demangle`.
//!
//! A sample is the instruction QEMU has on record for the vCPU, not a host-side profile: under TCG
//! that is where the vCPU was in translated code, so time QEMU spends emulating a device for the
//! guest (an MMIO or port write) and a halted vCPU (`hlt` in the idle loop) count at the guest
//! instruction that waits. Each sample takes QEMU's big lock, so the load is a bit slower than
//! unsampled.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, anyhow, bail, ensure};

use super::BenchArgs;
use super::bench_server::{Group, wait_ready};
use super::bench_wrk::{self, Wrk};
use crate::image::Image;
use crate::image_dir::{MICROVM_MIN_MEMORY_MIB, USER_NET_STATIC_OPTIONS, with_kernel_options};
use crate::qemu::Machine;
use crate::vm::VmArgs;

/// The app's words (as for the other benches: warnings only, no per-request logging).
const APPEND: &str = "log=warn";

/// Pause between two monitor queries (less the time the query took).
const SAMPLE_INTERVAL: Duration = Duration::from_millis(2);

/// Functions listed in the table.
const TOP: usize = 30;

/// How long the guest may take to answer `/healthz` after QEMU starts (TCG on a busy host).
const READY_LIMIT: Duration = Duration::from_secs(240);

/// How long to wait for `--route` to answer 200 (boot functions deploy in the background).
const ROUTE_LIMIT: Duration = Duration::from_secs(60);

/// A monitor reply that takes longer means QEMU is stuck.
const MONITOR_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest monitor reply accepted (`info registers -a` is ~2 KiB per vCPU).
const MAX_REPLY: usize = 1 << 20;

/// What the human monitor prints when it is ready for the next command.
const PROMPT: &[u8] = b"(qemu) ";

/// The monitor command that yields every vCPU's registers.
const REGISTERS: &str = "info registers -a";

/// Prefix the kernel build puts on every kernel-internal symbol (see `kernel.rs`).
const KERNEL_PREFIX: &str = "hermit__";

/// Function names longer than this are cut (generic arguments make some very long).
const NAME_WIDTH: usize = 120;

/// `cargo xtask bench profile`.
pub(crate) fn bench_profile(args: &BenchArgs) -> Result<()> {
    bench_wrk::ensure_wrk()?;
    let route = args.route.as_str();
    ensure!(
        route.starts_with('/') && !route.contains(|c: char| c.is_whitespace() || c.is_control()),
        "--route must be a path starting with '/' without spaces: {route:?}"
    );
    let (image, vm, append) = setup(args)?;
    let elf = crate::app::linked_app_path(true);
    let entry = check_same_code(&elf, &image.app)?;
    let symbols = Symbols::load(&elf)?;

    // Declared before the QEMU group so that QEMU is killed before the directory goes.
    let temp = TempDir::create()?;
    let socket = temp.path.join("monitor.sock");
    let socket_text = socket.to_string_lossy();
    ensure!(
        !socket_text.contains(',') && socket_text.len() < 100,
        "monitor socket path {socket_text:?} is unusable for QEMU (a comma, or too long): set TMPDIR"
    );
    let port = super::free_port()?;
    let mut cmd = crate::vm::command(&vm, &image, port, 8080, &append)?;
    cmd.arg("-monitor")
        .arg(format!("unix:{socket_text},server,nowait"));
    let mut group = Group::spawn(cmd, "profile")?;
    wait_ready(&mut group, port, &["/healthz"], READY_LIMIT)?;
    let route_note = if route == "/healthz" {
        None
    } else {
        wait_ready(&mut group, port, &[route], ROUTE_LIMIT)
            .err()
            .map(|err| format!("{route} did not answer 200 before the load ({err:#})"))
    };

    let serial = std::fs::read_to_string(&group.log)
        .with_context(|| format!("read {}", group.log.display()))?;
    let jump = loader_jump(&serial).with_context(|| {
        format!(
            "no \"loader: jumping to 0x...\" line in {}",
            group.log.display()
        )
    })?;
    let base = jump.checked_sub(entry).with_context(|| {
        format!("the loader jumped to {jump:#x}, below the ELF's entry point {entry:#x}")
    })?;
    ensure!(
        base % 0x1000 == 0,
        "load base {base:#x} (jump {jump:#x} − entry {entry:#x}) is not page-aligned: \
         {} does not match the booted image",
        elf.display()
    );

    let mut monitor = Monitor::connect(&socket)?;
    ensure!(
        !parse_registers(&monitor.command(REGISTERS)?).is_empty(),
        "QEMU's `{REGISTERS}` shows no RIP (is the guest in 64-bit mode?)"
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || sample(monitor, &stop))
    };
    let wrk = bench_wrk::run_with_threads(port, route, args.clients, 1, args.seconds);
    stop.store(true, Ordering::Relaxed);
    let sampled = sampler
        .join()
        .map_err(|_| anyhow!("the sampling thread panicked"))?
        .context("sampling the guest through the QEMU monitor")?;
    let wrk = wrk?;
    ensure!(
        !sampled.samples.is_empty(),
        "no samples: the monitor answered {} times without a RIP",
        sampled.rounds
    );

    let report = Report {
        title: format!(
            "profile: `GET {route}`, wrk -t1 -c{} -d{}s, {}",
            args.clients.max(1),
            args.seconds.max(1),
            vm.describe()
        ),
        wrk,
        sampled,
        base,
        jump,
        entry,
        elf,
        log: group.log.clone(),
        route_note,
    };
    report.print(&symbols);
    Ok(())
}

/// The image, VM settings and kernel command line for the bench's machine, as `xtask run`
/// picks them: on `-M microvm` the microvm variant with its static address (and at least its
/// minimum RAM), else the default image. Built unless `--no-build`.
fn setup(args: &BenchArgs) -> Result<(Image, VmArgs, String)> {
    if args.vm.machine == Machine::Microvm {
        let image = crate::image_dir::microvm_image(!args.no_build)?;
        let vm = VmArgs {
            memory: args.vm.memory.max(MICROVM_MIN_MEMORY_MIB),
            ..args.vm.clone()
        };
        let append = with_kernel_options(USER_NET_STATIC_OPTIONS, APPEND);
        return Ok((image, vm, append));
    }
    let image = if args.no_build {
        crate::image::existing()?
    } else {
        crate::image::build()?
    };
    Ok((image, args.vm.clone(), APPEND.to_string()))
}

/// One vCPU's state in one `info registers -a` reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct VcpuSample {
    cpu: u32,
    rip: u64,
    /// `HLT=1`: the vCPU was halted (waiting for an interrupt).
    halted: bool,
}

/// What the sampler collected.
#[derive(Debug, Default)]
struct Sampled {
    /// Monitor queries answered.
    rounds: u64,
    samples: Vec<VcpuSample>,
    seconds: f64,
    /// Time of each query (the monitor's answer delay).
    round_trips: Vec<Duration>,
}

/// Queries the registers every [`SAMPLE_INTERVAL`] until `stop`.
fn sample(mut monitor: Monitor, stop: &AtomicBool) -> Result<Sampled> {
    let start = Instant::now();
    let mut out = Sampled::default();
    while !stop.load(Ordering::Relaxed) {
        let asked = Instant::now();
        let reply = monitor.command(REGISTERS)?;
        let took = asked.elapsed();
        out.round_trips.push(took);
        out.samples.extend(parse_registers(&reply));
        out.rounds += 1;
        if let Some(rest) = SAMPLE_INTERVAL.checked_sub(took) {
            std::thread::sleep(rest);
        }
    }
    out.seconds = start.elapsed().as_secs_f64();
    Ok(out)
}

/// Every vCPU's RIP (and whether it was halted) in an `info registers [-a]` reply: `CPU#n`
/// lines start a vCPU's block (absent without `-a`), the `RIP=` line has `HLT=`.
fn parse_registers(text: &str) -> Vec<VcpuSample> {
    let mut out = Vec::new();
    let mut cpu = 0;
    for line in text.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("CPU#") {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            cpu = digits.parse().unwrap_or(cpu);
            continue;
        }
        let mut rip = None;
        let mut halted = false;
        for word in line.split_whitespace() {
            if let Some(hex) = word.strip_prefix("RIP=") {
                rip = u64::from_str_radix(hex, 16).ok();
            } else if word == "HLT=1" {
                halted = true;
            }
        }
        if let Some(rip) = rip {
            out.push(VcpuSample { cpu, rip, halted });
        }
    }
    out
}

/// A connection to QEMU's human monitor.
struct Monitor {
    stream: UnixStream,
}

impl Monitor {
    /// Connects and reads the banner up to the first prompt.
    fn connect(path: &Path) -> Result<Monitor> {
        let stream = UnixStream::connect(path)
            .with_context(|| format!("connect to the QEMU monitor at {}", path.display()))?;
        stream.set_read_timeout(Some(MONITOR_TIMEOUT))?;
        stream.set_write_timeout(Some(MONITOR_TIMEOUT))?;
        let mut monitor = Monitor { stream };
        monitor.reply().context("the QEMU monitor's banner")?;
        Ok(monitor)
    }

    /// Sends `line`; the reply up to the next prompt (with the monitor's echo of `line`).
    fn command(&mut self, line: &str) -> Result<String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("send {line:?} to the QEMU monitor"))?;
        self.reply()
            .with_context(|| format!("the QEMU monitor's answer to {line:?}"))
    }

    fn reply(&mut self) -> Result<String> {
        let mut buf = Vec::new();
        let mut chunk = vec![0u8; 64 * 1024];
        while !buf.ends_with(PROMPT) {
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                bail!("QEMU closed the monitor");
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.len() > MAX_REPLY {
                bail!("no prompt after {MAX_REPLY} bytes");
            }
        }
        Ok(String::from_utf8_lossy(&buf).into_owned())
    }
}

/// The address in the loader's `loader: jumping to 0x...` line.
fn loader_jump(serial: &str) -> Option<u64> {
    let (_, rest) = serial
        .lines()
        .find_map(|l| l.split_once("loader: jumping to "))?;
    let hex = rest.split_whitespace().next()?.strip_prefix("0x")?;
    u64::from_str_radix(hex, 16).ok()
}

/// Checks that `unstripped` has the entry point and executable segments of `image` (stripping
/// leaves both alone); the entry point. They differ when the app was relinked since the image was
/// written, e.g. by the microvm variant's build (`cargo xtask microvm-app`, `bench boot`), which
/// links into the same target path.
fn check_same_code(unstripped: &Path, image: &Path) -> Result<u64> {
    let read = |path: &Path| -> Result<(u64, CodeSegments)> {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let elf = Elf64::parse(&bytes).with_context(|| format!("{}", path.display()))?;
        Ok((elf.entry, elf.code_segments()?))
    };
    let (entry, code) = read(unstripped)?;
    let (image_entry, image_code) = read(image)?;
    ensure!(
        entry == image_entry && code == image_code,
        "{} (entry {entry:#x}) is not the unstripped build of {} (entry {image_entry:#x}), \
         so its symbols would not match: build the image again (without --no-build); a build of \
         the other variant (microvm: `xtask test`, `bench boot`) relinks that file",
        unstripped.display(),
        image.display()
    );
    Ok(entry)
}

/// Executable segments of an ELF file: address and file contents.
type CodeSegments = Vec<(u64, Vec<u8>)>;

/// The parts of a 64-bit little-endian ELF file the profile needs.
struct Elf64<'a> {
    bytes: &'a [u8],
    entry: u64,
    /// Program header table: offset, entry size, count.
    phoff: u64,
    phentsize: u16,
    phnum: u16,
}

/// `PT_LOAD` and `PF_X` of the ELF specification.
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;

impl<'a> Elf64<'a> {
    fn parse(bytes: &'a [u8]) -> Result<Elf64<'a>> {
        ensure!(bytes.starts_with(b"\x7fELF"), "not an ELF file");
        ensure!(bytes.get(4) == Some(&2), "not a 64-bit ELF file");
        ensure!(bytes.get(5) == Some(&1), "not a little-endian ELF file");
        ensure!(bytes.len() >= 64, "ELF header too short");
        Ok(Elf64 {
            bytes,
            entry: le(bytes, 24, 8)?,
            phoff: le(bytes, 32, 8)?,
            phentsize: le(bytes, 54, 2)? as u16,
            phnum: le(bytes, 56, 2)? as u16,
        })
    }

    /// Address and file contents of each executable `PT_LOAD` segment.
    fn code_segments(&self) -> Result<CodeSegments> {
        ensure!(self.phentsize >= 56, "program header entries too small");
        let mut out = Vec::new();
        for i in 0..u64::from(self.phnum) {
            let header = u64::from(self.phentsize)
                .checked_mul(i)
                .and_then(|o| o.checked_add(self.phoff))
                .and_then(|at| usize::try_from(at).ok())
                .and_then(|at| self.bytes.get(at..at.checked_add(56)?))
                .context("program header beyond the end of the file")?;
            let (kind, flags) = (le(header, 0, 4)?, le(header, 4, 4)?);
            if kind != u64::from(PT_LOAD) || flags & u64::from(PF_X) == 0 {
                continue;
            }
            let (offset, vaddr, filesz) =
                (le(header, 8, 8)?, le(header, 16, 8)?, le(header, 32, 8)?);
            let contents = offset
                .checked_add(filesz)
                .and_then(|end| Some((usize::try_from(offset).ok()?, usize::try_from(end).ok()?)))
                .and_then(|(start, end)| self.bytes.get(start..end))
                .context("segment beyond the end of the file")?;
            out.push((vaddr, contents.to_vec()));
        }
        Ok(out)
    }
}

/// The little-endian number of `len` (≤ 8) bytes at `at`.
fn le(bytes: &[u8], at: usize, len: usize) -> Result<u64> {
    let field = at
        .checked_add(len)
        .and_then(|end| bytes.get(at..end))
        .context("ELF file too short")?;
    Ok(field
        .iter()
        .rev()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// A function symbol of the ELF (addresses relative to the load base).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Symbol {
    addr: u64,
    /// 0 when the symbol table gives none.
    size: u64,
    /// As in the symbol table (mangled, maybe with [`KERNEL_PREFIX`]).
    raw: String,
}

/// Function symbols sorted by address, one per address.
struct Symbols {
    list: Vec<Symbol>,
}

impl Symbols {
    /// The text symbols of `elf`, from `llvm-nm --defined-only --print-size`.
    fn load(elf: &Path) -> Result<Symbols> {
        let nm = crate::kernel::llvm_nm()?;
        let mut cmd = Command::new(nm);
        cmd.args(["--defined-only", "--print-size"]).arg(elf);
        let output = cmd.output().with_context(|| format!("start {cmd:?}"))?;
        ensure!(
            output.status.success(),
            "{cmd:?} failed with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        let symbols = Symbols::parse(&String::from_utf8_lossy(&output.stdout));
        ensure!(
            !symbols.list.is_empty(),
            "{} has no function symbols (stripped?)",
            elf.display()
        );
        Ok(symbols)
    }

    /// Parses nm lines `ADDR [SIZE] TYPE NAME`; keeps text symbols (`t`, `T`, `w`, `W`).
    fn parse(text: &str) -> Symbols {
        let mut list = Vec::new();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let (addr, size, kind, name) = match words.as_slice() {
                [addr, size, kind, name] => (*addr, Some(*size), *kind, *name),
                [addr, kind, name] => (*addr, None, *kind, *name),
                _ => continue,
            };
            if !matches!(kind, "t" | "T" | "w" | "W") {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(addr, 16) else {
                continue;
            };
            let size = size
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .unwrap_or(0);
            list.push(Symbol {
                addr,
                size,
                raw: name.to_string(),
            });
        }
        // Of aliases at one address, keep the one with the largest size (then the first name).
        list.sort_by(|a, b| {
            a.addr
                .cmp(&b.addr)
                .then(b.size.cmp(&a.size))
                .then(a.raw.cmp(&b.raw))
        });
        list.dedup_by_key(|s| s.addr);
        Symbols { list }
    }

    /// The index of the function containing `offset` (an address minus the load base).
    fn find(&self, offset: u64) -> Option<usize> {
        let i = self
            .list
            .partition_point(|s| s.addr <= offset)
            .checked_sub(1)?;
        let s = &self.list[i];
        (s.size == 0 || offset - s.addr < s.size).then_some(i)
    }
}

/// Demangled name of a symbol, and whether it is the kernel's: a [`KERNEL_PREFIX`] symbol, or
/// one of the kernel's unprefixed interface globals (`sys_*`, functions of the `hermit` crate).
fn display_name(raw: &str) -> (String, bool) {
    let (mangled, prefixed) = match raw.strip_prefix(KERNEL_PREFIX) {
        Some(rest) => (rest, true),
        None => (raw, false),
    };
    let name = match rustc_demangle::try_demangle(mangled) {
        // `{:#}` leaves out the hashes.
        Ok(demangled) => format!("{demangled:#}"),
        Err(_) => mangled.to_string(),
    };
    let kernel = prefixed
        || name.starts_with("hermit::")
        || name.starts_with("<hermit::")
        || name.starts_with("sys_");
    (shorten(&name, NAME_WIDTH), kernel)
}

/// `text` cut to `width` characters (with an ellipsis).
fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    let mut out: String = text.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Where a sample landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Place {
    /// In the function with this index of [`Symbols::list`].
    Function(usize),
    /// In the app ELF's range but in no function symbol.
    Unnamed,
    /// Below the load base (the loader, firmware).
    Outside,
}

/// Samples and halted samples per place, most samples first.
fn tally(samples: &[VcpuSample], symbols: &Symbols, base: u64) -> Vec<(Place, u64, u64)> {
    let mut counts: HashMap<Place, (u64, u64)> = HashMap::new();
    for s in samples {
        let place = match s.rip.checked_sub(base) {
            None => Place::Outside,
            Some(offset) => symbols.find(offset).map_or(Place::Unnamed, Place::Function),
        };
        let entry = counts.entry(place).or_default();
        entry.0 += 1;
        entry.1 += u64::from(s.halted);
    }
    let mut rows: Vec<(Place, u64, u64)> =
        counts.into_iter().map(|(p, (n, h))| (p, n, h)).collect();
    rows.sort_by(|a, b| {
        b.1.cmp(&a.1).then_with(|| match (a.0, b.0) {
            (Place::Function(x), Place::Function(y)) => x.cmp(&y),
            _ => std::cmp::Ordering::Equal,
        })
    });
    rows
}

/// Everything printed.
struct Report {
    title: String,
    wrk: Wrk,
    sampled: Sampled,
    base: u64,
    jump: u64,
    entry: u64,
    elf: PathBuf,
    log: PathBuf,
    route_note: Option<String>,
}

impl Report {
    fn print(&self, symbols: &Symbols) {
        let samples = &self.sampled.samples;
        let total = samples.len() as u64;
        let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
        let halted = samples.iter().filter(|s| s.halted).count() as u64;
        let mut round_trips = self.sampled.round_trips.clone();
        round_trips.sort();
        let median_rt = round_trips
            .get(round_trips.len() / 2)
            .copied()
            .unwrap_or_default();
        let w = &self.wrk;

        println!("\n## {}", self.title);
        println!();
        println!(
            "- load while sampled: {:.0} req/s ({} responses in {:.2} s), p50 {:.2} ms, p99 {:.2} ms, non-2xx {}, socket errors {}",
            w.rps,
            w.requests,
            w.seconds,
            w.p50_us / 1e3,
            w.p99_us / 1e3,
            w.non_2xx,
            w.socket_errors_text()
        );
        if let Some(note) = &self.route_note {
            println!("- note: {note}");
        }
        println!(
            "- samples: {total} vCPU RIPs from {} `{REGISTERS}` queries in {:.1} s ({:.0} queries/s, \
             one every {} ms asked, median answer {:.2} ms); vCPU halted (HLT=1) in {:.1} % of them",
            self.sampled.rounds,
            self.sampled.seconds,
            self.sampled.rounds as f64 / self.sampled.seconds.max(f64::MIN_POSITIVE),
            SAMPLE_INTERVAL.as_millis(),
            median_rt.as_secs_f64() * 1e3,
            pct(halted)
        );
        let mut cpus: Vec<u32> = samples.iter().map(|s| s.cpu).collect();
        cpus.sort_unstable();
        cpus.dedup();
        if cpus.len() > 1 {
            let per_cpu: Vec<String> = cpus
                .iter()
                .map(|cpu| {
                    let of_cpu = samples.iter().filter(|s| s.cpu == *cpu);
                    let n = of_cpu.clone().count();
                    let h = of_cpu.filter(|s| s.halted).count();
                    format!(
                        "#{cpu} {n} samples, {:.1} % halted",
                        100.0 * h as f64 / n.max(1) as f64
                    )
                })
                .collect();
            println!("- per vCPU: {}", per_cpu.join("; "));
        }
        println!(
            "- symbols: {} ({} functions), load base {:#x} = `loader: jumping to {:#x}` − ELF entry {:#x}",
            self.elf.display(),
            symbols.list.len(),
            self.base,
            self.jump,
            self.entry
        );
        println!("- serial log: {}", self.log.display());
        println!();
        println!("| share | samples | of them halted | in | function |");
        println!("| ---: | ---: | ---: | --- | --- |");
        let rows = tally(samples, symbols, self.base);
        for (place, n, h) in rows.iter().take(TOP) {
            let (name, part) = match place {
                Place::Function(i) => {
                    let (name, kernel) = display_name(&symbols.list[*i].raw);
                    (
                        format!("`{}`", name.replace('|', "\\|")),
                        if kernel { "kernel" } else { "app" },
                    )
                }
                Place::Unnamed => ("(in the ELF, no function symbol)".to_string(), "–"),
                Place::Outside => ("(below the load base)".to_string(), "–"),
            };
            println!("| {:.1} % | {n} | {h} | {part} | {name} |", pct(*n));
        }
        if rows.len() > TOP {
            let rest: u64 = rows[TOP..].iter().map(|(_, n, _)| n).sum();
            println!(
                "| {:.1} % | {rest} | | | ({} other functions) |",
                pct(rest),
                rows.len() - TOP
            );
        }
        println!();
        println!(
            "note: a sample is the guest instruction QEMU has on record for a vCPU when the monitor \
             asks; under TCG that is where the vCPU was in translated code. Time QEMU spends on the \
             guest's behalf (MMIO and port writes to devices such as virtio-net or the APIC timer) \
             counts at the instruction that made the access, and a halted vCPU (the idle loop, \
             `PerCoreScheduler::run`) counts there too. `in`: kernel = the hermit kernel's functions \
             (`{KERNEL_PREFIX}` symbols and its `sys_*` interface), app = the rest (our crates, std, \
             the wasm runtime). Each query takes QEMU's big lock, so \
             the load figures are somewhat below an unsampled run."
        );
    }
}

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn create() -> Result<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path =
            std::env::temp_dir().join(format!("xtask-profile-{}-{nanos:x}", std::process::id()));
        std::fs::create_dir(&path).with_context(|| format!("create {}", path.display()))?;
        Ok(TempDir { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE_CPU: &str = "info registers\r\n\
RAX=0000000000000000 RBX=0000000000a1b2c0 RCX=0000000000000001 RDX=0000000000000000\r\n\
RIP=000000000073a5c4 RFL=00000246 [---Z-P-] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n\
ES =0000 0000000000000000 00000000 00000000\r\n(qemu) ";

    #[test]
    fn reads_rip_and_halt_of_each_vcpu() {
        assert_eq!(
            parse_registers(ONE_CPU),
            vec![VcpuSample {
                cpu: 0,
                rip: 0x73a5c4,
                halted: true
            }]
        );
        let two = "\r\nCPU#0\r\nRIP=0000000000600010 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=0\r\n\
                   \r\nCPU#1\r\nRIP=0000000000600020 RFL=00000002 [-------] CPL=0 II=0 A20=1 SMM=0 HLT=1\r\n(qemu) ";
        assert_eq!(
            parse_registers(two),
            vec![
                VcpuSample {
                    cpu: 0,
                    rip: 0x600010,
                    halted: false
                },
                VcpuSample {
                    cpu: 1,
                    rip: 0x600020,
                    halted: true
                }
            ]
        );
        assert!(parse_registers("EIP=0000fff0 EFL=00000002\r\n(qemu) ").is_empty());
    }

    #[test]
    fn finds_the_loader_jump() {
        let log =
            "loader: command line: -- log=warn\nloader: jumping to 0x73a5c4\n[0][INFO] Welcome";
        assert_eq!(loader_jump(log), Some(0x73a5c4));
        assert_eq!(loader_jump("loader: jumping to nowhere"), None);
        assert_eq!(loader_jump(""), None);
    }

    #[test]
    fn reads_entry_point_and_code_segments() {
        // Header, two program headers (code at file offset 0xb0, then data), 8 bytes of code.
        let mut elf = vec![0u8; 0xb8];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[24..32].copy_from_slice(&0x13a5c4u64.to_le_bytes());
        elf[32..40].copy_from_slice(&64u64.to_le_bytes());
        elf[54..56].copy_from_slice(&56u16.to_le_bytes());
        elf[56..58].copy_from_slice(&2u16.to_le_bytes());
        let code = 64;
        elf[code..code + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        elf[code + 4..code + 8].copy_from_slice(&(PF_X | 4).to_le_bytes());
        elf[code + 8..code + 16].copy_from_slice(&0xb0u64.to_le_bytes());
        elf[code + 16..code + 24].copy_from_slice(&0x1000u64.to_le_bytes());
        elf[code + 32..code + 40].copy_from_slice(&8u64.to_le_bytes());
        let data = 64 + 56;
        elf[data..data + 4].copy_from_slice(&PT_LOAD.to_le_bytes());
        elf[data + 4..data + 8].copy_from_slice(&6u32.to_le_bytes());
        elf[0xb0..0xb8].copy_from_slice(b"\x90\x90\xc3\xcc\xcc\xcc\xcc\xcc");
        let parsed = Elf64::parse(&elf).expect("parse");
        assert_eq!(parsed.entry, 0x13a5c4);
        assert_eq!(
            parsed.code_segments().expect("segments"),
            vec![(0x1000, b"\x90\x90\xc3\xcc\xcc\xcc\xcc\xcc".to_vec())]
        );
        // A segment reaching past the end of the file is an error, not a panic.
        elf[code + 32..code + 40].copy_from_slice(&9u64.to_le_bytes());
        assert!(Elf64::parse(&elf).expect("parse").code_segments().is_err());
        assert!(Elf64::parse(&elf[..20]).is_err());
        elf[4] = 1;
        assert!(Elf64::parse(&elf).is_err());
        assert!(Elf64::parse(b"#!/bin/sh").is_err());
    }

    #[test]
    fn maps_offsets_to_functions() {
        let nm = "0000000000001000 0000000000000010 T main\n\
                  0000000000001000 0000000000000000 t alias\n\
                  0000000000001020 t no_size\n\
                  0000000000002000 0000000000000100 d data\n\
                  0000000000003000 0000000000000020 t hermit___RNvNtCs1_6hermit9scheduler3run\n\
                  garbage line\n";
        let symbols = Symbols::parse(nm);
        assert_eq!(symbols.list.len(), 3);
        assert_eq!(symbols.find(0x1008), Some(0));
        assert_eq!(symbols.find(0x1010), None, "past main's size");
        assert_eq!(symbols.find(0x1500), Some(1), "no size: the nearest below");
        assert_eq!(symbols.find(0x3010), Some(2));
        assert_eq!(symbols.find(0xfff), None);
        let (name, kernel) = display_name(&symbols.list[2].raw);
        assert!(kernel);
        assert_eq!(name, "hermit::scheduler::run");
        assert_eq!(display_name("memcpy"), ("memcpy".to_string(), false));
        assert_eq!(display_name("sys_malloc"), ("sys_malloc".to_string(), true));
        // The kernel's unprefixed interface globals count as the kernel's.
        assert_eq!(
            display_name(
                "_RNvNtNtNtNtCs9sTHkFxDw1y_6hermit4arch6x86_646kernel10interrupts16handle_interrupt"
            ),
            (
                "hermit::arch::x86_64::kernel::interrupts::handle_interrupt".to_string(),
                true
            )
        );

        let samples = [
            0x600000 + 0x1004,
            0x600000 + 0x1008,
            0x600000 + 0x3000,
            0x10,
        ]
        .map(|rip| VcpuSample {
            cpu: 0,
            rip,
            halted: rip == 0x10,
        });
        let rows = tally(&samples, &symbols, 0x600000);
        assert_eq!(rows[0], (Place::Function(0), 2, 0));
        assert!(rows.contains(&(Place::Outside, 1, 1)));
        assert!(rows.contains(&(Place::Function(2), 1, 0)));
    }

    #[test]
    fn long_names_are_cut() {
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abc", 4), "abc");
    }
}
