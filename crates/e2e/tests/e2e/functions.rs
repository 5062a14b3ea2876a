//! The functions platform: boot-time functions, the admin API, limits.

use e2e::{Instance, Mode, http};

use crate::{ADMIN_TOKEN, admin, call};

pub fn functions_append() -> String {
    format!("log=info admin-token={ADMIN_TOKEN} workers=3")
}

/// A request carrying the header `X-Echo: me`.
fn echo_call(port: u16, method: &str, path: &str, body: &[u8]) -> http::Response {
    http::request(port, method, path, &[("X-Echo", "me")], body)
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// The Spiderlightning guests ported by changing their `use` lines (guests/slight-*) answer
/// as slight's demos do.
fn slight_guests(port: u16) {
    let hello = echo_call(port, "GET", "/slight-http-server-demo/hello", b"");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello"));
    assert_eq!(hello.header("x-echo"), Some("me"));
    let missing = echo_call(port, "GET", "/slight-http-server-demo/get", b"");
    assert_eq!(
        (missing.status, missing.text().as_str()),
        (404, "Key not found")
    );
    assert_eq!(missing.header("x-echo"), Some("me"));
    let set = echo_call(port, "PUT", "/slight-http-server-demo/set", b"slight-1");
    assert_eq!((set.status, set.body.len()), (204, 0));
    let got = echo_call(port, "GET", "/slight-http-server-demo/get", b"");
    assert_eq!((got.status, got.text().as_str()), (200, "slight-1"));
    for (method, path) in [
        ("POST", "/slight-http-server-demo/upload"),
        ("DELETE", "/slight-http-server-demo/delete-file"),
    ] {
        let echoed = echo_call(port, method, path, b"body \x00\xff");
        assert_eq!(
            (echoed.status, echoed.body.as_slice()),
            (200, b"body \x00\xff".as_slice()),
            "{method} {path}"
        );
        assert_eq!(echoed.header("x-echo"), Some("me"), "{method} {path}");
        // No body arrives as an empty body: slight guests may unwrap it.
        let empty = echo_call(port, method, path, b"");
        assert_eq!(
            (empty.status, empty.body.len()),
            (200, 0),
            "{method} {path}"
        );
    }
    let report = call(port, "GET", "/slight-keyvalue-demo/", b"");
    assert_eq!(
        (report.status, report.text().as_str()),
        (
            200,
            "The value for keyvalue1 is: spiderlightning, keyvalue2 is spiderlightning\n\
             deleted from both: true\n"
        )
    );
}

/// The functions built into the image answer on their routes.
fn boot_functions_suite(inst: &Instance) {
    let port = inst.port;
    // Spiderlightning's http-server demo, mounted under its name.
    let hello = call(port, "GET", "/http-server-demo/hello", b"");
    assert_eq!((hello.status, hello.text().as_str()), (200, "hello"));
    let missing = call(port, "GET", "/http-server-demo/get", b"");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert!(
        missing.text().contains("Key not found"),
        "{}",
        missing.text()
    );
    assert_eq!(
        call(port, "PUT", "/http-server-demo/set", b"value-1").status,
        204
    );
    let got = call(port, "GET", "/http-server-demo/get", b"");
    assert_eq!((got.status, got.text().as_str()), (200, "value-1"));
    let upload = call(port, "POST", "/http-server-demo/upload", b"echo me\x00\xff");
    assert_eq!(
        (upload.status, upload.body.as_slice()),
        (200, b"echo me\x00\xff".as_slice())
    );
    let deleted = call(port, "DELETE", "/http-server-demo/delete-file", b"file.txt");
    assert_eq!((deleted.status, deleted.text().as_str()), (200, "file.txt"));
    assert_eq!(
        call(port, "GET", "/http-server-demo/no-such-route", b"").status,
        404
    );
    // As in Spiderlightning's demo, hello and the echoes send the request's headers back.
    for (method, path) in [
        ("GET", "/http-server-demo/hello"),
        ("POST", "/http-server-demo/upload"),
        ("DELETE", "/http-server-demo/delete-file"),
    ] {
        let echoed = echo_call(port, method, path, b"");
        assert_eq!(echoed.header("x-echo"), Some("me"), "{method} {path}");
    }

    slight_guests(port);

    // keyvalue demo: two stores, keys, get, delete.
    crate::assert_keyvalue_demo(port);

    // todo demo: route parameters and JSON, persisted in keyvalue.
    let created = call(
        port,
        "POST",
        "/todo-demo/todos",
        br#"{"title":"boot a unikernel"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_u64().expect("id");
    let one = call(port, "GET", &format!("/todo-demo/todos/{id}"), b"");
    assert_eq!(one.json()["title"], "boot a unikernel");
    let list = call(port, "GET", "/todo-demo/todos", b"");
    assert!(list.text().contains("boot a unikernel"), "{}", list.text());
    assert_eq!(
        call(port, "DELETE", &format!("/todo-demo/todos/{id}"), b"").status,
        204
    );
    assert_eq!(
        call(port, "GET", &format!("/todo-demo/todos/{id}"), b"").status,
        404
    );
    assert_eq!(
        call(port, "POST", "/todo-demo/todos", b"not json").status,
        400
    );

    // Classic FaaS: WASI fib with stdin from the path, nanoprocess modules.
    let fib = call(port, "GET", "/api/fib/10", b"");
    assert_eq!(
        (fib.status, fib.text().trim()),
        (200, "0,1,1,2,3,5,8,13,21,34")
    );
    let bad = call(port, "GET", "/api/fib/not-a-number", b"");
    assert_eq!(
        bad.status,
        500,
        "non-zero exit is a 500 with stderr: {}",
        bad.text()
    );
    assert_eq!(call(port, "GET", "/exec/answer", b"").text(), "42");
    assert_eq!(call(port, "GET", "/exec/sum?args=5,2", b"").text(), "7");
    assert_eq!(call(port, "POST", "/exec/sum", b"[5, 2]").text(), "7");
    assert_eq!(call(port, "GET", "/exec/sum?args=5", b"").status, 400);
    assert_eq!(
        call(port, "GET", "/exec/fib", b"").status,
        400,
        "wrong kind"
    );

    // Stats and metrics.
    let stats = call(port, "GET", "/stats/fib", b"").json();
    assert_eq!(stats["invocations"], 3, "{stats}");
    assert_eq!(stats["errors"]["exit_failure"], 1, "{stats}");
    assert_eq!(
        stats["errors"]["bad_input"], 1,
        "the wrong-kind call counts: {stats}"
    );
    assert!(
        stats["latency_us"]["p99"].as_u64().unwrap_or(0) > 0,
        "{stats}"
    );
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
    let wrong = http::request(
        port,
        "GET",
        "/_admin/functions",
        &[("Authorization", "Bearer wrong-token-x")],
        b"",
    )
    .expect("wrong token");
    assert_eq!(wrong.status, 401);
    assert_eq!(
        call(port, "PUT", "/_admin/functions/triple", triple).status,
        401
    );

    // Deploy, call, replace, reject a bad version, delete.
    let deployed = admin(port, "PUT", "/_admin/functions/triple", triple);
    assert_eq!(deployed.status, 201, "{}", deployed.text());
    assert_eq!(deployed.json()["kind"], "nanoprocess");
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").text(), "12");
    assert_eq!(
        admin(port, "PUT", "/_admin/functions/triple", quadruple).status,
        200
    );
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").text(), "16");
    // Replacing while it is called in a loop: every call succeeds, on one version or the other.
    // Each replacement waits for a call in between, so the calls and the swaps interleave.
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicUsize::new(0));
    let caller = {
        let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !stop.load(Ordering::SeqCst) && answers.len() < 500 {
                let r = call(port, "GET", "/exec/triple?args=4", b"");
                answers.push((r.status, r.text()));
                calls.fetch_add(1, Ordering::SeqCst);
            }
            answers
        })
    };
    let wait_for_call = |after: usize| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while calls.load(Ordering::SeqCst) <= after && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    for round in 0..6 {
        wait_for_call(calls.load(Ordering::SeqCst));
        let source: &[u8] = if round % 2 == 0 { triple } else { quadruple };
        assert_eq!(
            admin(port, "PUT", "/_admin/functions/triple", source).status,
            200
        );
    }
    wait_for_call(calls.load(Ordering::SeqCst));
    stop.store(true, Ordering::SeqCst);
    let answers = caller.join().expect("caller thread");
    assert!(
        answers.len() >= 7,
        "calls interleaved with the 6 swaps: {}",
        answers.len()
    );
    for (status, body) in &answers {
        assert!(
            *status == 200 && (body == "12" || body == "16"),
            "{status} {body}"
        );
    }
    let rejected = admin(port, "PUT", "/_admin/functions/triple", b"\0asm garbage");
    assert_eq!(rejected.status, 400, "{}", rejected.text());
    assert_eq!(
        call(port, "GET", "/exec/triple?args=4", b"").text(),
        "16",
        "old version serves"
    );
    let listed = admin(port, "GET", "/_admin/functions", b"").json();
    let names: Vec<&str> = listed["functions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|f| f["name"].as_str())
        .collect();
    assert!(
        names.contains(&"triple") && names.contains(&"fib"),
        "{names:?}"
    );
    assert_eq!(
        admin(port, "GET", "/_admin/functions/triple", b"").json()["size"]
            .as_u64()
            .map(|s| s > 8),
        Some(true)
    );
    assert_eq!(
        admin(port, "DELETE", "/_admin/functions/triple", b"").status,
        204
    );
    assert_eq!(call(port, "GET", "/exec/triple?args=4", b"").status, 404);
    assert_eq!(
        admin(port, "DELETE", "/_admin/functions/triple", b"").status,
        404
    );

    // A WASI program deployed over HTTP with the deploy command.
    let fib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/guests/fib.wasm");
    let deployed = std::process::Command::new(std::env::var_os("XTASK_BIN").expect("XTASK_BIN"))
        .args(["deploy", "fib-http"])
        .arg(&fib)
        .args(["--port", &port.to_string(), "--token", ADMIN_TOKEN])
        .output()
        .expect("run xtask deploy");
    assert!(
        deployed.status.success(),
        "{}",
        String::from_utf8_lossy(&deployed.stdout)
    );
    assert!(String::from_utf8_lossy(&deployed.stdout).contains("\"kind\":\"wasi\""));
    assert_eq!(
        call(port, "GET", "/api/fib-http/5", b"").text().trim(),
        "0,1,1,2,3"
    );

    // Limits: a wall-clock deadline (504) while another function keeps answering,
    // a memory cap (500 naming the limit), a body limit (413).
    let stuck = std::fs::read(guest_source("stuck.wat")).expect("stuck.wat");
    assert_eq!(
        admin(
            port,
            "PUT",
            "/_admin/functions/stuck-fast?timeout-ms=1500&fuel=100000000000",
            &stuck
        )
        .status,
        201
    );
    let looping = std::thread::spawn(move || call(port, "GET", "/exec/stuck-fast", b"").status);
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert_eq!(
        call(port, "GET", "/exec/answer", b"").text(),
        "42",
        "others answer while one loops"
    );
    assert_eq!(looping.join().expect("looping request"), 504);
    let membomb = std::fs::read(guest_source("membomb.wat")).expect("membomb.wat");
    assert_eq!(
        admin(
            port,
            "PUT",
            "/_admin/functions/bomb?max-memory=1048576",
            &membomb
        )
        .status,
        201
    );
    let bomb = call(port, "GET", "/exec/bomb", b"");
    assert_eq!(bomb.status, 500);
    assert!(
        bomb.text().to_lowercase().contains("memory"),
        "{}",
        bomb.text()
    );
    let echo = std::fs::read(guest_source("echo.wat")).expect("echo.wat");
    assert_eq!(
        admin(port, "PUT", "/_admin/functions/echo?max-body=8", &echo).status,
        201
    );
    assert_eq!(call(port, "POST", "/api/echo/", b"short").text(), "short");
    assert_eq!(
        call(port, "POST", "/api/echo/", b"far too long for it").status,
        413
    );
    let stats = call(port, "GET", "/stats/stuck-fast", b"").json();
    assert_eq!(stats["errors"]["timeout"], 1, "{stats}");
}

