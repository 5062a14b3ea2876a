//! `cargo xtask bench connections`: how the native server copes with connections (figures only).
//!
//! 1. keep-alive load with wrk on `/healthz` and `/exec/answer` at 4, 32 and 256 connections;
//! 2. the same wrk runs on `/healthz` of a minimal hyper 1.x + tokio server
//!    (`bench/hyper-baseline`, built here from crates.io), and the ratio;
//! 3. many idle connections (10,000 by default) held open: the server's RSS before and while
//!    they are held, what became of them, and whether `/healthz` still answers meanwhile.
//!
//! The server is started through `xtask run --native` with the default workers and queue (the
//! bench does not tune it), only on 127.0.0.1.

use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Result;
use harness::http;

use super::BenchArgs;
use super::bench_server::{
    Group, XtaskRun, host_load, mib, proc_cmdline, proc_status_field, rss_kib, wait_ready,
};
use super::bench_wrk::{self, Wrk};

/// Connection counts of the keep-alive runs.
const CONNECTIONS: [usize; 3] = [4, 32, 256];

/// Routes of the keep-alive runs: the platform alone, and the smallest wasm function.
const ROUTES: [&str; 2] = ["/healthz", "/exec/answer"];

/// The application's words for every server of this suite: defaults apart from the log level.
const APPEND: &str = "log=warn";

/// The idle-connection server: a silent new connection is closed after `header-timeout-ms`
/// (10 s by default), sooner than 10,000 of them open; here it may wait ten minutes, so that
/// what is measured is what holding them costs.
const IDLE_APPEND: &str = "log=warn header-timeout-ms=600000";

/// Pause between two load runs, so that one run's closing connections do not spill into the next.
const SETTLE: Duration = Duration::from_millis(500);

/// The open-file limit the xtask asks for (children inherit it): 10,000 idle sockets on each
/// side, plus what the servers and wrk need.
const NOFILE_WANTED: u64 = 65_536;

/// Longest time spent opening the idle connections (the run stays bounded if the server stops
/// accepting).
const OPEN_LIMIT: Duration = Duration::from_secs(60);

