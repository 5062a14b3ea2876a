//! End-to-end tests: the same checks against the native server and the unikernel in QEMU.
//! Run through `cargo xtask test`, which builds everything first and sets `XTASK_BIN`.

use std::io::{Read, Write};

use e2e::http::{self, parse_responses};
use e2e::{Instance, Mode};

/// Kernel command line used by the HTTP-front checks: small body limit to exercise 413.
const HTTP_FRONT_APPEND: &str = "log=info max-body=4096";

/// Reads everything until the server closes the connection.
fn read_all(stream: &mut std::net::TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let _ = stream.read_to_end(&mut buf);
    buf
}

/// The HTTP front behaviour every deployment form must show.
fn http_front_suite(inst: &Instance) {
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
    assert_eq!(http::get(port, "/healthz").expect("after garbage").status, 200);

    // Oversized header block: 431.
    let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
    assert_eq!(http::exchange(port, big.as_bytes()).expect("big headers").status, 431);

    // Too many headers: 431.
    let mut many = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(http::exchange(port, many.as_bytes()).expect("many headers").status, 431);

    // Body over the configured limit: 413.
    let over = format!("POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n", 1 << 20);
    assert_eq!(http::exchange(port, over.as_bytes()).expect("large body").status, 413);

    // Bad Content-Length: 400.
    let bad_len = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: twelve\r\n\r\n";
    assert_eq!(http::exchange(port, bad_len).expect("bad length").status, 400);
    let conflicting = b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd";
    assert_eq!(http::exchange(port, conflicting).expect("conflicting length").status, 400);

    // Truncated body, then the client goes away: nothing breaks.
    {
        let mut stream = http::connect(port).expect("connect");
        stream
            .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-part")
            .expect("write partial");
    }
    assert_eq!(http::get(port, "/healthz").expect("after truncation").status, 200);

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
    assert!(http::get(port, "/healthz").is_err(), "port {port} still answers after stop");
}

#[test]
fn qemu_http_front() {
    let inst = Instance::start(Mode::Qemu, HTTP_FRONT_APPEND, &[]);
    http_front_suite(&inst);
    let output = inst.output();
    assert!(output.contains("ready"), "serial console shows the ready line:\n{output}");
    assert_stops_cleanly(inst);
}

/// Token the admin tests boot with.
const ADMIN_TOKEN: &str = "e2e-admin-token-0123";

fn functions_append() -> String {
    format!("log=info admin-token={ADMIN_TOKEN} workers=3")
}

