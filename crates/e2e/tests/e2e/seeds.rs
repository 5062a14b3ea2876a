//! The seeds' examples run as written: the WAT modules of the nanoprocess article deployed byte
//! for byte and called as the article calls them, and the Nebula article's WASI Fibonacci guest.

use std::time::{Duration, Instant};

use e2e::{Instance, Mode};

use crate::{admin, call};

// Test data from the seed "WebAssembly Serverless Computing from Scratch"
// (wasm-serverless-nanoprocesses.txt): each module exactly as the article shows it, its
// `;; name.wat` line and trailing spaces included.

/// answer.wat of the nanoprocess seed: `/exec/answer` gives 42.
const ANSWER_WAT: &str = r#";; answer.wat
(module
  (func (export "_start") 
        (result i32)
    i32.const 42 
    return))
"#;

/// sum.wat of the nanoprocess seed: `/exec/sum` with 5 and 2 gives 7.
const SUM_WAT: &str = r#";; sum.wat
(module
  (func (export "_start") 
        (param $a i32)
        (param $b i32)
        (result i32)
    local.get $a
    local.get $b
    i32.add
    return))
"#;

/// sleep.wat of the nanoprocess seed: busy-waits three seconds on `platform.now`.
const SLEEP_WAT: &str = r#";; sleep.wat
(module
  (import "platform" "now" (func $now (result f64)))
  (func (export "_start")
        (local $target i64)
    i64.const 3000
    (i64.trunc_f64_s (call $now))
    i64.add
    local.set $target
    loop $loop
      (i64.trunc_f64_s (call $now))
      local.get $target
      i64.lt_s
    br_if $loop
    end))
"#;

/// stuck.wat of the nanoprocess seed: loops until the platform stops it.
const STUCK_WAT: &str = r#";; stuck.wat
(module
  (func (export "_start")
    loop $loop
    br $loop
    end))
"#;

/// The deadline stuck.wat is deployed with (the article leaves the value open).
const STUCK_TIMEOUT: Duration = Duration::from_millis(1500);

/// The Nebula seed's guest (chapter 2, nebula-ch2-wasi-modules.txt), built from
/// `guests/nebula-fib` by `cargo xtask guests`.
fn nebula_fib() -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests/nebula-fib.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `PUT /_admin/functions/{name}{query}` with `body`; a new or replaced function.
fn deploy(port: u16, name_and_query: &str, body: &[u8]) {
    let deployed = admin(
        port,
        "PUT",
        &format!("/_admin/functions/{name_and_query}"),
        body,
    );
    assert!(
        deployed.status == 201 || deployed.status == 200,
        "{name_and_query}: {} {}",
        deployed.status,
        deployed.text()
    );
}

/// The time `/stats/{name}` reports for all its invocations together, in milliseconds.
fn execution_time_ms(port: u16, name: &str) -> u64 {
    let stats = call(port, "GET", &format!("/stats/{name}"), b"").json();
    stats["execution_time_ms"]
        .as_u64()
        .unwrap_or_else(|| panic!("/stats/{name} has no execution time: {stats}"))
}

fn seeds_suite(inst: &Instance) {
    let port = inst.port;
    // Deployed under the article's names, replacing the image's own versions of them.
    deploy(port, "answer", ANSWER_WAT.as_bytes());
    deploy(port, "sum", SUM_WAT.as_bytes());
    deploy(port, "sleep", SLEEP_WAT.as_bytes());
    let timeout_ms = STUCK_TIMEOUT.as_millis();
    deploy(
        port,
        &format!("stuck?timeout-ms={timeout_ms}&fuel=1000000000000"),
        STUCK_WAT.as_bytes(),
    );

    let answer = call(port, "GET", "/exec/answer", b"");
    assert_eq!((answer.status, answer.text().as_str()), (200, "42"));
    let sum = call(port, "GET", "/exec/sum?args=5,2", b"");
    assert_eq!((sum.status, sum.text().as_str()), (200, "7"));
    let sum = call(port, "POST", "/exec/sum", b"[5, 2]");
    assert_eq!((sum.status, sum.text().as_str()), (200, "7"));

    // sleep.wat returns nothing after three seconds of its own clock. It compares whole
    // milliseconds (`i64.trunc_f64_s` of `platform.now`), so it may stop up to 1 ms short.
    let at_least = Duration::from_millis(2999);
    let started = Instant::now();
    let sleep = call(port, "GET", "/exec/sleep", b"");
    let slept = started.elapsed();
    assert_eq!((sleep.status, sleep.text().as_str()), (200, ""));
    assert!(slept >= at_least, "answered after {slept:?}");
    let executed = execution_time_ms(port, "sleep");
    assert!(executed >= 2998, "execution time {executed} ms");

    // stuck.wat imports nothing and its `_start` takes and returns nothing: it runs as a
    // nanoprocess and as a WASI command, into the deadline either way.
    for path in ["/exec/stuck", "/api/stuck/input"] {
        let started = Instant::now();
        let stuck = call(port, "GET", path, b"");
        let ran = started.elapsed();
        assert_eq!(stuck.status, 504, "{path}: {}", stuck.text());
        assert!(
            stuck.text().contains("deadline"),
            "{path}: {}",
            stuck.text()
        );
        assert!(ran >= STUCK_TIMEOUT, "{path}: answered after {ran:?}");
    }
    let stats = call(port, "GET", "/stats/stuck", b"").json();
    assert_eq!(stats["errors"]["timeout"], 2, "{stats}");
    assert!(execution_time_ms(port, "stuck") >= 2 * STUCK_TIMEOUT.as_millis() as u64);

    let stats = call(port, "GET", "/stats/answer", b"").json();
    assert_eq!(stats["invocations"], 1, "{stats}");
    assert!(stats["execution_time_ms"].is_u64(), "{stats}");

    // The Nebula guest: n on stdin (from the path, or a POSTed body as `echo 10 |` gives it),
    // the sequence as a Rust list on stdout; a non-number counts as 1.
    deploy(port, "fibonacci", &nebula_fib());
    for (method, path, stdin, expected) in [
        (
            "GET",
            "/api/fibonacci/10",
            &b""[..],
            "[0, 1, 1, 2, 3, 5, 8, 13, 21, 34]\n",
        ),
        ("POST", "/api/fibonacci/", b"5\n", "[0, 1, 1, 2, 3]\n"),
        ("GET", "/api/fibonacci/ten", b"", "[0]\n"),
    ] {
        let fib = call(port, method, path, stdin);
        assert_eq!(
            (fib.status, fib.text().as_str()),
            (200, expected),
            "{method} {path}"
        );
    }
    let stats = call(port, "GET", "/stats/fibonacci", b"").json();
    assert_eq!(stats["invocations"], 3, "{stats}");
    assert!(stats["execution_time_ms"].is_u64(), "{stats}");
}

#[test]
fn native_seeds() {
    let inst = Instance::start(Mode::Native, &crate::functions::functions_append(), &[]);
    seeds_suite(&inst);
}

#[test]
fn qemu_seeds() {
    let inst = Instance::start(Mode::Qemu, &crate::functions::functions_append(), &[]);
    seeds_suite(&inst);
}