/// Runs the three parts and prints their tables.
pub(crate) fn bench_connections(args: &BenchArgs) -> Result<()> {
    bench_wrk::ensure_wrk()?;
    let nofile = raise_nofile_limit(NOFILE_WANTED);
    crate::native::build_server()?;
    let hyper = build_hyper_baseline()?;
    let started = Instant::now();
    let load_before = host_load();

    // 1. Our server under keep-alive load.
    let mut server = XtaskRun::start("connections-native", None, APPEND)?;
    server.wait_ready(&ROUTES, Duration::from_secs(60))?;
    let server_cmdline = proc_cmdline(server.server_pid()?);
    let run_command = server.command().to_string();
    let mut ours: Vec<(&str, Wrk)> = Vec::new();
    for route in ROUTES {
        for connections in CONNECTIONS {
            std::thread::sleep(SETTLE);
            ours.push((
                route,
                bench_wrk::run(server.port, route, connections, args.seconds)?,
            ));
        }
    }
    let native_log = server.log().to_path_buf();
    drop(server);

    // 2. The hyper baseline with the same wrk settings.
    let port = super::free_port()?;
    let mut cmd = Command::new(&hyper);
    cmd.arg(port.to_string());
    let mut baseline = Group::spawn(cmd, "connections-hyper")?;
    wait_ready(&mut baseline, port, &["/healthz"], Duration::from_secs(30))?;
    let mut theirs = Vec::new();
    for connections in CONNECTIONS {
        std::thread::sleep(SETTLE);
        theirs.push(bench_wrk::run(port, "/healthz", connections, args.seconds)?);
    }
    let hyper_command = baseline.command.clone();
    drop(baseline);
    let load_time = started.elapsed();

    println!(
        "\n## connections: native server, keep-alive load (wrk, {} s per row)",
        args.seconds
    );
    println!();
    println!(
        "- server: `{}`, started by `{run_command}` (log: {})",
        server_cmdline,
        native_log.display()
    );
    println!(
        "- load: `wrk -t min(c,{}) -c C -d {}s --timeout {}s --latency`, keep-alive, 127.0.0.1; open files limit {nofile}",
        std::thread::available_parallelism().map_or(2, |n| n.get()),
        args.seconds,
        bench_wrk::WRK_TIMEOUT_SECS
    );
    println!(
        "- req/s counts every response; 2xx req/s only successful ones; socket errors are connect/read/write/timeout"
    );
    println!(
        "- host before the runs: {load_before}; after: {}",
        host_load()
    );
    println!();
    println!("| route | connections | req/s | 2xx req/s | p50 | p99 | non-2xx | socket errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for (route, w) in &ours {
        println!(
            "| `{route}` | {} | {:.0} | {:.0} | {} | {} | {} | {} |",
            w.connections,
            w.rps,
            w.ok_rps(),
            latency(w.p50_us),
            latency(w.p99_us),
            w.non_2xx,
            w.socket_errors_text()
        );
    }

    println!(
        "\n## connections: `/healthz`, our server vs hyper 1.x + tokio (multi-thread), same wrk settings"
    );
    println!();
    println!(
        "- hyper baseline: `{hyper_command}` (bench/hyper-baseline, {} tokio workers)",
        std::thread::available_parallelism().map_or(2, |n| n.get())
    );
    println!();
    println!(
        "| connections | ours req/s | ours 2xx req/s | hyper req/s | ours / hyper (req/s) | ours / hyper (2xx req/s) | ours p99 | hyper p99 | non-2xx ours / hyper | socket errors ours / hyper |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for h in &theirs {
        let Some((_, o)) = ours
            .iter()
            .find(|(r, w)| *r == "/healthz" && w.connections == h.connections)
        else {
            continue;
        };
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {} | {} | {} | {} | {} / {} | {} / {} |",
            h.connections,
            o.rps,
            o.ok_rps(),
            h.rps,
            ratio(o.rps, h.rps),
            ratio(o.ok_rps(), h.ok_rps()),
            latency(o.p99_us),
            latency(h.p99_us),
            o.non_2xx,
            h.non_2xx,
            o.socket_errors_text(),
            h.socket_errors_text()
        );
    }

    // 3. Idle connections.
    let idle_start = Instant::now();
    let idle = idle_connections(
        args.idle_connections,
        Duration::from_secs(args.seconds.max(5)),
    )?;
    idle.print(nofile);
    println!(
        "\n(connections suite: keep-alive and baseline {:.0} s, idle connections {:.0} s)",
        load_time.as_secs_f64(),
        idle_start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Builds `bench/hyper-baseline` (release, crates.io dependencies from its committed
/// Cargo.lock) into `target/hyper-baseline/`; the binary's path.
fn build_hyper_baseline() -> Result<std::path::PathBuf> {
    let manifest = crate::util::root().join("bench/hyper-baseline/Cargo.toml");
    let target = crate::util::target_dir().join("hyper-baseline");
    crate::util::run(
        crate::util::cargo()
            .args([
                "build",
                "--quiet",
                "--release",
                "--locked",
                "--manifest-path",
            ])
            .arg(&manifest)
            .arg("--target-dir")
            .arg(&target),
    )?;
    Ok(target.join("release/hyper-baseline"))
}

/// Raises this process's soft `RLIMIT_NOFILE` to `wanted` (and the hard limit, when allowed);
/// children inherit it. Returns the soft limit in force.
fn raise_nofile_limit(wanted: u64) -> u64 {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_max < wanted {
            let both = libc::rlimit {
                rlim_cur: wanted,
                rlim_max: wanted,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &both) == 0 {
                return wanted;
            }
        }
        let soft = libc::rlimit {
            rlim_cur: wanted.min(limit.rlim_max),
            rlim_max: limit.rlim_max,
        };
        if libc::setrlimit(libc::RLIMIT_NOFILE, &soft) == 0 {
            return soft.rlim_cur;
        }
    }
    limit.rlim_cur
}

fn latency(us: f64) -> String {
    if us >= 1e3 {
        format!("{:.2} ms", us / 1e3)
    } else {
        format!("{us:.0} µs")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 {
        format!("{:.3}", a / b)
    } else {
        "–".into()
    }
}

/// One `GET /healthz` on a fresh connection during the idle test.
struct Probe {
    /// Status code, or why there was none.
    outcome: Result<u16, String>,
    elapsed: Duration,
}

fn probe_healthz(port: u16) -> Probe {
    let start = Instant::now();
    let outcome = (|| -> Result<u16, String> {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect: {e}"))?;
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        std::io::Write::write_all(
            &mut stream,
            &http::request_bytes("GET", "/healthz", &[], b""),
        )
        .map_err(|e| format!("write: {e}"))?;
        http::read_response(&mut stream, &mut Vec::new())
            .map(|head| head.status)
            .map_err(|e| format!("read: {e}"))
    })();
    Probe {
        outcome,
        elapsed: start.elapsed(),
    }
}

/// Probes as "200 ×5, 0.21–0.40 ms".
fn describe_probes(probes: &[Probe]) -> String {
    let mut counts: Vec<(String, usize)> = Vec::new();
    for p in probes {
        let key = match &p.outcome {
            Ok(status) => status.to_string(),
            Err(err) => err.clone(),
        };
        match counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => counts.push((key, 1)),
        }
    }
    let mut times: Vec<f64> = probes
        .iter()
        .map(|p| p.elapsed.as_secs_f64() * 1e3)
        .collect();
    times.sort_by(f64::total_cmp);
    let outcomes = counts
        .iter()
        .map(|(k, n)| format!("{k} ×{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    match (times.first(), times.get(times.len() / 2), times.last()) {
        (Some(min), Some(median), Some(max)) => {
            format!("{outcomes}; latency min {min:.2} / median {median:.2} / max {max:.2} ms")
        }
        _ => outcomes,
    }
}

/// What the idle-connection test saw.
struct Idle {
    load: String,
    /// Time of each successful connect, sorted.
    connect_times: Vec<Duration>,
    command: String,
    wanted: usize,
    opened: usize,
    failed: usize,
    first_failure: Option<String>,
    open_time: Duration,
    hold: Duration,
    rss_before: Option<u64>,
    rss_held: Option<u64>,
    rss_after: Option<u64>,
    threads_before: Option<u64>,
    threads_held: Option<u64>,
    fds_before: usize,
    fds_held: usize,
    /// State of the idle connections at the end of the hold.
    silent: usize,
    answered: Vec<(String, usize)>,
    closed: usize,
    reset: usize,
    before: Vec<Probe>,
    during: Vec<Probe>,
    after: Vec<Probe>,
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Opens `count` connections that send nothing to a fresh native server, holds them for
/// `hold` while probing `/healthz` and sampling the server's RSS, then closes them.
fn idle_connections(count: usize, hold: Duration) -> Result<Idle> {
    let mut server = XtaskRun::start("connections-idle", None, IDLE_APPEND)?;
    server.wait_ready(&["/healthz", "/exec/answer"], Duration::from_secs(60))?;
    let pid = server.server_pid()?;
    std::thread::sleep(Duration::from_secs(1));
    let before: Vec<Probe> = (0..5).map(|_| probe_healthz(server.port)).collect();
    let rss_before = rss_kib(pid);
    let threads_before = proc_status_field(pid, "Threads");
    let fds_before = fd_count(pid);

    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let mut sockets = Vec::with_capacity(count);
    let mut connect_times = Vec::with_capacity(count);
    let (mut failed, mut consecutive, mut first_failure) = (0usize, 0usize, None);
    let open_start = Instant::now();
    while sockets.len() + failed < count && open_start.elapsed() < OPEN_LIMIT && consecutive < 100 {
        let attempt = Instant::now();
        match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            Ok(stream) => {
                connect_times.push(attempt.elapsed());
                sockets.push(stream);
                consecutive = 0;
            }
            Err(err) => {
                failed += 1;
                consecutive += 1;
                first_failure
                    .get_or_insert_with(|| format!("{err} (after {} opened)", sockets.len()));
            }
        }
    }
    let open_time = open_start.elapsed();
    connect_times.sort_unstable();

    // Hold: probe /healthz and sample the server once a second or so.
    let hold_start = Instant::now();
    let (mut rss_held, mut threads_held, mut fds_held) = (None::<u64>, None::<u64>, 0usize);
    let mut during = Vec::new();
    let rounds = 5u32;
    for round in 0..rounds {
        let due = hold * (round + 1) / rounds;
        if let Some(wait) = due.checked_sub(hold_start.elapsed()) {
            std::thread::sleep(wait);
        }
        rss_held = rss_held.max(rss_kib(pid));
        threads_held = threads_held.max(proc_status_field(pid, "Threads"));
        fds_held = fds_held.max(fd_count(pid));
        during.push(probe_healthz(server.port));
    }
    let held_for = hold_start.elapsed();

    // What became of the idle connections: still open and silent, answered, closed or reset.
    let (mut silent, mut closed, mut reset) = (0, 0, 0);
    let mut answered: Vec<(String, usize)> = Vec::new();
    let mut buf = [0u8; 12];
    for socket in &sockets {
        let _ = socket.set_nonblocking(true);
        match socket.peek(&mut buf) {
            Ok(0) => closed += 1,
            Ok(n) => {
                let status = if n >= 12 && buf.starts_with(b"HTTP/1.") {
                    String::from_utf8_lossy(&buf[9..12]).into_owned()
                } else {
                    "data".into()
                };
                match answered.iter_mut().find(|(s, _)| *s == status) {
                    Some((_, k)) => *k += 1,
                    None => answered.push((status, 1)),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => silent += 1,
            Err(_) => reset += 1,
        }
    }
    let opened = sockets.len();
    drop(sockets);
    std::thread::sleep(Duration::from_secs(1));
    let after: Vec<Probe> = (0..5).map(|_| probe_healthz(server.port)).collect();
    let rss_after = rss_kib(pid);
    let command = proc_cmdline(pid);
    drop(server);
    Ok(Idle {
        load: host_load(),
        connect_times,
        command,
        wanted: count,
        opened,
        failed,
        first_failure,
        open_time,
        hold: held_for,
        rss_before,
        rss_held,
        rss_after,
        threads_before,
        threads_held,
        fds_before,
        fds_held,
        silent,
        answered,
        closed,
        reset,
        before,
        during,
        after,
    })
}

impl Idle {
    fn print(&self, nofile: u64) {
        let opt = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
        println!(
            "\n## connections: {} idle connections to the native server",
            self.wanted
        );
        println!();
        println!(
            "- server: `{}` (via `xtask run --native`), open files limit {nofile} (inherited)",
            self.command
        );
        println!(
            "- each connection is opened and sends nothing (`{IDLE_APPEND}`: a silent connection may wait 10 min for its head, not the default 10 s); /healthz is probed on fresh connections"
        );
        println!("- host after the test: {}", self.load);
        println!();
        println!("| figure | value |");
        println!("| --- | --- |");
        let failures = match &self.first_failure {
            Some(first) => format!(", {} failed, first: {first}", self.failed),
            None => String::new(),
        };
        println!(
            "| opened | {} of {} in {:.2} s{failures} |",
            self.opened,
            self.wanted,
            self.open_time.as_secs_f64()
        );
        let at = |q: f64| {
            let i = ((self.connect_times.len() as f64 * q) as usize)
                .min(self.connect_times.len().saturating_sub(1));
            self.connect_times
                .get(i)
                .map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        let slow = self
            .connect_times
            .iter()
            .filter(|d| **d >= Duration::from_millis(900))
            .count();
        println!(
            "| connect time p50 / p99 / max | {:.2} / {:.2} / {:.0} ms ({slow} took ≥ 0.9 s: a SYN was dropped and retransmitted, typically a full accept queue) |",
            at(0.5),
            at(0.99),
            at(1.0)
        );
        println!("| held for | {:.1} s |", self.hold.as_secs_f64());
        println!(
            "| server RSS (VmRSS) before / while held (max) / after closing | {} / {} / {} |",
            mib(self.rss_before),
            mib(self.rss_held),
            mib(self.rss_after)
        );
        if let (Some(before), Some(held)) = (self.rss_before, self.rss_held)
            && self.opened > 0
        {
            println!(
                "| RSS growth per held connection | {:.2} KiB |",
                held.saturating_sub(before) as f64 / self.opened as f64
            );
        }
        println!(
            "| server threads before / while held | {} / {} |",
            opt(self.threads_before),
            opt(self.threads_held)
        );
        println!(
            "| server open fds before / while held (max) | {} / {} |",
            self.fds_before, self.fds_held
        );
        let answered = if self.answered.is_empty() {
            "0".to_string()
        } else {
            self.answered
                .iter()
                .map(|(s, n)| format!("{n} got {s}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "| idle connections at the end of the hold | {} open and silent; answered: {answered}; {} closed without answer; {} reset |",
            self.silent, self.closed, self.reset
        );
        println!(
            "| `/healthz` before (5 probes) | {} |",
            describe_probes(&self.before)
        );
        println!(
            "| `/healthz` while held (5 probes) | {} |",
            describe_probes(&self.during)
        );
        println!(
            "| `/healthz` after closing (5 probes) | {} |",
            describe_probes(&self.after)
        );
    }
}
