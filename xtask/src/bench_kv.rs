//! `cargo xtask bench kv`: requests/s of `GET /http-server-demo/get` with the in-memory store
//! and with a real redis-server, natively and in the image, in one table.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use harness::http;

use super::{BenchArgs, Load, Running, boot_vm, free_port, load, wait_first_response};
use crate::image::Image;

/// The route measured: one key-value GET of a small value per request.
const KV_PATH: &str = "/http-server-demo/get";

/// The value read back by every request.
const BENCH_VALUE: &[u8] = b"a value of sixty-four bytes, read back by every request.........";

/// A throwaway redis-server on 127.0.0.1 without persistence, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start() -> Result<Redis> {
        let binary = PathBuf::from(
            std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "/usr/bin/redis-server".into()),
        );
        if !binary.is_file() {
            bail!(
                "{} not found (apt-get install redis-server, or set REDIS_SERVER)",
                binary.display()
            );
        }
        let port = free_port()?;
        let dir = crate::util::target_dir().join(format!("bench-redis-{port}"));
        std::fs::create_dir_all(&dir)?;
        let child = Command::new(&binary)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let redis = Redis { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers_ping() {
            if Instant::now() > deadline {
                bail!("redis-server on port {port} did not answer PING");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }

    fn answers_ping(&self) -> bool {
        let probe = || -> std::io::Result<bool> {
            let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
            stream.set_read_timeout(Some(Duration::from_millis(500)))?;
            stream.write_all(b"PING\r\n")?;
            let mut reply = [0u8; 5];
            stream.read_exact(&mut reply)?;
            Ok(&reply == b"+PONG")
        };
        probe().unwrap_or(false)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `PUT /http-server-demo/set` with [`BENCH_VALUE`], so that every measured GET finds it.
fn store_value(port: u16) -> Result<()> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let request = http::request_bytes("PUT", "/http-server-demo/set", &[], BENCH_VALUE);
    let status = http::send(&mut stream, &request)?.status;
    if status != 204 {
        bail!("PUT /http-server-demo/set answered {status}");
    }
    Ok(())
}

/// Runs the four combinations and prints the table.
pub(crate) fn bench_kv(args: &BenchArgs, image: &Image) -> Result<()> {
    let redis = match Redis::start() {
        Ok(redis) => redis,
        Err(err) => {
            println!("\n## key-value: skipped ({err})");
            return Ok(());
        }
    };
    let base = "log=warn workers=4";
    let mut rows: Vec<(String, &str, Load)> = Vec::new();

    let native = crate::native::build_server()?;
    for (backend, kv) in [
        ("in-memory", "kv=memory".to_string()),
        ("redis", format!("kv=redis://127.0.0.1:{}", redis.port)),
    ] {
        let port = free_port()?;
        let mut cmd = Command::new(&native);
        cmd.args(["bind=127.0.0.1", &format!("port={port}")])
            .args(base.split_whitespace())
            .arg(&kv);
        let _server = Running::spawn(cmd)?;
        wait_first_response(port, Instant::now(), Duration::from_secs(30))?;
        store_value(port)?;
        rows.push((
            "native (Linux process)".to_string(),
            backend,
            load(port, KV_PATH, args.clients, args.seconds),
        ));
    }
    for (backend, kv) in [
        ("in-memory", "kv=memory".to_string()),
        ("redis", format!("kv=redis://10.0.2.2:{}", redis.port)),
    ] {
        let port = free_port()?;
        let (_vm, _) = boot_vm(&args.vm, image, port, &format!("{base} {kv}"))?;
        store_value(port)?;
        rows.push((
            format!("image, {}", args.vm.describe()),
            backend,
            load(port, KV_PATH, args.clients, args.seconds),
        ));
    }

    println!(
        "\n## key-value: GET {KV_PATH}, {} keep-alive clients, {} s per row",
        args.clients, args.seconds
    );
    println!("| server | store | req/s | vs in-memory | p50 | p99 | errors |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (server, backend, l) in &rows {
        let rps = l.requests as f64 / l.seconds;
        let memory = rows
            .iter()
            .find(|(s, b, _)| s == server && *b == "in-memory")
            .map_or(rps, |(_, _, m)| m.requests as f64 / m.seconds);
        println!(
            "| {server} | {backend} | {rps:.0} | {:.3} | {:.2} ms | {:.2} ms | {} |",
            rps / memory.max(f64::MIN_POSITIVE),
            l.p50_us as f64 / 1e3,
            l.p99_us as f64 / 1e3,
            l.errors
        );
    }
    Ok(())
}
