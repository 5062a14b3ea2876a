//! `cargo xtask bench`: figures, never pass/fail. Boot time and image size; request rates and
//! latencies of the native server and the image side by side; connection handling (keep-alive
//! load with wrk, a hyper baseline, idle connections); the image next to a Linux guest; and
//! `profile`, a sampling profile of the guest under load (where its time goes).

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::{ProcessGroup, http};

use crate::image::Image;
use crate::vm::VmArgs;

/// What to measure.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// QEMU start → first 200 from a function and from /healthz on q35, pc and microvm, with
    /// a breakdown from the serial console; the image's size by part.
    Boot,
    /// Requests/s and latency: native vs image with 1 and 2 vCPUs.
    Http,
    /// Requests/s of a key-value GET: in-memory vs Redis, native vs image.
    Kv,
    /// Many instances side by side, each answering /healthz and a function on its own port:
    /// time until all answered, host memory (RSS, PSS, private) per QEMU process.
    Density,
    /// Native server under wrk at 4/32/256 keep-alive connections, a hyper baseline, and
    /// 10,000 idle connections (RSS, does /healthz still answer).
    Connections,
    /// The image vs a Linux guest running our native server under identical QEMU settings.
    VmCompare,
    /// The native server (then the image) under a long mix of good and hostile requests
    /// (`guests/hostile/`): answers by status, memory over time.
    Soak,
    /// Where the guest spends its time under load: wrk on `--route` while the guest's
    /// instruction pointer is sampled through the QEMU monitor; a table of functions.
    /// Not part of `all`.
    Profile,
    /// Instances sharing one Redis: deploy propagation (median, max over 20 deploys) and
    /// requests/s through HAProxy with 1 and 3 native instances.
    Fleet,
    /// Everything (but `profile`).
    All,
}

/// Options of `cargo xtask bench`.
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(value_enum, default_value_t = Suite::All)]
    pub suite: Suite,
    /// Boots to time (the median is reported).
    #[arg(long, default_value_t = 5)]
    pub boots: usize,
    /// Seconds of load per HTTP measurement.
    #[arg(long, default_value_t = 5)]
    pub seconds: u64,
    /// Concurrent keep-alive clients per HTTP measurement.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Instances the density suite boots side by side.
    #[arg(long, default_value_t = 8)]
    pub count: usize,
    /// Guest RAM in MiB of each density instance.
    #[arg(long, default_value_t = 64)]
    pub density_memory: u32,
    /// Idle connections the connections suite holds open against the native server.
    #[arg(long, default_value_t = 10_000)]
    pub idle_connections: usize,
    /// Requests the soak suite sends to the native server.
    #[arg(long, default_value_t = 100_000)]
    pub requests: u64,
    /// Requests the soak suite then sends to the image; 0 for native only.
    #[arg(long, default_value_t = 10_000)]
    pub image_requests: u64,
    /// Guest RAM in MiB of the image the soak suite runs.
    #[arg(long, default_value_t = 64)]
    pub image_memory: u32,
    /// Route the profile suite loads.
    #[arg(long, default_value = "/healthz")]
    pub route: String,
    /// Profile suite: use the image of an earlier build and its unstripped app ELF
    /// (target/x86_64-unknown-hermit/unikernel/kernel-app) instead of building them.
    #[arg(long)]
    pub no_build: bool,
    #[command(flatten)]
    pub vm: VmArgs,
}

/// Runs the selected measurements and prints their tables.
pub fn run(args: &BenchArgs) -> Result<()> {
    if args.suite == Suite::Connections {
        // Native only: no image to build, no VM.
        return bench_connections::bench_connections(args);
    }
    if args.suite == Suite::Soak {
        return bench_soak::bench_soak(args);
    }
    if args.suite == Suite::Profile {
        return bench_profile::bench_profile(args);
    }
    if args.suite == Suite::Fleet {
        return bench_fleet::bench_fleet(args);
    }
    let image = crate::image::build()?;
    if let Err(reason) = crate::qemu::kvm_status() {
        println!("note: KVM unusable ({reason}); VM figures are under TCG (software emulation)");
    }
    if matches!(args.suite, Suite::Boot | Suite::All) {
        let microvm = crate::image_dir::microvm_image(true)?;
        bench_boot::bench_boot(args, &image, &microvm)?;
    }
    if matches!(args.suite, Suite::Http | Suite::All) {
        bench_http(args, &image)?;
    }
    if matches!(args.suite, Suite::Kv | Suite::All) {
        bench_kv::bench_kv(args, &image)?;
    }
    if matches!(args.suite, Suite::Density | Suite::All) {
        let microvm = crate::image_dir::microvm_image(true)?;
        let vm = VmArgs {
            memory: args.density_memory,
            ..args.vm.clone()
        };
        crate::density::bench_density(&vm, args.count, &image, &microvm)?;
    }
    if args.suite == Suite::All {
        bench_connections::bench_connections(args)?;
    }
    if matches!(args.suite, Suite::VmCompare | Suite::All) {
        bench_vm_compare::bench_vm_compare(args, &image)?;
    }
    if args.suite == Suite::All {
        bench_fleet::bench_fleet(args)?;
    }
    Ok(())
}

