//! End-to-end tests: the same checks against the native server and the unikernel in QEMU.
//! Run through `cargo xtask test`, which builds everything first and sets `XTASK_BIN`.
//! One test binary; one module per area.

mod connections;
mod deploy_forms;
mod functions;
mod hostile;
mod http_front;
mod machines;
mod monitors;
mod mutants;
mod redis;

use e2e::http;

/// Token the admin tests boot with.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123";

/// One request with `Connection: close`; panics with the request line if it fails.
pub fn call(port: u16, method: &str, path: &str, body: &[u8]) -> http::Response {
    http::request(port, method, path, &[], body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`call`], with the admin bearer token.
pub fn admin(port: u16, method: &str, path: &str, body: &[u8]) -> http::Response {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    http::request(port, method, path, &[("Authorization", &auth)], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The keyvalue demo's report: two stores, their keys, a get from each, a delete.
pub fn assert_keyvalue_demo(port: u16) {
    let kv = call(port, "GET", "/keyvalue-demo/", b"");
    assert_eq!(kv.status, 200, "{}", kv.text());
    let report = kv.text();
    assert!(report.contains("a keys: [\"k1\", \"k2\"]"), "{report}");
    assert!(report.contains("b k1 = other"), "{report}");
    assert!(report.contains("a k1 after delete: not found"), "{report}");
}
