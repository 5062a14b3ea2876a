//! `cargo bench -p wasm-host`: compile time, and fresh instance + `handle-http` per request.
//! Needs the guests: `cargo xtask guests`.

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keyvalue::MemoryStore;
use wasm_host::{FunctionHost, GuestRequest, HostConfig, Method};

fn guest(name: &str) -> Vec<u8> {
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guests"),
    };
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; run `cargo xtask guests` first",
            path.display()
        )
    })
}

fn per_iteration(iterations: u32, mut f: impl FnMut()) -> Duration {
    for _ in 0..iterations / 10 {
        f();
    }
    let start = Instant::now();
    for _ in 0..iterations {
        f();
    }
    start.elapsed() / iterations
}

fn main() {
    let wasm = guest("http-server-demo");
    let host = FunctionHost::new(Arc::new(MemoryStore::new()), HostConfig::default());
    let load = per_iteration(50, || {
        black_box(host.load("bench", &wasm).expect("loads"));
    });
    println!(
        "compile + validate + on-server-init ({} KiB): {load:?}",
        wasm.len() / 1024
    );

    let function = host.load("bench", &wasm).expect("loads");
    let request = |method, uri: &str, body: &[u8]| GuestRequest {
        method,
        uri: uri.into(),
        headers: vec![("host".into(), "localhost".into())],
        body: body.to_vec(),
    };
    let hello = per_iteration(2000, || {
        let r = function
            .handle(request(Method::Get, "/hello", b""))
            .result
            .expect("hello");
        assert_eq!(r.status, 200);
    });
    println!("fresh instance + handle-http GET /hello: {hello:?}");

    function
        .handle(request(Method::Put, "/set", b"value"))
        .result
        .expect("set");
    let get = per_iteration(2000, || {
        let r = function
            .handle(request(Method::Get, "/get", b""))
            .result
            .expect("get");
        assert_eq!(r.status, 200);
    });
    println!("fresh instance + handle-http GET /get (one keyvalue get): {get:?}");

    let body = vec![7u8; 64 * 1024];
    let upload = per_iteration(500, || {
        let r = function
            .handle(request(Method::Post, "/upload", &body))
            .result
            .expect("upload");
        assert_eq!(r.body.len(), body.len());
    });
    println!("fresh instance + handle-http POST /upload (64 KiB echo): {upload:?}");
}
