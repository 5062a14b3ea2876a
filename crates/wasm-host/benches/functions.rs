//! `cargo bench -p wasm-host`: compile time, and fresh instance + `handle-http` per request;
//! then both compilation modes side by side (deploy, deploy → first answer, steady state).
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

    compilation_modes(&host, &wasm);
}

/// Deploy (compile + `on-server-init`), deploy → first `/hello` answer, and `/hello` once warm,
/// with every function translated when the module is compiled (eager) and on its first call
/// (lazy translation, [`sandbox::COMPILATION_MODE`]).
fn compilation_modes(host: &FunctionHost, wasm: &[u8]) {
    use wasmi::CompilationMode;
    let hello = || GuestRequest {
        method: Method::Get,
        uri: "/hello".into(),
        headers: vec![("host".into(), "localhost".into())],
        body: Vec::new(),
    };
    let deploy = |mode: CompilationMode| {
        let engine = sandbox::engine_with(mode);
        let module = sandbox::Module::new(&engine, wasm).expect("compiles");
        host.load_module("bench", module).expect("loads")
    };
    println!("\n| mode | deploy | deploy → first /hello | /hello, warm |");
    println!("| --- | --- | --- | --- |");
    for (name, mode) in [
        ("eager", CompilationMode::Eager),
        ("lazy translation", CompilationMode::LazyTranslation),
    ] {
        let deployed = per_iteration(50, || {
            black_box(deploy(mode));
        });
        let first_answer = per_iteration(50, || {
            let function = deploy(mode);
            let answer = function.handle(hello()).result.expect("hello");
            assert_eq!(answer.status, 200);
        });
        let function = deploy(mode);
        let warm = per_iteration(2000, || {
            let answer = function.handle(hello()).result.expect("hello");
            assert_eq!(answer.status, 200);
        });
        println!("| {name} | {deployed:?} | {first_answer:?} | {warm:?} |");
    }
}
