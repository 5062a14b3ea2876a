//! End-to-end tests: the same checks against the native server and the unikernel in QEMU.
//! Run through `cargo xtask test`, which builds everything first and sets `XTASK_BIN`.
//! One test binary; one module per area.

mod boot_entry;
mod connections;
mod deploy_forms;
mod first_function;
mod fleet;
mod functions;
mod hostile;
mod http_front;
mod machines;
mod monitors;
mod mutants;
mod redis;
mod replace_memory;
mod secrets;
mod seeds;

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

/// The keyvalue demo's report (Spiderlightning's demo): two stores with the same key, the value
/// from each, the key gone from both after the delete.
pub fn assert_keyvalue_demo(port: u16) {
    let kv = call(port, "GET", "/keyvalue-demo/", b"");
    assert_eq!(kv.status, 200, "{}", kv.text());
    let report = kv.text();
    assert!(report.contains("keyvalue2 keys: [\"key\""), "{report}");
    assert!(
        report.contains(
            "The value for keyvalue1 is: spiderlightning, keyvalue2 is spiderlightning\n"
        ),
        "{report}"
    );
    assert!(
        report.ends_with("keyvalue1 after delete: gone\nkeyvalue2 after delete: gone\n"),
        "{report}"
    );
}