fn call(port: u16, method: &str, path: &str, body: &[u8]) -> http::Response {
    http::request(port, method, path, &[], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn admin(port: u16, method: &str, path: &str, body: &[u8]) -> http::Response {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    http::request(port, method, path, &[("Authorization", &auth)], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The functions built into the image answer on their routes.
fn boot_functions_suite(inst: &Instance) {
    let port = inst.port;
    // Spiderlightning's http-server demo, mounted under its name.
    let hello = call(port, "GET", "/http-server-demo/hello", b"");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello"));
    let missing = call(port, "GET", "/http-server-demo/get", b"");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(missing.text().contains("Key not found"), "{}", missing.text());
    assert_eq!(call(port, "PUT", "/http-server-demo/set", b"value-1").status, 204);
    let got = call(port, "GET", "/http-server-demo/get", b"");
    assert_eq!((got.status, got.text().as_str()), (200, "value-1"));
    let upload = call(port, "POST", "/http-server-demo/upload", b"echo me\x00\xff");
    assert_eq!((upload.status, upload.body.as_slice()), (200, b"echo me\x00\xff".as_slice()));
    assert_eq!(call(port, "DELETE", "/http-server-demo/delete-file", b"").status, 200);
    assert_eq!(call(port, "GET", "/http-server-demo/no-such-route", b"").status, 404);

    // keyvalue demo: two stores, keys, get, delete.
    let kv = call(port, "GET", "/keyvalue-demo/", b"");
    assert_eq!(kv.status, 200, "{}", kv.text());
    let report = kv.text();
    assert!(report.contains("a keys: [\"k1\", \"k2\"]"), "{report}");
    assert!(report.contains("b k1 = other"), "{report}");
    assert!(report.contains("a k1 after delete: not found"), "{report}");

    // todo demo: route parameters and JSON, persisted in keyvalue.
    let created = call(port, "POST", "/todo-demo/todos", br#"{"title":"boot a unikernel"}"#);
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_u64().expect("id");
    let one = call(port, "GET", &format!("/todo-demo/todos/{id}"), b"");
    assert_eq!(one.json()["title"], "boot a unikernel");
    let list = call(port, "GET", "/todo-demo/todos", b"");
    assert!(list.text().contains("boot a unikernel"), "{}", list.text());
    assert_eq!(call(port, "DELETE", &format!("/todo-demo/todos/{id}"), b"").status, 204);
    assert_eq!(call(port, "GET", &format!("/todo-demo/todos/{id}"), b"").status, 404);
    assert_eq!(call(port, "POST", "/todo-demo/todos", b"not json").status, 400);

    // Classic FaaS: WASI fib with stdin from the path, nanoprocess modules.
    let fib = call(port, "GET", "/api/fib/10", b"");
    assert_eq!((fib.status, fib.text().trim()), (200, "0,1,1,2,3,5,8,13,21,34"));
    let bad = call(port, "GET", "/api/fib/not-a-number", b"");
    assert_eq!(bad.status, 500, "non-zero exit is a 500 with stderr: {}", bad.text());
    assert_eq!(call(port, "GET", "/exec/answer", b"").text(), "42");
    assert_eq!(call(port, "GET", "/exec/sum?args=5,2", b"").text(), "7");
    assert_eq!(call(port, "POST", "/exec/sum", b"[5, 2]").text(), "7");
    assert_eq!(call(port, "GET", "/exec/sum?args=5", b"").status, 400);
    assert_eq!(call(port, "GET", "/exec/fib", b"").status, 400, "wrong kind");

    // Stats and metrics.
    let stats = call(port, "GET", "/stats/fib", b"").json();
    assert_eq!(stats["invocations"], 3, "{stats}");
    assert_eq!(stats["errors"]["exit_failure"], 1, "{stats}");
    assert_eq!(stats["errors"]["bad_input"], 1, "the wrong-kind call counts: {stats}");
    assert!(stats["latency_us"]["p99"].as_u64().unwrap_or(0) > 0, "{stats}");
    assert_eq!(call(port, "GET", "/stats/nope", b"").status, 404);
    let metrics = call(port, "GET", "/metrics", b"").text();
    assert!(
        metrics.contains("faas_invocations_total{function=\"sum\",outcome=\"ok\"} 2"),
        "{metrics}"
    );
}

/// Deploy, replace, limits, delete, and authentication of the admin API.
fn admin_suite(inst: &Instance) {
    let port = inst.port;
    let triple = br#"(module (func (export "_start") (param i64) (result i64)
        local.get 0 i64.const 3 i64.mul))"#;
    let quadruple = br#"(module (func (export "_start") (param i64) (result i64)
        local.get 0 i64.const 4 i64.mul))"#;

    // Authentication.
    assert_eq!(call(port, "GET", "/_admin/functions", b"").status, 401);
    let wrong = http::request(port, "GET", "/_admin/functions", &[("Authorization", "Bearer wrong-token-x")], b"")
        .expect("wrong token");
    assert_eq!(wrong.status, 401);
    assert_eq!(call(port, "PUT", "/_admin/functions/triple", triple).status, 401);

    // Deploy, call, replace, reject a bad version, delete.
    let deployed = admin(port, "PUT", "/_admin/functions/triple", triple);
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    assert_eq!(deployed.json()["kind"], "nanoprocess");
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").text(), "12");
    assert_eq!(admin(port, "PUT", "/_admin/functions/triple", quadruple).status, 200);
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").text(), "16");
    // Replacing while it is called in a loop: every call succeeds, on one version or the other.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let caller = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && answers.len() < 500 {
                let r = call(port, "GET", "/exec/triple?args=4", b"");
                answers.push((r.status, r.text()));
            }
            answers
        })
    };
    for round in 0..6 {
        let source: &[u8] = if round % 2 == 0 { triple } else { quadruple };
        assert_eq!(admin(port, "PUT", "/_admin/functions/triple", source).status, 200);
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let answers = caller.join().expect("caller thread");
    assert!(!answers.is_empty());
    for (status, body) in &answers {
        assert!(*status == 200 && (body == "12" || body == "16"), "{status} {body}");
    }
    let rejected = admin(port, "PUT", "/_admin/functions/triple", b"\0asm garbage");
    assert_eq!(rejected.status, 400, "{}", rejected.text());
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").text(), "16", "old version serves");
    let listed = admin(port, "GET", "/_admin/functions", b"").json();
    let names: Vec<&str> =
        listed["functions"].as_array().expect("list").iter().filter_map(|f| f["name"].as_str()).collect();
    assert!(names.contains(&"triple") && names.contains(&"fib"), "{names:?}");
    assert_eq!(admin(port, "GET", "/_admin/functions/triple", b"").json()["size"].as_u64().map(|s| s > 8), Some(true));
    assert_eq!(admin(port, "DELETE", "/_admin/functions/triple", b"").status, 204);
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").status, 404);
    assert_eq!(admin(port, "DELETE", "/_admin/functions/triple", b"").status, 404);

    // Limits: a wall-clock deadline (504) while another function keeps answering,
    // a memory cap (500 naming the limit), a body limit (413).
    let stuck = std::fs::read(guest_source("stuck.wat")).expect("stuck.wat");
    assert_eq!(admin(port, "PUT", "/_admin/functions/stuck-fast?timeout-ms=1500&fuel=100000000000", &stuck).status, 201);
    let looping = std::thread::spawn(move || call(port, "GET", "/exec/stuck-fast", b"").status);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(call(port, "GET", "/exec/answer", b"").text(), "42", "others answer while one loops");
    assert_eq!(looping.join().expect("looping request"), 504);
    let membomb = std::fs::read(guest_source("membomb.wat")).expect("membomb.wat");
    assert_eq!(admin(port, "PUT", "/_admin/functions/bomb?max-memory=1048576", &membomb).status, 201);
    let bomb = call(port, "GET", "/exec/bomb", b"");
    assert_eq!(bomb.status, 500);
    assert!(bomb.text().to_lowercase().contains("memory"), "{}", bomb.text());
    let echo = std::fs::read(guest_source("echo.wat")).expect("echo.wat");
    assert_eq!(admin(port, "PUT", "/_admin/functions/echo?max-body=8", &echo).status, 201);
    assert_eq!(call(port, "POST", "/api/echo/", b"short").text(), "short");
    assert_eq!(call(port, "POST", "/api/echo/", b"far too long for it").status, 413);
    let stats = call(port, "GET", "/stats/stuck-fast", b"").json();
    assert_eq!(stats["errors"]["timeout"], 1, "{stats}");
}