#[path = "bench_boot.rs"]
mod bench_boot;
#[path = "bench_connections.rs"]
mod bench_connections;
#[path = "bench_fleet.rs"]
mod bench_fleet;
#[path = "bench_kv.rs"]
mod bench_kv;
#[path = "bench_linux_guest.rs"]
mod bench_linux_guest;
#[path = "bench_profile.rs"]
mod bench_profile;
#[path = "bench_server.rs"]
mod bench_server;
#[path = "bench_soak.rs"]
mod bench_soak;
#[path = "bench_vm_compare.rs"]
mod bench_vm_compare;
#[path = "bench_wrk.rs"]
mod bench_wrk;

/// A server process (QEMU or native) in its own process group, killed on drop.
struct Running {
    _group: ProcessGroup,
}

impl Running {
    fn spawn(mut cmd: Command) -> Result<Running> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let group = ProcessGroup::spawn(&mut cmd).with_context(|| format!("start {cmd:?}"))?;
        Ok(Running { _group: group })
    }

    /// Like [`Running::spawn`], with the process's stdout (QEMU's serial console) to read.
    fn spawn_with_stdout(mut cmd: Command) -> Result<(Running, std::process::ChildStdout)> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let mut group = ProcessGroup::spawn(&mut cmd).with_context(|| format!("start {cmd:?}"))?;
        let stdout = group.child().stdout.take().context("no stdout pipe")?;
        Ok((Running { _group: group }, stdout))
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Why a probe got no status.
pub(crate) enum ProbeFailure {
    /// Refused, reset or closed without an answer: the guest is not serving yet.
    NotUp,
    /// Connected and sent, but no answer within the timeout: the guest is slow.
    Slow,
}

/// `GET path` with `Connection: close` and a read timeout of `timeout`; the status code.
pub(crate) fn probe(port: u16, path: &str, timeout: Duration) -> Result<u16, ProbeFailure> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).map_err(|_| ProbeFailure::NotUp)?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|_| ProbeFailure::NotUp)?;
    // Read to the end of the body, not to the close: a guest's FIN may come later.
    let request = http::request_bytes("GET", path, &[], b"");
    let answer = stream
        .write_all(&request)
        .and_then(|()| http::read_response(&mut stream, &mut Vec::new()));
    match answer {
        Ok(head) => Ok(head.status),
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(ProbeFailure::Slow)
        }
        Err(_) => Err(ProbeFailure::NotUp),
    }
}

