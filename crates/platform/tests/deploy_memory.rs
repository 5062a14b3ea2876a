//! Deploying, replacing and deleting functions again and again, refused deploys included, does
//! not make the server hold more memory: each module's code lives on an engine of its own and
//! is freed with it (a shared engine kept the code of every compile: here the resident set grew
//! by 34 MB over these rounds, about 700 KB per compile of this 550 KB module). Linux only: reads
//! the resident set from `/proc/self/statm`. Alone in its test binary, so that no other test's
//! allocations move the figure.

#![cfg(target_os = "linux")]

use std::fmt::Write as _;

use http_front::{Handler, Request};
use platform::app::App;

mod support;

const TOKEN: &str = "deploy-memory-token";

/// Bytes resident now.
fn resident() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|field| field.parse().ok())
        .expect("resident pages");
    pages * 4096
}

fn request(method: &str, path: &str, body: &[u8]) -> Request {
    support::request(
        method,
        path,
        body.to_vec(),
        "deploy-memory.test",
        Some(TOKEN),
    )
}

/// `functions` functions of about 300 bytes of code each, as WAT.
fn filler(functions: usize) -> String {
    let mut wat = String::new();
    for i in 0..functions {
        let _ = write!(wat, "(func (result i32) (local i32)");
        for k in 0..30 {
            let _ = write!(
                wat,
                " (local.set 0 (i32.add (local.get 0) (i32.const {})))",
                i * 31 + k
            );
        }
        wat.push_str(" (local.get 0))\n");
    }
    wat
}

#[test]
fn redeploying_does_not_grow_the_resident_set() {
    let app = App::new(support::options(TOKEN));
    let filler = filler(2_000);
    let nano = format!(r#"(module (func (export "_start") (result i32) (i32.const 7)) {filler})"#);
    let good_http = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/hostile/good_http.wat"),
    )
    .expect("good_http.wat");
    let http = format!(
        "{} {filler})",
        good_http.trim_end().strip_suffix(')').expect("a module")
    );
    // Compiles, but is of no kind: refused after compiling.
    let refused = format!(r#"(module (func (export "other")) {filler})"#);
    let [nano, http, refused] =
        [nano, http, refused].map(|wat| wat::parse_str(wat).expect("valid WAT"));
    let size = nano.len();

    let round = |round: usize| {
        for (name, source, status) in [
            ("nano", &nano, [201, 200]),
            ("http", &http, [201, 200]),
            ("refused", &refused, [400, 400]),
        ] {
            for expected in status {
                let response = app.handle(&request(
                    "PUT",
                    &format!("/_admin/functions/{name}"),
                    source,
                ));
                assert_eq!(
                    response.status,
                    expected,
                    "round {round}, {name}: {}",
                    String::from_utf8_lossy(&response.body)
                );
            }
        }
        assert_eq!(app.handle(&request("GET", "/exec/nano", b"")).status, 200);
        assert_eq!(app.handle(&request("GET", "/http/hello", b"")).status, 200);
        for name in ["nano", "http"] {
            let path = format!("/_admin/functions/{name}");
            assert_eq!(app.handle(&request("DELETE", &path, b"")).status, 204);
        }
    };
    // Warm up: the allocator's arenas and the first code reach their steady size.
    for r in 0..3 {
        round(r);
    }
    let before = resident();
    let rounds = 8;
    for r in 0..rounds {
        round(r);
    }
    let grown = resident().saturating_sub(before);
    println!("{rounds} rounds of 6 compiles of {size} bytes: resident set grew by {grown} bytes");
    // Leaking the code of each compile would hold several times the module per compile.
    let bound = 8 * size;
    assert!(
        grown < bound,
        "the resident set grew by {grown} bytes over {rounds} rounds (bound {bound})"
    );
}
