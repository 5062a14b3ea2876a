//! Measures get/set throughput of the Redis backend.
//!
//! `cargo run --release -p kv-redis --example bench [-- OPS THREADS [redis://URL]]`
//! Without a URL it starts its own redis-server on a free port of 127.0.0.1. With
//! `BENCH_POLLING=1` timeouts are enforced by polling (as on hermit) instead of socket options.
//! With `BENCH_DEADLINE_MS=N` every operation gets a deadline N ms ahead (below the 5 s I/O
//! timeout this lowers the socket timeouts per read and write).

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use keyvalue::{Bounds, KeyValue};
use kv_redis::{RedisConfig, RedisStore, TimeoutStrategy};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let ops: usize = args
        .first()
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(20_000);
    let threads: usize = args
        .get(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(4)
        .max(1);
    let (_server, url) = match args.get(2) {
        Some(url) => (None, url.clone()),
        None => {
            let server = redis_test_server::RedisServer::start();
            let url = server.url();
            (Some(server), url)
        }
    };
    let mut config = RedisConfig::from_url(&url)?;
    config.pool_size = threads;
    if std::env::var_os("BENCH_POLLING").is_some_and(|v| v == "1") {
        config.options.timeouts = TimeoutStrategy::Polling;
    }
    let deadline_ms: Option<u64> = std::env::var("BENCH_DEADLINE_MS")
        .ok()
        .map(|s| s.parse())
        .transpose()?;
    let store = Arc::new(RedisStore::with_config(config));
    store.open("bench", &Bounds::UNBOUNDED)?;
    println!(
        "redis at {url}: {ops} operations per run, values of 100 bytes, {:?} timeouts, \
         deadline {deadline_ms:?} ms",
        store.config().options.timeouts
    );
    let bounds = move || match deadline_ms {
        Some(ms) => Bounds::within(Duration::from_millis(ms), usize::MAX),
        None => Bounds::UNBOUNDED,
    };

    for workers in [1, threads] {
        let set_rate = run(&store, workers, ops, bounds, |kv, key, bounds| {
            kv.set("bench", key, &[b'x'; 100], bounds)
        })?;
        let get_rate = run(&store, workers, ops, bounds, |kv, key, bounds| {
            kv.get("bench", key, bounds).map(drop)
        })?;
        println!("{workers} thread(s): set {set_rate:>8.0} ops/s   get {get_rate:>8.0} ops/s");
    }

    let big = vec![7u8; 1024 * 1024];
    let started = Instant::now();
    for _ in 0..20 {
        store.set("bench", "big", &big, &bounds())?;
        store.get("bench", "big", &bounds())?;
    }
    let mib_per_s = 40.0 / started.elapsed().as_secs_f64();
    println!("1 MiB values: {mib_per_s:.0} MiB/s (set + get)");
    Ok(())
}

/// Runs `ops` operations spread over `workers` threads; returns operations per second.
fn run(
    store: &Arc<RedisStore>,
    workers: usize,
    ops: usize,
    bounds: impl Fn() -> Bounds + Copy + Send + 'static,
    operation: fn(&RedisStore, &str, &Bounds) -> Result<(), keyvalue::KvError>,
) -> Result<f64, keyvalue::KvError> {
    let per_worker = ops / workers;
    let started = Instant::now();
    let handles: Vec<_> = (0..workers)
        .map(|worker| {
            let store = Arc::clone(store);
            thread::spawn(move || {
                for i in 0..per_worker {
                    operation(&store, &format!("key-{worker}-{i}"), &bounds())?;
                }
                Ok::<_, keyvalue::KvError>(())
            })
        })
        .collect();
    for handle in handles {
        handle
            .join()
            .map_err(|_| keyvalue::KvError::Unexpected("bench thread panicked".into()))??;
    }
    Ok((per_worker * workers) as f64 / started.elapsed().as_secs_f64())
}
