//! `cargo xtask bench soak`: the server under a long, fixed mix of good and hostile requests.
//!
//! Starts the native server (`xtask run --native --no-build`, like the other server benches),
//! deploys the hostile corpus of `guests/hostile/` (its `cases.json`), then sends `--requests`
//! requests over a few keep-alive connections: mostly good calls (`/healthz`, `/exec/answer`,
//! `/http-server-demo/hello`, `/api/fib/20`), and in a seeded, fixed pattern the hostile cases
//! (their calls, and re-deploys of the ones whose deploy must be refused). Prints the server's
//! resident memory at the start, every 10,000 requests (a tenth of shorter runs) and at the end,
//! the answers by status, which answers differed from the corpus's expectations, and the memory
//! growth after warm-up (the first such interval). Then the same with `--image-requests`
//! requests against the image (`--image-memory`, 64 MiB by default), whose memory is read from
//! `/metrics` (`server_memory_bytes`: the heap in use under hermit, when the kernel reports it).
//! Figures only, never pass/fail.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use harness::http;

use super::BenchArgs;
use super::bench_server::{XtaskRun, host_load, mib, rss_kib};
use crate::vm::VmArgs;

#[path = "../../guests/hostile/manifest.rs"]
mod manifest;

use manifest::Corpus;

/// Admin token the soaked server boots with.
const TOKEN: &str = "soak-admin-token";

/// Keep-alive connections sending requests at once.
const CONNECTIONS: usize = 4;

/// Requests between two memory samples (fewer for runs shorter than ten of them); the first
/// interval is the warm-up.
const SAMPLE_EVERY: u64 = 10_000;

/// Requests between two memory samples of a run of `requests`.
fn sample_every(requests: u64) -> u64 {
    (requests / 10).clamp(1, SAMPLE_EVERY)
}

/// Of every 1,000 requests, this many are hostile (the rest are good).
const HOSTILE_PER_MILLE: u64 = 50;

/// Requests in a row without an answer after which a soak gives up (the server is not
/// answering; the rest would only wait for timeouts).
const GIVE_UP_AFTER: u64 = 20;

/// Seed of the request pattern (the same run every time).
const SEED: u64 = 0x5eed_0fc0_ffee;

/// Good calls and the status they answer.
const GOOD: &[(&str, u16)] = &[
    ("/healthz", 200),
    ("/exec/answer", 200),
    ("/http-server-demo/hello", 200),
    ("/api/fib/20", 200),
];

/// One kind of request in the mix.
#[derive(Debug, Clone)]
struct Kind {
    /// Name in the report.
    label: String,
    /// The raw HTTP/1.1 request (keep-alive).
    raw: Vec<u8>,
    /// The status the corpus expects.
    expected: u16,
}

fn get(label: &str, path: &str, expected: u16) -> Kind {
    Kind {
        label: label.to_string(),
        raw: format!("GET {path} HTTP/1.1\r\nHost: soak\r\n\r\n").into_bytes(),
        expected,
    }
}

/// The good kinds, then one per hostile case (its call, or its refused deploy).
fn kinds(corpus: &Corpus) -> Result<(Vec<Kind>, Vec<Kind>)> {
    let good = GOOD
        .iter()
        .map(|(path, status)| get(path, path, *status))
        .collect();
    let mut hostile = Vec::new();
    for case in &corpus.cases {
        match (&case.request, case.status) {
            (Some(spec), Some(status)) => hostile.push(Kind {
                label: case.name.clone(),
                raw: format!(
                    "{} {} HTTP/1.1\r\nHost: soak\r\n\r\n",
                    spec.method, spec.path
                )
                .into_bytes(),
                expected: status,
            }),
            _ => {
                let source = case.source().map_err(anyhow::Error::msg)?;
                let mut raw = format!(
                    "PUT {} HTTP/1.1\r\nHost: soak\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\n\r\n",
                    case.deploy_target(),
                    source.len()
                )
                .into_bytes();
                raw.extend_from_slice(&source);
                hostile.push(Kind {
                    label: format!("{} (deploy)", case.name),
                    raw,
                    expected: case.deploy_status,
                });
            }
        }
    }
    Ok((good, hostile))
}