/// Polls `GET /healthz` until it answers 200; the time since `start`.
fn wait_first_response(port: u16, start: Instant, limit: Duration) -> Result<Duration> {
    // Short attempts while the guest boots (QEMU's user network accepts at once and the guest
    // drops SYNs until its stack is up: a fresh attempt beats a retransmission). Once the guest
    // answers slowly, longer ones: each abandoned connection costs a hermit 0.11 guest dearly.
    let mut attempt = Duration::from_millis(100);
    loop {
        match probe(port, "/healthz", attempt) {
            Ok(200) => return Ok(start.elapsed()),
            Err(ProbeFailure::Slow) => attempt = (attempt * 2).min(Duration::from_secs(2)),
            _ => {}
        }
        if start.elapsed() > limit {
            bail!("no response on port {port} within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn vm_with(args: &BenchArgs, smp: u32) -> VmArgs {
    VmArgs {
        smp,
        ..args.vm.clone()
    }
}

fn boot_vm(vm: &VmArgs, image: &Image, port: u16, append: &str) -> Result<(Running, Duration)> {
    let cmd = crate::vm::command(vm, image, port, 8080, append)?;
    let start = Instant::now();
    let running = Running::spawn(cmd)?;
    let elapsed = wait_first_response(port, start, Duration::from_secs(120))?;
    Ok((running, elapsed))
}

pub(crate) fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// Result of a load run.
struct Load {
    requests: u64,
    errors: u64,
    seconds: f64,
    p50_us: u64,
    p99_us: u64,
}

/// `clients` keep-alive connections sending `GET path` for `seconds`.
fn load(port: u16, path: &str, clients: usize, seconds: u64) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let workers: Vec<_> = (0..clients.max(1))
        .map(|_| {
            let stop = Arc::clone(&stop);
            let request = format!("GET {path} HTTP/1.1\r\nHost: b\r\n\r\n");
            std::thread::spawn(move || {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                let mut buf = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
                        errors += 1;
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
                    while !stop.load(Ordering::Relaxed) {
                        let t = Instant::now();
                        let answer = stream
                            .write_all(request.as_bytes())
                            .and_then(|()| http::read_response(&mut stream, &mut buf));
                        match answer {
                            Ok(http::Head {
                                status: 200,
                                closes,
                                ..
                            }) => {
                                latencies.push(t.elapsed().as_micros() as u64);
                                if closes {
                                    break;
                                }
                            }
                            _ => {
                                errors += 1;
                                break;
                            }
                        }
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    let (mut all, mut errors) = (Vec::new(), 0);
    for worker in workers {
        if let Ok((latencies, e)) = worker.join() {
            all.extend(latencies);
            errors += e;
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Load {
        requests: all.len() as u64,
        errors,
        seconds,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
    }
}

/// Paths measured by the HTTP suite: the platform alone, a Spiderlightning guest, a WASI program.
const HTTP_PATHS: &[&str] = &["/healthz", "/http-server-demo/hello", "/api/fib/20"];

/// Admin token the benchmarked servers boot with (for deploy latency).
const BENCH_TOKEN: &str = "bench-admin-token";

/// Median time of `PUT /_admin/functions/{name}` with `body`, over `rounds` deploys.
fn deploy_latency(port: u16, name: &str, body: &[u8], rounds: usize) -> Result<Duration> {
    let mut times = Vec::new();
    for _ in 0..rounds {
        let start = Instant::now();
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let path = format!("/_admin/functions/{name}");
        let authorization = format!("Bearer {BENCH_TOKEN}");
        let request = http::request_bytes("PUT", &path, &[("Authorization", &authorization)], body);
        let status = http::send(&mut stream, &request)?.status;
        if status != 200 && status != 201 {
            bail!("deploy of {name} answered {status}");
        }
        times.push(start.elapsed());
    }
    Ok(median(times))
}

fn bench_http(args: &BenchArgs, image: &Image) -> Result<()> {
    let append = format!("log=warn workers=4 admin-token={BENCH_TOKEN}");
    let guests = crate::util::target_dir().join("guests");
    let deployables = [
        ("answer.wat", std::fs::read(guests.join("answer.wat"))?),
        (
            "http-server-demo.wasm",
            std::fs::read(guests.join("http-server-demo.wasm"))?,
        ),
    ];
    let mut rows: Vec<(String, &str, Load)> = Vec::new();
    let mut deploys: Vec<(String, &str, Duration)> = Vec::new();
    let mut measure = |name: String, port: u16| -> Result<()> {
        for (file, body) in &deployables {
            deploys.push((
                name.clone(),
                *file,
                deploy_latency(port, "bench-deploy", body, 5)?,
            ));
        }
        for path in HTTP_PATHS {
            rows.push((
                name.clone(),
                path,
                load(port, path, args.clients, args.seconds),
            ));
        }
        Ok(())
    };

    let native = crate::native::build_server()?;
    let port = free_port()?;
    let mut cmd = Command::new(native);
    cmd.args(["bind=127.0.0.1", &format!("port={port}")])
        .args(append.split_whitespace());
    let server = Running::spawn(cmd)?;
    wait_first_response(port, Instant::now(), Duration::from_secs(30))?;
    measure("native (Linux process)".to_string(), port)?;
    drop(server);

    for smp in [1, 2] {
        let vm = vm_with(args, smp);
        let port = free_port()?;
        let (_vm, _) = boot_vm(&vm, image, port, &append)?;
        measure(format!("image, {}", vm.describe()), port)?;
    }

    println!(
        "\n## HTTP: {} keep-alive clients, {} s per row",
        args.clients, args.seconds
    );
    println!("| server | path | req/s | vs native | p50 | p99 | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (name, path, l) in &rows {
        let rps = l.requests as f64 / l.seconds;
        let native = rows
            .iter()
            .find(|(n, p, _)| n.starts_with("native") && p == path)
            .map_or(rps, |(_, _, n)| n.requests as f64 / n.seconds);
        println!(
            "| {name} | {path} | {rps:.0} | {:.3} | {:.2} ms | {:.2} ms | {} |",
            rps / native.max(f64::MIN_POSITIVE),
            l.p50_us as f64 / 1e3,
            l.p99_us as f64 / 1e3,
            l.errors
        );
    }
    println!("\n## deploy latency (PUT /_admin/functions, median of 5)");
    println!("| server | module | latency |");
    println!("| --- | --- | --- |");
    for (name, file, latency) in &deploys {
        println!(
            "| {name} | {file} | {:.1} ms |",
            latency.as_secs_f64() * 1e3
        );
    }
    Ok(())
}