/// WASI `random_get` in the server (under hermit: the kernel's ChaCha20 through `getrandom`,
/// seeded from the CPU): every call gets fresh bytes, and the kernel did not fall back to its
/// fixed-seed generator.
fn entropy_suite(inst: &Instance) {
    let random = br#"(module
        (import "wasi_snapshot_preview1" "random_get" (func $random (param i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "fd_write" (func $write (param i32 i32 i32 i32) (result i32)))
        (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
        (memory (export "memory") 1)
        (func (export "_start")
          (if (call $random (i32.const 64) (i32.const 32)) (then (call $exit (i32.const 1))))
          (i32.store (i32.const 0) (i32.const 64))
          (i32.store (i32.const 4) (i32.const 32))
          (drop (call $write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)))))"#;
    let port = inst.port;
    assert_eq!(
        admin(port, "PUT", "/_admin/functions/random", random).status,
        201
    );
    let answers: Vec<Vec<u8>> = (0..3)
        .map(|_| {
            let answer = call(port, "GET", "/api/random/", b"");
            assert_eq!(answer.status, 200, "{}", answer.text());
            answer.body
        })
        .collect();
    for (i, bytes) in answers.iter().enumerate() {
        assert_eq!(bytes.len(), 32);
        assert_ne!(bytes, &[0u8; 32].to_vec());
        for earlier in &answers[..i] {
            assert_ne!(bytes, earlier, "two calls got the same random bytes");
        }
    }
    // Without a hardware seed hermit falls back to a fixed-seed PRNG and says so.
    let output = inst.output();
    assert!(
        !output.contains("Unable to read entropy"),
        "the kernel had no entropy source:\n{output}"
    );
}

/// A WAT source from `guests/wat/`.
fn guest_source(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../guests/wat")
        .join(name)
}

#[test]
fn native_functions() {
    let inst = Instance::start(Mode::Native, &functions_append(), &[]);
    boot_functions_suite(&inst);
    admin_suite(&inst);
    entropy_suite(&inst);
}

#[test]
fn qemu_functions() {
    let inst = Instance::start(Mode::Qemu, &functions_append(), &["--smp", "2"]);
    boot_functions_suite(&inst);
    admin_suite(&inst);
    entropy_suite(&inst);
    assert!(
        inst.output().contains("access"),
        "structured request log on the serial console"
    );
}

#[test]
fn native_root_mount_and_admin_disabled() {
    let inst = Instance::start(Mode::Native, "root=http-server-demo", &[]);
    let hello = call(inst.port, "GET", "/hello", b"");
    assert_eq!(
        (hello.status, hello.text().as_str()),
        (200, "hello"),
        "Spiderlightning paths at /"
    );
    assert_eq!(
        call(inst.port, "GET", "/http-server-demo/hello", b"").text(),
        "hello"
    );
    assert_eq!(call(inst.port, "GET", "/_admin/functions", b"").status, 403);
}