/// SplitMix64 of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// The kind of request number `i`: (hostile?, index into its list).
fn pick(i: u64, good: usize, hostile: usize) -> (bool, usize) {
    let r = mix(SEED ^ i);
    if r % 1000 < HOSTILE_PER_MILLE {
        (true, ((r / 1000) % hostile as u64) as usize)
    } else {
        (false, ((r / 1000) % good as u64) as usize)
    }
}

/// One `GET path` on a fresh connection, read to its `Content-Length` (not to the close).
fn fetch(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    stream
        .write_all(&http::request_bytes("GET", path, &[], b""))
        .ok()?;
    let mut buf = Vec::new();
    let head = http::read_response(&mut stream, &mut buf).ok()?;
    Some(String::from_utf8_lossy(buf.get(head.body)?).into_owned())
}

/// `server_memory_bytes` from `/metrics`, if the server reports it.
fn metrics_memory(port: u16) -> Option<u64> {
    fetch(port, "/metrics")?
        .lines()
        .find_map(|l| l.strip_prefix("server_memory_bytes "))
        .and_then(|v| v.trim().parse().ok())
}

/// Deploys every hostile case; the deploys that did not answer as the corpus says.
fn deploy_corpus(port: u16, corpus: &Corpus) -> Result<Vec<String>> {
    let mut surprises = Vec::new();
    for case in &corpus.cases {
        let source = case.source().map_err(anyhow::Error::msg)?;
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        let authorization = format!("Bearer {TOKEN}");
        let request = http::request_bytes(
            "PUT",
            &case.deploy_target(),
            &[("Authorization", &authorization)],
            &source,
        );
        stream.write_all(&request)?;
        let mut buf = Vec::new();
        let status = match http::read_response(&mut stream, &mut buf) {
            Ok(head) => head.status,
            Err(err) => {
                surprises.push(format!(
                    "{}: no answer to the deploy ({err}); the remaining deploys skipped",
                    case.name
                ));
                break;
            }
        };
        if status != case.deploy_status {
            surprises.push(format!(
                "{}: deploy answered {status} (expected {})",
                case.name, case.deploy_status
            ));
        }
    }
    Ok(surprises)
}

/// A memory sample: requests done, time since the load started, resident set of the process
/// that serves (KiB), and what `/metrics` says the server uses (bytes).
#[derive(Debug, Clone, Copy)]
struct Sample {
    done: u64,
    elapsed: Duration,
    rss_kib: Option<u64>,
    reported: Option<u64>,
}

/// What a soak run saw.
#[derive(Debug, Default)]
struct Tally {
    /// Answers by status (0: no answer: the connection failed).
    statuses: BTreeMap<u16, u64>,
    /// Per kind: sent, answered otherwise than expected, the unexpected statuses.
    kinds: BTreeMap<String, (u64, u64, BTreeMap<u16, u64>)>,
    reconnects: u64,
}

