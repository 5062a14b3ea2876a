//! Measures requests per second with keep-alive clients.
//!
//! ```text
//! cargo run --release -p http-front --example bench -- [ADDR|local] [CLIENTS] [SECONDS] [PATH] [polling]
//! ```
//! `local` (the default) starts an in-process server with a trivial handler on 127.0.0.1:0;
//! an address such as `127.0.0.1:8080` benchmarks a running server (e.g. the unikernel).
//! `polling` makes the local server use the timeout mode hermit falls back to.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_front::{Request, Response, Server, ServerConfig, TimeoutMode};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let target = args.first().map(String::as_str).unwrap_or("local");
    let clients: usize = args.get(1).map(|a| a.parse()).transpose()?.unwrap_or(4);
    let seconds: u64 = args.get(2).map(|a| a.parse()).transpose()?.unwrap_or(3);
    let path = args.get(3).cloned().unwrap_or_else(|| "/".to_string());

    let mut local = None;
    let addr: SocketAddr = if target == "local" {
        let config = ServerConfig {
            workers: clients.max(1),
            timeouts: if args.get(4).is_some_and(|a| a == "polling") {
                TimeoutMode::Polling
            } else {
                TimeoutMode::Auto
            },
            ..ServerConfig::default()
        };
        let handle = Server::bind("127.0.0.1:0", config)?
            .spawn(|_: &Request| Response::text(200, "hello"))?;
        let addr = handle.local_addr();
        local = Some(handle);
        addr
    } else {
        target.parse()?
    };

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (stop, done, failed, path) =
                (stop.clone(), done.clone(), failed.clone(), path.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match run_connection(addr, &path, &stop, &done) {
                        Ok(()) => {}
                        Err(_) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            std::thread::sleep(Duration::from_millis(10));
                        }
                    }
                }
            })
        })
        .collect();
    let started = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let count = done.load(Ordering::Relaxed);
    println!(
        "{count} requests in {elapsed:.2}s with {clients} clients: {:.0} req/s ({} connection errors)",
        count as f64 / elapsed,
        failed.load(Ordering::Relaxed)
    );
    if let Some(handle) = local {
        handle.shutdown()?;
    }
    Ok(())
}

/// Sends keep-alive requests on one connection until told to stop or the server closes it.
fn run_connection(
    addr: SocketAddr,
    path: &str,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(stream);
    let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n");
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        reader.get_mut().write_all(request.as_bytes())?;
        let mut length = 0usize;
        let mut close = false;
        line.clear();
        reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 ") {
            return Err(std::io::Error::other(format!("bad status line {line:?}")));
        }
        loop {
            line.clear();
            reader.read_line(&mut line)?;
            let header = line.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(value) = header.strip_prefix("content-length:") {
                length = value.trim().parse().map_err(std::io::Error::other)?;
            }
            close |= header == "connection: close";
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body)?;
        done.fetch_add(1, Ordering::Relaxed);
        if close {
            return Ok(());
        }
    }
    Ok(())
}
