//! `cargo xtask bench fleet`: instances sharing one redis-server. How long a deploy through one
//! instance takes to be served by the others (median and max over 20 deploys, to native
//! instances and to an image in QEMU), and requests/s through HAProxy with 1 and 3 native
//! instances behind it (wrk, keep-alive), next to one instance without the balancer.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use load_balancer::HaProxy;
use redis_test_server::RedisServer;

use super::BenchArgs;
use super::bench_server::XtaskRun;
use super::bench_wrk;

/// Admin token of the fleet's instances.
const TOKEN: &str = "bench-fleet-token";
/// Deploys timed.
const DEPLOYS: u32 = 20;
/// The function deployed and loaded.
const FUNCTION: &str = "fleet-bench";
/// Longest a deploy may take to reach an instance before the bench gives up.
const PROPAGATION_LIMIT: Duration = Duration::from_secs(30);
/// wrk's keep-alive connections through the balancer.
const CONNECTIONS: usize = 16;

fn answer(n: u32) -> Vec<u8> {
    format!(r#"(module (func (export "_start") (result i32) i32.const {n}))"#).into_bytes()
}

/// `GET path` with `Connection: close`: status and body.
fn get(port: u16, path: &str) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer)?;
    let text = String::from_utf8_lossy(&answer);
    let status = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((status, body.to_string()))
}

/// Waits until `port` answers `/exec/{FUNCTION}` with `expected`; when it first did.
fn served_at(port: u16, expected: &str) -> Result<Instant> {
    let path = format!("/exec/{FUNCTION}");
    let started = Instant::now();
    loop {
        if let Ok((200, body)) = get(port, &path)
            && body == expected
        {
            return Ok(Instant::now());
        }
        if started.elapsed() > PROPAGATION_LIMIT {
            bail!("port {port} did not serve {expected} within {PROPAGATION_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn median_and_max(mut values: Vec<Duration>) -> (Duration, Duration) {
    values.sort();
    let max = values.last().copied().unwrap_or_default();
    (super::median(values), max)
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

/// Runs the fleet measurements and prints their tables.
pub(crate) fn bench_fleet(args: &BenchArgs) -> Result<()> {
    bench_wrk::ensure_wrk()?;
    crate::native::build_server()?;
    crate::image::build()?;
    let redis = RedisServer::start();
    let append = |host: &str| {
        format!(
            "log=warn admin-token={TOKEN} kv=redis://{host}:{}",
            redis.port()
        )
    };
    let mut natives = (0..3)
        .map(|i| XtaskRun::start(&format!("fleet-native-{i}"), None, &append("127.0.0.1")))
        .collect::<Result<Vec<_>>>()?;
    let mut image = XtaskRun::start("fleet-image", Some(&args.vm), &append("10.0.2.2"))?;
    for server in natives.iter_mut().chain(std::iter::once(&mut image)) {
        server.wait_ready(&["/healthz"], Duration::from_secs(120))?;
    }
    let ports: Vec<u16> = natives.iter().map(|s| s.port).collect();

    // Deploys through the first native instance; until the others serve the new code.
    let mut to_native = Vec::new();
    let mut to_image = Vec::new();
    for n in 1..=DEPLOYS {
        let (status, json) = crate::deploy::put_function(ports[0], FUNCTION, "", TOKEN, &answer(n))
            .context("deploy")?;
        if status != 200 && status != 201 {
            bail!("deploy {n}: {status} {json}");
        }
        let deployed = Instant::now();
        let expected = n.to_string();
        // Every receiver is polled on its own thread, so none waits for another.
        let receivers: Vec<u16> = ports[1..].iter().copied().chain([image.port]).collect();
        let expected = expected.as_str();
        let times = std::thread::scope(|scope| {
            let polls: Vec<_> = receivers
                .iter()
                .map(|&port| scope.spawn(move || served_at(port, expected)))
                .collect();
            polls
                .into_iter()
                .map(|poll| match poll.join() {
                    Ok(at) => at.map(|at| at.duration_since(deployed)),
                    Err(_) => bail!("a poll thread panicked"),
                })
                .collect::<Result<Vec<_>>>()
        })?;
        if let Some((image_time, native_times)) = times.split_last() {
            to_native.extend_from_slice(native_times);
            to_image.push(*image_time);
        }
    }
    drop(image);
    println!();
    println!(
        "Deploy propagation ({DEPLOYS} deploys through one native instance; from its answer \
         until another instance serves the new code):"
    );
    println!();
    println!("| receiving instance | samples | median | max |");
    println!("| --- | --- | --- | --- |");
    for (what, samples) in [
        ("native (2 others)", to_native),
        ("image in QEMU (TCG)", to_image),
    ] {
        let count = samples.len();
        let (median, max) = median_and_max(samples);
        println!("| {what} | {count} | {} | {} |", ms(median), ms(max));
    }

    // Requests/s through the balancer.
    let path = format!("/exec/{FUNCTION}");
    let seconds = args.seconds;
    let direct = bench_wrk::run(ports[0], &path, CONNECTIONS, seconds)?;
    let mut rows = vec![("1 native instance, no balancer".to_string(), direct)];
    for count in [1usize, 3] {
        let backends = ports.get(..count).context("instances")?;
        let lb = HaProxy::start(backends).context("start haproxy")?;
        let wrk = bench_wrk::run(lb.port(), &path, CONNECTIONS, seconds)?;
        rows.push((format!("HAProxy → {count} native instance(s)"), wrk));
    }
    println!();
    println!(
        "Requests/s of `GET {path}` (wrk, {CONNECTIONS} keep-alive connections, {seconds} s; \
         client, HAProxy and instances share this host's cores):"
    );
    println!();
    println!("| path | req/s | p50 | p99 | non-2xx | socket errors |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (what, wrk) in rows {
        println!(
            "| {what} | {:.0} | {:.2} ms | {:.2} ms | {} | {} |",
            wrk.ok_rps(),
            wrk.p50_us / 1000.0,
            wrk.p99_us / 1000.0,
            wrk.non_2xx,
            wrk.socket_errors_text()
        );
    }
    drop(natives);
    drop(redis);
    Ok(())
}