/// A WAT source from `guests/wat/`.
fn guest_source(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guests/wat").join(name)
}

#[test]
fn native_functions() {
    let inst = Instance::start(Mode::Native, &functions_append(), &[]);
    boot_functions_suite(&inst);
    admin_suite(&inst);
}

#[test]
fn qemu_functions() {
    let inst = Instance::start(Mode::Qemu, &functions_append(), &["--smp", "2"]);
    boot_functions_suite(&inst);
    admin_suite(&inst);
    assert!(inst.output().contains("access"), "structured request log on the serial console");
}

#[test]
fn native_root_mount_and_admin_disabled() {
    let inst = Instance::start(Mode::Native, "root=http-server-demo", &[]);
    let hello = call(inst.port, "GET", "/hello", b"");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello"), "Spiderlightning paths at /");
    assert_eq!(call(inst.port, "GET", "/http-server-demo/hello", b"").text(), "hello");
    assert_eq!(call(inst.port, "GET", "/_admin/functions", b"").status, 403);
}

/// Whether KVM can run the hermit kernel here (the same check `cargo xtask` uses: `/dev/kvm`
/// usable, not the nested kvm-pvm on which the kernel dies, vmx/svm present).
fn kvm_unusable_reason() -> Option<String> {
    if !std::path::Path::new("/dev/kvm").exists() {
        return Some("/dev/kvm does not exist".into());
    }
    if std::path::Path::new("/sys/module/kvm_pvm").exists() {
        return Some("KVM here is kvm-pvm (nested, paravirtualized); the hermit kernel dies under it".into());
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    if !cpuinfo.split_whitespace().any(|f| f == "vmx" || f == "svm") {
        return Some("the CPU exposes neither vmx nor svm".into());
    }
    None
}

#[test]
fn uhyve_boots_to_ready() {
    if let Some(reason) = kvm_unusable_reason() {
        eprintln!("SKIPPED uhyve_boots_to_ready: {reason}");
        return;
    }
    let mut child = std::process::Command::new(std::env::var_os("XTASK_BIN").expect("XTASK_BIN"))
        .args(["run", "--no-build", "--uhyve", "--append", "log=info"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start uhyve");
    let stdout = child.stdout.take().expect("stdout");
    let pid = child.id() as i32;
    // A hung boot must not hang the suite: stop it after a minute.
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    });
    let ready = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .take(2000)
        .any(|line| line.contains("ready"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "uhyve boot printed no ready line");
}

#[test]
fn qemu_kvm_http_front() {
    if let Some(reason) = kvm_unusable_reason() {
        eprintln!("SKIPPED qemu_kvm_http_front: {reason}");
        return;
    }
    let inst = Instance::start(Mode::Qemu, HTTP_FRONT_APPEND, &["--accel", "kvm"]);
    http_front_suite(&inst);
}
