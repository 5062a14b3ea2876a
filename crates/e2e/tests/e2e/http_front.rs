//! The HTTP front: health, errors for malformed requests, keep-alive, clean stop.

use std::io::{Read, Write};

use e2e::http::{self, parse_responses};
use e2e::{Instance, Mode};

/// Kernel command line used by the HTTP-front checks: small body limit to exercise 413.
pub const HTTP_FRONT_APPEND: &str = "log=info max-body=4096";

/// Reads everything until the server closes the connection.
fn read_all(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    buf
}

/// The HTTP front behaviour every deployment form must show.
pub fn http_front_suite(inst: &Instance) {
    let port = inst.port;

    // Health: 200 JSON with version and uptime.
    let health = http::get(port, "/healthz").expect("GET /healthz");
    assert_eq!(health.status, 200);
    let json = health.json();
    assert_eq!(json["status"], "ok", "{json}");
    assert!(json["version"].is_string(), "{json}");
    assert!(json["uptime_ms"].is_u64(), "{json}");
    assert_eq!(health.header("content-type"), Some("application/json"));

    // Unknown path: 404 with a JSON error.
    let missing = http::get(port, "/no/such/thing").expect("GET unknown");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json()["status"], 404);

    // Garbage: 400, connection closed, server still serves.
    let garbage = http::exchange(port, b"\x00\x01 this is not http\r\n\r\n").expect("garbage");
    assert_eq!(garbage.status, 400, "{}", garbage.text());
    assert_eq!(
        http::get(port, "/healthz").expect("after garbage").status,
        200
    );

    // Oversized header block: 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(64 * 1024)
    );
    assert_eq!(
        http::exchange(port, big.as_bytes())
            .expect("big headers")
            .status,
        431
    );

    // Too many headers: 431.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(
        http::exchange(port, many.as_bytes())
            .expect("many headers")
            .status,
        431
    );

    // Body over the configured limit: 413.
    let over = format!(
        "POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        1 << 20
    );
    assert_eq!(
        http::exchange(port, over.as_bytes())
            .expect("large body")
            .status,
        413
    );

    // HTTP/1.1 without Host: 400 (RFC 9112 §3.2); HTTP/1.0 may omit it.
    let no_host = b"GET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n";
    assert_eq!(http::exchange(port, no_host).expect("no host").status, 400);
    let http10 = b"GET /healthz HTTP/1.0\r\n\r\n";
    assert_eq!(http::exchange(port, http10).expect("http/1.0").status, 200);

    // Bad Content-Length: 400.
    let bad_len = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n";
    assert_eq!(
        http::exchange(port, bad_len).expect("bad length").status,
        400
    );
    let conflicting =
        b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    assert_eq!(
        http::exchange(port, conflicting)
            .expect("conflicting length")
            .status,
        400
    );

    // Truncated body, then the client goes away: nothing breaks.
    {
        let mut stream = http::connect(port).expect("connect");
        stream
            .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part")
            .expect("write partial");
    }
    assert_eq!(
        http::get(port, "/healthz")
            .expect("after truncation")
            .status,
        200
    );

    // Keep-alive with pipelining: a chunked request and a plain one on one connection.
    let mut stream = http::connect(port).expect("connect");
    stream
        .write_all(
            b"POST /no-route HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        )
        .expect("write pipelined");
    let responses = parse_responses(&read_all(&mut stream)).expect("parse pipelined");
    let statuses: Vec<u16> = responses.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![404, 200]);

    // Still healthy after all of it.
    assert_eq!(http::get(port, "/healthz").expect("final").status, 200);
}

#[test]
fn native_http_front() {
    let inst = Instance::start(Mode::Native, HTTP_FRONT_APPEND, &[]);
    http_front_suite(&inst);
    assert_stops_cleanly(inst);
}

/// SIGTERM to `xtask run` stops the server and frees its port.
fn assert_stops_cleanly(inst: Instance) {
    let port = inst.port;
    inst.stop();
    assert!(
        http::get(port, "/healthz").is_err(),
        "port {port} still answers after stop"
    );
}

#[test]
fn qemu_http_front() {
    let inst = Instance::start(Mode::Qemu, HTTP_FRONT_APPEND, &[]);
    http_front_suite(&inst);
    let output = inst.output();
    assert!(
        output.contains(e2e::READY_LINE),
        "serial console shows the ready line:\n{output}"
    );
    assert_stops_cleanly(inst);
}

/// `POST /_admin/shutdown` ends the server with a clean exit code: natively the process exits 0;
/// in QEMU the kernel powers off through `isa-debug-exit` and `xtask run` exits 0 too.
fn assert_shutdown_exits_cleanly(mode: Mode) {
    let token = "shutdown-token-42";
    let mut inst = Instance::start(mode, &format!("log=info admin-token={token}"), &[]);
    let auth = format!("Bearer {token}");
    let unauthorized =
        http::request(inst.port, "POST", "/_admin/shutdown", &[], b"").expect("request");
    assert_eq!(unauthorized.status, 401);
    let accepted = http::request(
        inst.port,
        "POST",
        "/_admin/shutdown",
        &[("Authorization", &auth)],
        b"",
    )
    .expect("shutdown request");
    assert_eq!(accepted.status, 202, "{}", accepted.text());
    let status = inst.wait_exit(std::time::Duration::from_secs(60));
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(0),
        "exit status; output:\n{}",
        inst.output()
    );
}

#[test]
fn native_shutdown_exits_cleanly() {
    assert_shutdown_exits_cleanly(Mode::Native);
}

#[test]
fn qemu_shutdown_exits_cleanly() {
    assert_shutdown_exits_cleanly(Mode::Qemu);
}
