//! Replacing a function frees the old version's code: thousands of replace-deploys leave the
//! server's resident memory where it was after the first hundred.

use e2e::{Instance, Mode};

use crate::functions::functions_append;
use crate::{admin, call};

/// Replace-deploys in all.
const DEPLOYS: usize = 2000;
/// Replace-deploys before the baseline is taken (allocator pools, stats and the key-value entry
/// have reached their size by then).
const WARM_UP: usize = 100;
/// Every this many replace-deploys, a deploy that is compiled and then refused too.
const REFUSED_EVERY: usize = 10;

/// The server's resident set, from `/metrics` (`server_memory_bytes`).
fn resident_bytes(port: u16) -> u64 {
    let metrics = call(port, "GET", "/metrics", b"").text();
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("server_memory_bytes "))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no server_memory_bytes in /metrics:\n{metrics}"))
}

/// 2,000 replace-deploys of an HTTP guest (29 KiB of wasm; each version answers a request, so
/// its functions are translated too), with a refused deploy of the same code every tenth time:
/// the resident set stays within 10 % of what it was after the first 100. Each version's code
/// lives in an engine of its own, freed with it; with one shared engine every version's code
/// would stay (tens of MiB here).
#[test]
fn native_replace_deploys_keep_memory_flat() {
    let guest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/guests/http-server-demo.wasm");
    let wasm = std::fs::read(&guest).unwrap_or_else(|e| panic!("{}: {e}", guest.display()));
    let inst = Instance::start(Mode::Native, &functions_append(), &[]);
    let port = inst.port;
    let mut baseline = None;
    for deploy in 1..=DEPLOYS {
        let put = admin(port, "PUT", "/_admin/functions/replaced", &wasm);
        assert!(
            put.status == 200 || (deploy == 1 && put.status == 201),
            "deploy {deploy}: {} {}",
            put.status,
            put.text()
        );
        let hello = call(port, "GET", "/replaced/hello", b"");
        assert_eq!(hello.status, 200, "after deploy {deploy}: {}", hello.text());
        if deploy % REFUSED_EVERY == 0 {
            // Compiled, then refused: on-server-init cannot get its linear memory.
            let refused = admin(
                port,
                "PUT",
                "/_admin/functions/refused?max-memory=64k",
                &wasm,
            );
            assert_eq!(refused.status, 400, "{}", refused.text());
        }
        if deploy == WARM_UP {
            baseline = Some(resident_bytes(port));
        }
    }
    let baseline = baseline.expect("taken after the warm-up");
    let end = resident_bytes(port);
    println!(
        "resident set after {WARM_UP} replace-deploys: {:.1} MiB, after {DEPLOYS}: {:.1} MiB",
        baseline as f64 / (1 << 20) as f64,
        end as f64 / (1 << 20) as f64
    );
    assert!(
        end as f64 <= baseline as f64 * 1.10,
        "resident set grew from {baseline} to {end} bytes over {} replace-deploys",
        DEPLOYS - WARM_UP
    );
}