/// Sends `requests` requests of the fixed pattern to `port` over [`CONNECTIONS`] keep-alive
/// connections, sampling memory every [`sample_every`] requests; stops early at `limit`.
fn soak(
    port: u16,
    pid: u32,
    requests: u64,
    good: &[Kind],
    hostile: &[Kind],
    limit: Duration,
) -> (Tally, Vec<Sample>, Duration) {
    let next = AtomicU64::new(0);
    let done = AtomicU64::new(0);
    let silent = AtomicU64::new(0);
    let every = sample_every(requests);
    let tally = Mutex::new(Tally::default());
    let samples = Mutex::new(Vec::new());
    let started = Instant::now();
    let sample = |count: u64| Sample {
        done: count,
        elapsed: started.elapsed(),
        rss_kib: rss_kib(pid),
        reported: metrics_memory(port),
    };
    samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(sample(0));
    std::thread::scope(|s| {
        for _ in 0..CONNECTIONS {
            s.spawn(|| {
                let mut stream: Option<TcpStream> = None;
                let mut buf = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= requests
                        || started.elapsed() > limit
                        || silent.load(Ordering::SeqCst) >= GIVE_UP_AFTER
                    {
                        break;
                    }
                    let (is_hostile, index) = pick(i, good.len(), hostile.len());
                    let kind = if is_hostile {
                        &hostile[index]
                    } else {
                        &good[index]
                    };
                    let mut reconnected = false;
                    if stream.is_none() {
                        stream = TcpStream::connect(("127.0.0.1", port)).ok().inspect(|s| {
                            let _ = s.set_nodelay(true);
                            let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                        });
                        reconnected = true;
                    }
                    let answer = match stream.as_mut() {
                        Some(conn) => conn
                            .write_all(&kind.raw)
                            .and_then(|()| http::read_response(conn, &mut buf)),
                        None => Err(std::io::ErrorKind::NotConnected.into()),
                    };
                    let status = match answer {
                        Ok(head) => {
                            if head.closes {
                                stream = None;
                            }
                            silent.store(0, Ordering::SeqCst);
                            head.status
                        }
                        Err(_) => {
                            stream = None;
                            silent.fetch_add(1, Ordering::SeqCst);
                            0
                        }
                    };
                    {
                        let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
                        *tally.statuses.entry(status).or_default() += 1;
                        let entry = tally.kinds.entry(kind.label.clone()).or_default();
                        entry.0 += 1;
                        if status != kind.expected {
                            entry.1 += 1;
                            *entry.2.entry(status).or_default() += 1;
                        }
                        if reconnected && i >= CONNECTIONS as u64 {
                            tally.reconnects += 1;
                        }
                    }
                    let count = done.fetch_add(1, Ordering::SeqCst) + 1;
                    if count.is_multiple_of(every) {
                        let taken = sample(count);
                        println!(
                            "  {count:>7} requests, {:>6.1} s: VmRSS {}, server_memory_bytes {}",
                            taken.elapsed.as_secs_f64(),
                            mib(taken.rss_kib),
                            mib(taken.reported.map(|b| b / 1024))
                        );
                        samples
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(taken);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed();
    let mut samples = samples.into_inner().unwrap_or_else(PoisonError::into_inner);
    let count = done.load(Ordering::SeqCst);
    if samples.last().is_none_or(|last| last.done != count) {
        samples.push(sample(count));
    }
    (
        tally.into_inner().unwrap_or_else(PoisonError::into_inner),
        samples,
        elapsed,
    )
}

fn report(
    title: &str,
    requested: u64,
    tally: &Tally,
    samples: &[Sample],
    elapsed: Duration,
    memory_of: &str,
) {
    let done: u64 = tally.statuses.values().sum();
    println!("\n## soak: {title}");
    println!(
        "{done} requests in {:.1} s ({:.0} req/s) over {CONNECTIONS} keep-alive connections, \
         {} per mille hostile, seed {SEED:#x}; {}",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64().max(1e-9),
        HOSTILE_PER_MILLE,
        host_load()
    );
    println!("\n| status | responses |");
    println!("| --- | --- |");
    for (status, count) in &tally.statuses {
        let status = if *status == 0 {
            "no answer (connection failed)".to_string()
        } else {
            status.to_string()
        };
        println!("| {status} | {count} |");
    }
    println!(
        "\nreconnects after the first requests: {}",
        tally.reconnects
    );
    let unexpected: Vec<_> = tally.kinds.iter().filter(|(_, k)| k.1 > 0).collect();
    if unexpected.is_empty() {
        println!("every answer had the status the corpus expects");
    } else {
        println!("\n| request | sent | other status than expected |");
        println!("| --- | --- | --- |");
        for (label, (sent, wrong, statuses)) in unexpected {
            println!("| {label} | {sent} | {wrong}: {statuses:?} |");
        }
    }
    println!("\n| requests done | time | {memory_of} | server_memory_bytes (/metrics) |");
    println!("| --- | --- | --- | --- |");
    for s in samples {
        println!(
            "| {} | {:.1} s | {} | {} |",
            s.done,
            s.elapsed.as_secs_f64(),
            mib(s.rss_kib),
            mib(s.reported.map(|b| b / 1024))
        );
    }
    let every = sample_every(requested);
    let warm = samples.iter().find(|s| s.done >= every);
    let growth = |pick: fn(&Sample) -> Option<u64>| -> String {
        // From the warm-up sample to the last sample that has the figure.
        let last = samples.iter().rev().find_map(|s| Some((s.done, pick(s)?)));
        match (warm.and_then(|s| Some((s.done, pick(s)?))), last) {
            (Some((from, w)), Some((to, l))) if w > 0 && to > from => format!(
                "{:+.1} % ({w} → {l} KiB, requests {from} → {to})",
                (l as f64 - w as f64) * 100.0 / w as f64,
            ),
            _ => "n/a (no sample after warm-up)".into(),
        }
    };
    println!(
        "growth after warm-up (first {every} requests): {memory_of} {}, \
         server_memory_bytes {}",
        growth(|s| s.rss_kib),
        growth(|s| s.reported.map(|b| b / 1024))
    );
}

/// Starts a server, deploys the corpus, soaks it with `requests` and prints the report.
fn soak_server(
    name: &str,
    vm: Option<&VmArgs>,
    requests: u64,
    corpus: &Corpus,
    limit: Duration,
) -> Result<()> {
    let append = format!("log=warn admin-token={TOKEN}");
    let mut server = XtaskRun::start(name, vm, &append)?;
    let boot_limit = Duration::from_secs(if vm.is_some() { 300 } else { 60 });
    server.wait_ready(&["/healthz"], boot_limit)?;
    // Boot functions deploy in the background; a server that cannot deploy them is still soaked
    // (its answers say so).
    if let Err(err) = server.wait_ready(&["/exec/answer"], Duration::from_secs(60)) {
        println!("note: {err}");
    }
    let pid = server.server_pid()?;
    let surprises = deploy_corpus(server.port, corpus)?;
    let (good, hostile) = kinds(corpus)?;
    let title = match vm {
        None => "native server".to_string(),
        Some(vm) => format!("image, {}", vm.describe()),
    };
    println!(
        "\n{title}: {} (log: {}), {} good and {} hostile kinds of request",
        server.command(),
        server.log().display(),
        good.len(),
        hostile.len()
    );
    for surprise in &surprises {
        println!("  deploy differs from the corpus: {surprise}");
    }
    let (tally, samples, elapsed) = soak(server.port, pid, requests, &good, &hostile, limit);
    let memory_of = if vm.is_some() {
        "VmRSS of QEMU"
    } else {
        "VmRSS of the server"
    };
    report(&title, requests, &tally, &samples, elapsed, memory_of);
    let answered: u64 = tally.statuses.values().sum();
    if answered < requests {
        println!(
            "stopped after {answered} of {requests} requests: time bound of {limit:?} reached, \
             or {GIVE_UP_AFTER} requests in a row without an answer"
        );
    }
    Ok(())
}

/// `cargo xtask bench soak`.
pub(crate) fn bench_soak(args: &BenchArgs) -> Result<()> {
    let corpus =
        Corpus::load(&crate::util::root().join("guests/hostile")).map_err(anyhow::Error::msg)?;
    if corpus.cases.is_empty() {
        bail!("the hostile corpus lists no cases");
    }
    crate::native::build_server()?;
    soak_server(
        "soak-native",
        None,
        args.requests,
        &corpus,
        Duration::from_secs(30 * 60),
    )?;
    if args.image_requests > 0 {
        crate::image::build()?;
        let vm = VmArgs {
            memory: args.image_memory,
            ..args.vm.clone()
        };
        soak_server(
            "soak-image",
            Some(&vm),
            args.image_requests,
            &corpus,
            Duration::from_secs(30 * 60),
        )?;
    }
    Ok(())
}
