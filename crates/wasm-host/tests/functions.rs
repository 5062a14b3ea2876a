//! End-to-end tests: the demo guests built by `cargo xtask guests`, and hand-written WAT modules
//! that break the rules (bad wasm, wrong world, traps, endless loops, memory bombs, bad ABI data).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;

use keyvalue::{Bounds, KeyValue, MemoryStore};
use sandbox::{Fault, Spend};
use wasm_host::{Function, FunctionHost, GuestRequest, HostConfig, InvokeError, LoadError, Method};

fn guests_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guests"),
    }
}

/// The bytes of a built guest; fails loudly when the guests were not built.
fn guest(name: &str) -> Vec<u8> {
    let path = guests_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Build the guests first: `cargo xtask guests`",
            path.display()
        )
    })
}

fn host() -> (FunctionHost, Arc<MemoryStore>) {
    let kv = Arc::new(MemoryStore::new());
    (FunctionHost::new(kv.clone(), HostConfig::default()), kv)
}

fn request(method: Method, uri: &str, body: &[u8]) -> GuestRequest {
    GuestRequest {
        method,
        uri: uri.into(),
        headers: vec![
            ("content-type".into(), "text/plain".into()),
            ("X-Echo".into(), "me".into()),
        ],
        body: body.to_vec(),
    }
}

fn call(f: &Function, method: Method, uri: &str, body: &[u8]) -> (u16, Vec<u8>) {
    match f.handle(request(method, uri, body)).result {
        Ok(r) => (r.status, r.body),
        Err(InvokeError::NoRoute { .. }) => (404, Vec::new()),
        Err(InvokeError::Guest { error, .. }) => (error.status(), error.to_string().into_bytes()),
        Err(e) => (500, e.to_string().into_bytes()),
    }
}

#[test]
fn http_server_demo_answers_its_routes() {
    let (host, kv) = host();
    let f = host
        .load("http-server-demo", &guest("http-server-demo"))
        .expect("loads");
    let names: Vec<&str> = f.routes().iter().map(|r| r.handler.as_str()).collect();
    assert_eq!(names, ["hello", "set", "get", "upload", "delete_file"]);
    assert_eq!(f.route(Method::Get, "/hello").unwrap().handler, "hello");
    assert!(f.route(Method::Post, "/hello").is_none());

    let hello = f
        .handle(request(Method::Get, "/hello", b""))
        .result
        .unwrap();
    assert_eq!((hello.status, hello.body.as_slice()), (200, &b"hello"[..]));
    assert!(
        hello
            .headers
            .iter()
            .any(|(k, v)| k == "content-type" && v.starts_with("text/plain"))
    );

    assert_eq!(
        call(&f, Method::Get, "/get", b""),
        (404, b"Key not found".to_vec())
    );
    assert_eq!(call(&f, Method::Put, "/set", b"stored value").0, 204);
    assert_eq!(
        kv.get("my-container", "my-key", &Bounds::UNBOUNDED)
            .unwrap(),
        b"stored value"
    );
    assert_eq!(
        call(&f, Method::Get, "/get", b""),
        (200, b"stored value".to_vec())
    );
    let binary: Vec<u8> = (0..=255).collect();
    assert_eq!(
        call(&f, Method::Post, "/upload", &binary),
        (200, binary.clone())
    );
    assert_eq!(
        call(&f, Method::Delete, "/delete-file", b"file.txt"),
        (200, b"file.txt".to_vec())
    );
    // Like Spiderlightning's demo, hello and the echoes send the request's headers back.
    for (method, uri) in [
        (Method::Get, "/hello"),
        (Method::Post, "/upload"),
        (Method::Delete, "/delete-file"),
    ] {
        let answer = f.handle(request(method, uri, b"")).result.unwrap();
        assert!(
            answer
                .headers
                .contains(&("x-echo".to_string(), "me".to_string())),
            "{uri}: {:?}",
            answer.headers
        );
    }

    let missing = f
        .handle(request(Method::Get, "/nope", b""))
        .result
        .unwrap_err();
    assert!(matches!(missing, InvokeError::NoRoute { .. }), "{missing}");
}

#[test]
fn hosts_and_functions_can_be_shared_between_threads() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<FunctionHost>();
    assert_send_sync::<Function>();
    let (host, _) = host();
    let f = host
        .load("http-server-demo", &guest("http-server-demo"))
        .unwrap();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..10 {
                    assert_eq!(
                        call(&f, Method::Get, "/hello", b""),
                        (200, b"hello".to_vec())
                    );
                }
            });
        }
    });
}

#[test]
fn large_bodies_round_trip() {
    let (host, _) = host();
    let f = host
        .load("http-server-demo", &guest("http-server-demo"))
        .unwrap();
    let body: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7) as u8).collect();
    assert_eq!(call(&f, Method::Post, "/upload", &body), (200, body));
}

#[test]
fn keyvalue_demo_reports_two_separate_stores() {
    let (host, kv) = host();
    kv.set("my-container2", "other", b"x", &Bounds::UNBOUNDED)
        .unwrap();
    let f = host.load("keyvalue-demo", &guest("keyvalue-demo")).unwrap();
    let (status, body) = call(&f, Method::Get, "/", b"");
    let report = String::from_utf8(body).unwrap();
    assert_eq!(status, 200, "{report}");
    assert_eq!(
        report,
        "keyvalue1 keys: [\"key\"]\nkeyvalue2 keys: [\"key\", \"other\"]\n\
         The value for keyvalue1 is: spiderlightning, keyvalue2 is spiderlightning\n\
         keyvalue1 after delete: gone\nkeyvalue2 after delete: gone\n"
    );
    assert!(
        kv.keys("my-container", &Bounds::UNBOUNDED)
            .unwrap()
            .is_empty()
    );
}

/// The Spiderlightning guests ported by changing their `use` lines (guests/slight-*).
#[test]
fn slight_http_server_demo_answers_like_slights() {
    let (host, kv) = host();
    let f = host
        .load("slight-http-server-demo", &guest("slight-http-server-demo"))
        .unwrap();
    let names: Vec<&str> = f.routes().iter().map(|r| r.handler.as_str()).collect();
    // The route names `delete-file-handler`; the host hands it over as the Rust name.
    assert_eq!(
        names,
        [
            "handle_hello",
            "handle_get",
            "handle_set",
            "upload",
            "delete_file_handler"
        ]
    );
    let hello = f
        .handle(request(Method::Get, "/hello", b""))
        .result
        .unwrap();
    assert_eq!((hello.status, hello.body.as_slice()), (200, &b"hello"[..]));
    assert!(hello.headers.contains(&("x-echo".into(), "me".into())));
    assert_eq!(
        call(&f, Method::Get, "/get", b""),
        (404, b"Key not found".to_vec())
    );
    assert_eq!(
        call(&f, Method::Put, "/set", b"slight value"),
        (204, Vec::new())
    );
    assert_eq!(
        kv.get("slight-container", "key", &Bounds::UNBOUNDED)
            .unwrap(),
        b"slight value"
    );
    assert_eq!(
        call(&f, Method::Get, "/get", b""),
        (200, b"slight value".to_vec())
    );
    for (method, uri) in [(Method::Post, "/upload"), (Method::Delete, "/delete-file")] {
        let echo = f.handle(request(method, uri, b"body")).result.unwrap();
        assert_eq!((echo.status, echo.body.as_slice()), (200, &b"body"[..]));
        assert!(echo.headers.contains(&("x-echo".into(), "me".into())));
        // An empty body arrives as an empty body (slight's `request.body` is `Some`).
        assert_eq!(call(&f, method, uri, b""), (200, Vec::new()));
    }
}

#[test]
fn slight_keyvalue_demo_reports_both_stores_and_the_delete() {
    let (host, kv) = host();
    let f = host
        .load("slight-keyvalue-demo", &guest("slight-keyvalue-demo"))
        .unwrap();
    let (status, body) = call(&f, Method::Get, "/", b"");
    let report = String::from_utf8(body).unwrap();
    assert_eq!(
        (status, report.as_str()),
        (
            200,
            "The value for keyvalue1 is: spiderlightning, keyvalue2 is spiderlightning\n\
             deleted from both: true\n"
        )
    );
    assert!(
        kv.keys("slight-container2", &Bounds::UNBOUNDED)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn todo_demo_creates_lists_gets_and_deletes() {
    let (host, _) = host();
    let f = host.load("todo-demo", &guest("todo-demo")).unwrap();
    assert_eq!(call(&f, Method::Get, "/todos", b""), (200, b"[]".to_vec()));
    let (status, body) = call(&f, Method::Post, "/todos", br#"{"title":"write tests"}"#);
    assert_eq!(status, 201);
    assert_eq!(body, br#"{"id":1,"title":"write tests","done":false}"#);
    assert_eq!(
        call(
            &f,
            Method::Post,
            "/todos",
            br#"{"title":"ship","done":true}"#
        )
        .0,
        201
    );
    assert_eq!(call(&f, Method::Post, "/todos", b"not json").0, 400);
    let (status, body) = call(&f, Method::Get, "/todos", b"");
    assert_eq!(status, 200);
    assert_eq!(
        body,
        br#"[{"id":1,"title":"write tests","done":false},{"id":2,"title":"ship","done":true}]"#
    );
    assert_eq!(
        call(&f, Method::Get, "/todos/2", b""),
        (200, br#"{"id":2,"title":"ship","done":true}"#.to_vec())
    );
    assert_eq!(call(&f, Method::Get, "/todos/x", b"").0, 400);
    assert_eq!(call(&f, Method::Delete, "/todos/1", b"").0, 204);
    assert_eq!(call(&f, Method::Get, "/todos/1", b"").0, 404);
    assert_eq!(call(&f, Method::Delete, "/todos/1", b"").0, 404);
    let (_, body) = call(&f, Method::Get, "/todos", b"");
    assert_eq!(body, br#"[{"id":2,"title":"ship","done":true}]"#);
}

#[test]
fn every_request_gets_a_fresh_instance() {
    // The demo guests keep no state between requests except through keyvalue; a guest that
    // counted in a global would always see its initial value.
    let (host, _) = host();
    let f = host
        .load("http-server-demo", &guest("http-server-demo"))
        .unwrap();
    for _ in 0..20 {
        assert_eq!(call(&f, Method::Get, "/hello", b"").0, 200);
    }
}

// ---------------------------------------------------------------------------------------------
// WAT guests. `handle-http` writes its `result<response, http-error>` at 600:
//   600 result discriminant, 604 response.status (u16), 608 headers option, 620 body option
//   (624 ptr, 628 len); for an error, 604 is the http-error discriminant and 608 its payload.

const HTTP: &str = "uniwasm:platform/http-server@0.1.0";

fn wat_guest(extra: &str, init: &str, handle_body: &str) -> Vec<u8> {
    wat_guest_with_imports("", extra, init, handle_body)
}

fn wat_guest_with_imports(imports: &str, extra: &str, init: &str, handle_body: &str) -> Vec<u8> {
    let text = format!(
        r#"(module
  {imports}
  (import "{HTTP}" "[constructor]router" (func $new (result i32)))
  (import "{HTTP}" "[method]router.get" (func $get (param i32 i32 i32 i32 i32) (result i32)))
  (import "{HTTP}" "serve" (func $serve (param i32 i32 i32 i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 16) "/x")
  (data (i32.const 32) "h")
  (data (i32.const 48) "addr")
  (data (i32.const 700) "\ff\fe")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $p i32)
    (local.set $p (i32.and (i32.add (global.get $heap) (i32.sub (local.get 2) (i32.const 1)))
                           (i32.sub (i32.const 0) (local.get 2))))
    (global.set $heap (i32.add (local.get $p) (local.get 3)))
    (if (i32.gt_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536)))
      (then (drop (memory.grow (i32.add (i32.div_u (local.get 3) (i32.const 65536)) (i32.const 1))))))
    (local.get $p))
  {extra}
  (func (export "on-server-init") (result i32)
    {init})
  (func (export "handle-http") (param i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32 i32) (result i32)
    {handle_body}))"#
    );
    wat::parse_str(&text).unwrap_or_else(|e| panic!("bad test WAT: {e}\n{text}"))
}

const SERVE: &str = "(call $serve (i32.const 48) (i32.const 4)
      (call $get (call $new) (i32.const 16) (i32.const 2) (i32.const 32) (i32.const 1))
      (i32.const 512))
    (i32.const 512)";

const OK_200: &str = "(i32.store8 (i32.const 600) (i32.const 0))
    (i32.store16 (i32.const 604) (i32.const 200))
    (i32.store8 (i32.const 608) (i32.const 0))
    (i32.store8 (i32.const 620) (i32.const 0))
    (i32.const 600)";

fn load_wat(handle_body: &str) -> Function {
    let (host, _) = host();
    host.load("wat", &wat_guest("", SERVE, handle_body))
        .expect("WAT guest loads")
}

fn invoke_err(f: &Function) -> InvokeError {
    f.handle(request(Method::Get, "/x", b""))
        .result
        .expect_err("request must fail")
}

/// The fault that ended a failed request.
fn fault_of(err: &InvokeError) -> &Fault {
    match err {
        InvokeError::Fault { fault, .. } => fault,
        other => panic!("expected a fault, got {other}"),
    }
}

#[test]
fn wat_guest_with_hand_computed_layout_answers() {
    let f = load_wat(OK_200);
    assert_eq!(f.routes().len(), 1);
    let invocation = f.handle(request(Method::Get, "/x", b""));
    assert!(invocation.report.fuel_used > 0);
    assert!(invocation.report.peak_memory >= 65536);
    let r = invocation.result.unwrap();
    assert_eq!((r.status, r.body.len(), r.headers.len()), (200, 0, 0));
}

#[test]
fn bytes_that_are_not_wasm_are_rejected() {
    let (host, _) = host();
    let err = host.load("junk", b"hello, not wasm").unwrap_err();
    assert!(matches!(err, LoadError::InvalidModule { .. }), "{err}");
    assert!(err.to_string().contains("junk"), "{err}");
}

#[test]
fn modules_of_another_world_are_rejected_naming_the_mismatch() {
    let (host, _) = host();
    let empty = wat::parse_str(r#"(module (memory (export "memory") 1))"#).unwrap();
    let err = host.load("empty", &empty).unwrap_err();
    assert!(matches!(err, LoadError::Export { .. }), "{err}");
    assert!(err.to_string().contains("cabi_realloc"), "{err}");

    let unknown = wat::parse_str(
        r#"(module (import "env" "system" (func (param i32))) (memory (export "memory") 1))"#,
    )
    .unwrap();
    let err = host.load("unknown", &unknown).unwrap_err();
    assert!(
        matches!(err, LoadError::UnknownImport { ref name, .. } if name == "system"),
        "{err}"
    );

    let wrong_type = wat::parse_str(format!(
        r#"(module (import "{HTTP}" "[constructor]router" (func (param i32))) (memory (export "memory") 1))"#
    ))
    .unwrap();
    let err = host.load("wrong-type", &wrong_type).unwrap_err();
    assert!(matches!(err, LoadError::ImportType { .. }), "{err}");
    assert!(err.to_string().contains("[constructor]router"), "{err}");

    let missing_handler = wat::parse_str(
        r#"(module (memory (export "memory") 1)
             (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32) (i32.const 0))
             (func (export "on-server-init") (result i32) (i32.const 0))
             (func (export "handle-http") (result i32) (i32.const 0)))"#,
    )
    .unwrap();
    let err = host.load("bad-export", &missing_handler).unwrap_err();
    assert!(err.to_string().contains("handle-http"), "{err}");
}

#[test]
fn init_that_fails_or_never_serves_is_a_load_error() {
    let (host, _) = host();
    let err = host
        .load("no-serve", &wat_guest("", "(i32.const 512)", OK_200))
        .unwrap_err();
    assert!(matches!(err, LoadError::NotServed { .. }), "{err}");

    let trap = host
        .load("init-trap", &wat_guest("", "unreachable", OK_200))
        .unwrap_err();
    assert!(matches!(trap, LoadError::Init { .. }), "{trap}");
    assert!(trap.to_string().contains("on-server-init"), "{trap}");

    let bad_handle =
        "(call $serve (i32.const 48) (i32.const 4) (i32.const 99) (i32.const 512)) (i32.const 512)";
    let err = host
        .load("bad-handle", &wat_guest("", bad_handle, OK_200))
        .unwrap_err();
    assert!(
        err.to_string().contains("invalid router handle 99"),
        "{err}"
    );
}

const LOG: &str = "uniwasm:platform/log@0.1.0";

#[test]
fn log_messages_go_on_and_a_panic_stops_the_run_with_its_message() {
    let (host, _) = host();
    let imports = format!(
        r#"(import "{LOG}" "write" (func $write (param i32 i32 i32)))
           (import "{LOG}" "panic" (func $panic (param i32 i32)))"#
    );
    // 10,000 messages: past the first 4 KiB they are dropped, the run goes on and answers.
    let chatty = format!(
        "(local $i i32)
         (loop $more
           (call $write (i32.const 1) (i32.const 48) (i32.const 4))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $more (i32.lt_u (local.get $i) (i32.const 10000))))
         {OK_200}"
    );
    let f = host
        .load(
            "chatty",
            &wat_guest_with_imports(&imports, "", SERVE, &chatty),
        )
        .unwrap();
    let answer = f.handle(request(Method::Get, "/x", b"")).result.unwrap();
    assert_eq!(answer.status, 200);

    // A level that is not one traps; a panic ends the run with its message.
    let bad_level = format!("(call $write (i32.const 9) (i32.const 48) (i32.const 4)) {OK_200}");
    let f = host
        .load(
            "bad-level",
            &wat_guest_with_imports(&imports, "", SERVE, &bad_level),
        )
        .unwrap();
    assert!(matches!(
        fault_of(&invoke_err(&f)),
        Fault::Host(_) | Fault::Trap(_)
    ));
    let panics = format!("(call $panic (i32.const 48) (i32.const 4)) {OK_200}");
    let f = host
        .load(
            "panics",
            &wat_guest_with_imports(&imports, "", SERVE, &panics),
        )
        .unwrap();
    let err = invoke_err(&f);
    assert_eq!(
        fault_of(&err),
        &Fault::Trap("panicked: addr".into()),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("panics::handle-http(h): trapped: panicked: addr"),
        "{err}"
    );
}

#[test]
fn a_trapping_guest_is_a_500_naming_the_function() {
    let err = invoke_err(&load_wat("unreachable"));
    assert!(matches!(fault_of(&err), Fault::Trap(_)), "{err}");
    assert!(err.to_string().contains("wat::handle-http(h)"), "{err}");
}

#[test]
fn an_endless_loop_runs_out_of_fuel() {
    let mut config = HostConfig::default();
    config.limits.fuel = 1_000_000;
    let host = FunctionHost::new(Arc::new(MemoryStore::new()), config);
    let f = host
        .load(
            "loop",
            &wat_guest("", SERVE, "(loop $l (br $l)) (i32.const 0)"),
        )
        .unwrap();
    let err = invoke_err(&f);
    assert!(matches!(fault_of(&err), Fault::OutOfFuel { .. }), "{err}");
}

#[test]
fn a_memory_bomb_hits_the_memory_cap() {
    let f = load_wat(
        "(loop $l (br_if $l (i32.ne (memory.grow (i32.const 16)) (i32.const -1)))) unreachable",
    );
    let err = invoke_err(&f);
    assert!(
        matches!(
            fault_of(&err),
            Fault::Memory {
                spent: Spend::LinearMemory,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_stack_overflow_traps() {
    let (host, _) = host();
    let f = host
        .load(
            "recurse",
            &wat_guest(
                "(func $rec (param i32) (result i32) (call $rec (i32.add (local.get 0) (i32.const 1))))",
                SERVE,
                "(call $rec (i32.const 0))",
            ),
        )
        .unwrap();
    let err = invoke_err(&f);
    assert!(matches!(fault_of(&err), Fault::Trap(_)), "{err}");
}

#[test]
fn bad_abi_data_from_the_guest_is_a_500_not_a_panic() {
    let cases = [
        ("out of bounds", "(i32.const 0x7ffffff0)"),
        ("misaligned", "(i32.const 601)"),
        (
            "discriminant",
            "(i32.store8 (i32.const 600) (i32.const 7)) (i32.const 600)",
        ),
        (
            "utf-8",
            "(i32.store8 (i32.const 600) (i32.const 1)) (i32.store8 (i32.const 604) (i32.const 4))
             (i32.store (i32.const 608) (i32.const 700)) (i32.store (i32.const 612) (i32.const 2))
             (i32.const 600)",
        ),
        (
            "body out of bounds",
            "(i32.store8 (i32.const 600) (i32.const 0)) (i32.store16 (i32.const 604) (i32.const 200))
             (i32.store8 (i32.const 608) (i32.const 0)) (i32.store8 (i32.const 620) (i32.const 1))
             (i32.store (i32.const 624) (i32.const 65000)) (i32.store (i32.const 628) (i32.const 1000))
             (i32.const 600)",
        ),
    ];
    for (what, body) in cases {
        let err = invoke_err(&load_wat(body));
        assert!(matches!(fault_of(&err), Fault::Host(_)), "{what}: {err}");
    }
}

#[test]
fn guest_http_errors_answer_with_their_status() {
    let err = invoke_err(&load_wat(
        "(i32.store8 (i32.const 600) (i32.const 1)) (i32.store8 (i32.const 604) (i32.const 3))
         (i32.store16 (i32.const 608) (i32.const 418)) (i32.const 600)",
    ));
    assert!(
        matches!(&err, InvokeError::Guest { error, .. } if error.status() == 418),
        "{err}"
    );

    let err = invoke_err(&load_wat(
        "(i32.store8 (i32.const 600) (i32.const 0)) (i32.store16 (i32.const 604) (i32.const 1000))
         (i32.store8 (i32.const 608) (i32.const 0)) (i32.store8 (i32.const 620) (i32.const 0))
         (i32.const 600)",
    ));
    assert!(
        matches!(err, InvokeError::InvalidStatus { status: 1000, .. }),
        "{err}"
    );
}

const KV: &str = "uniwasm:platform/keyvalue@0.1.0";

#[test]
fn host_imports_validate_what_the_guest_passes() {
    let (host, _) = host();
    let imports = format!(
        r#"(import "{KV}" "[static]store.open" (func $open (param i32 i32 i32)))
           (import "{KV}" "[method]store.get" (func $kv_get (param i32 i32 i32 i32)))"#
    );
    // A store name that is not UTF-8 (bytes at 700) traps the request in the import.
    let bad_utf8 = "(call $open (i32.const 700) (i32.const 2) (i32.const 800)) unreachable";
    let f = host
        .load(
            "kv-utf8",
            &wat_guest_with_imports(&imports, "", SERVE, bad_utf8),
        )
        .unwrap();
    let err = invoke_err(&f);
    assert!(
        matches!(fault_of(&err), Fault::Host(message) if message.contains("UTF-8")),
        "{err}"
    );

    // A misaligned return pointer is refused.
    let misaligned = "(call $open (i32.const 48) (i32.const 4) (i32.const 801)) unreachable";
    let f = host
        .load(
            "kv-align",
            &wat_guest_with_imports(&imports, "", SERVE, misaligned),
        )
        .unwrap();
    let err = invoke_err(&f);
    assert!(matches!(fault_of(&err), Fault::Host(_)), "{err}");

    // A store handle that was never opened traps with a message naming it.
    let bad_handle =
        "(call $kv_get (i32.const 5) (i32.const 48) (i32.const 4) (i32.const 800)) unreachable";
    let f = host
        .load(
            "kv-handle",
            &wat_guest_with_imports(&imports, "", SERVE, bad_handle),
        )
        .unwrap();
    let err = invoke_err(&f);
    assert!(err.to_string().contains("invalid store handle 5"), "{err}");

    // Opening works and the result lands where the guest asked: ok discriminant, handle 1.
    let open_ok = "(call $open (i32.const 48) (i32.const 4) (i32.const 800))
        (if (i32.ne (i32.load8_u (i32.const 800)) (i32.const 0)) (then unreachable))
        (if (i32.ne (i32.load (i32.const 804)) (i32.const 1)) (then unreachable))
        (i32.store8 (i32.const 600) (i32.const 0)) (i32.store16 (i32.const 604) (i32.const 201))
        (i32.store8 (i32.const 608) (i32.const 0)) (i32.store8 (i32.const 620) (i32.const 0))
        (i32.const 600)";
    let f = host
        .load(
            "kv-ok",
            &wat_guest_with_imports(&imports, "", SERVE, open_ok),
        )
        .unwrap();
    assert_eq!(
        f.handle(request(Method::Get, "/x", b""))
            .result
            .unwrap()
            .status,
        201
    );
}

/// An `http-error` string as large as the guest's memory, all line breaks and escapes, is quoted
/// cut to about a kilobyte with its control characters escaped.
#[test]
fn huge_guest_error_strings_are_clipped() {
    // unexpected-error (discriminant 4) with a 2 MiB message of "\n\x1b" at 65536.
    let f = load_wat(
        "(drop (memory.grow (i32.const 33)))
         (memory.fill (i32.const 65536) (i32.const 10) (i32.const 0x200000))
         (memory.fill (i32.const 65536) (i32.const 27) (i32.const 7))
         (i32.store8 (i32.const 600) (i32.const 1)) (i32.store8 (i32.const 604) (i32.const 4))
         (i32.store (i32.const 608) (i32.const 65536)) (i32.store (i32.const 612) (i32.const 0x200000))
         (i32.const 600)",
    );
    let err = invoke_err(&f);
    assert!(
        matches!(&err, InvokeError::Guest { error, .. } if error.status() == 500),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.len() <= sandbox::GUEST_TEXT_MAX + 256,
        "{} bytes",
        message.len()
    );
    assert!(message.ends_with(sandbox::CUT_MARK), "{message}");
    assert!(message.contains("\\u{1b}\\n"), "{message}");
    assert!(!message.contains(['\n', '\u{1b}']), "{message}");
}

/// A rejected route pattern of a megabyte is quoted cut in the load error (once rendered with
/// `{:?}`, several times its size).
#[test]
fn route_errors_quote_a_clipped_pattern() {
    let (host, _) = host();
    let init = "(drop (memory.grow (i32.const 17)))
        (memory.fill (i32.const 65536) (i32.const 1) (i32.const 0x100000))
        (call $serve (i32.const 48) (i32.const 4)
          (call $get (call $new) (i32.const 65536) (i32.const 0x100000) (i32.const 32) (i32.const 1))
          (i32.const 512))
        (i32.const 512)";
    let err = host
        .load("long-route", &wat_guest("", init, OK_200))
        .unwrap_err();
    let message = err.to_string();
    assert!(message.contains("does not start with '/'"), "{message}");
    assert!(message.len() <= sandbox::GUEST_TEXT_MAX + 256, "{message}");
    assert!(message.contains(sandbox::CUT_MARK), "{message}");
}

/// A host whose runs may use `max_memory` bytes, over `kv`.
fn host_over(kv: Arc<MemoryStore>, max_memory: usize) -> FunctionHost {
    let mut config = HostConfig::default();
    config.limits.max_memory = max_memory;
    FunctionHost::new(kv, config)
}

#[test]
fn a_full_memory_store_fails_the_write_not_the_server() {
    // Room for three values of 60 000 bytes (with their keys, bookkeeping and the store), not
    // four: the guest keeps writing new keys, sees the error and answers on its own.
    let kv = Arc::new(MemoryStore::with_limit(200_000));
    let host = host_over(kv.clone(), 4 << 20);
    let imports = format!(
        r#"(import "{KV}" "[static]store.open" (func $open (param i32 i32 i32)))
           (import "{KV}" "[method]store.set" (func $set (param i32 i32 i32 i32 i32 i32)))"#
    );
    // Sets keys "A", "B", ... to the 60 000 bytes at 1024 until a write fails (or 50 worked);
    // answers 507 if the last write failed with io-error, 500 for another error, 200 if none.
    let fill = "(local $i i32)
        (call $open (i32.const 48) (i32.const 4) (i32.const 800))
        (if (i32.ne (i32.load8_u (i32.const 800)) (i32.const 0)) (then unreachable))
        (loop $l
          (i32.store8 (i32.const 40) (i32.add (i32.const 65) (local.get $i)))
          (call $set (i32.load (i32.const 804)) (i32.const 40) (i32.const 1)
                     (i32.const 1024) (i32.const 60000) (i32.const 808))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br_if $l (i32.and (i32.eqz (i32.load8_u (i32.const 808)))
                             (i32.lt_u (local.get $i) (i32.const 50)))))
        (i32.store8 (i32.const 600) (i32.const 0))
        (i32.store16 (i32.const 604)
          (if (result i32) (i32.eqz (i32.load8_u (i32.const 808)))
            (then (i32.const 200))
            (else (if (result i32) (i32.eq (i32.load8_u (i32.const 812)) (i32.const 3))
              (then (i32.const 507)) (else (i32.const 500))))))
        (i32.store8 (i32.const 608) (i32.const 0)) (i32.store8 (i32.const 620) (i32.const 0))
        (i32.const 600)";
    let f = host
        .load("fill", &wat_guest_with_imports(&imports, "", SERVE, fill))
        .unwrap();
    for _ in 0..3 {
        // Overwriting "A" to "C" with values of the same size works; "D" never fits.
        let answered = f.handle(request(Method::Get, "/x", b"")).result.unwrap();
        assert_eq!(answered.status, 507);
        assert_eq!(
            sorted(kv.keys("addr", &Bounds::UNBOUNDED).unwrap()),
            ["A", "B", "C"]
        );
        assert!(kv.used() <= kv.limit(), "{} > {}", kv.used(), kv.limit());
    }
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[test]
fn listing_many_short_keys_is_refused_within_the_run_budget() {
    // 70 000 keys of 4 bytes: 280 KB of names, but each listed key costs the host its `String`
    // besides (over 4 MB in all), more than the run's 4 MiB. The listing is a memory fault,
    // refused before the host builds it.
    let kv = Arc::new(MemoryStore::new());
    let alphabet = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for i in 0..70_000usize {
        let name: String = (0..4)
            .map(|d| alphabet[(i / alphabet.len().pow(d)) % alphabet.len()] as char)
            .collect();
        kv.set("addr", &name, b"", &Bounds::UNBOUNDED).unwrap();
    }
    let host = host_over(kv.clone(), 4 << 20);
    let imports = format!(
        r#"(import "{KV}" "[static]store.open" (func $open (param i32 i32 i32)))
           (import "{KV}" "[method]store.keys" (func $keys (param i32 i32)))"#
    );
    let list = "(call $open (i32.const 48) (i32.const 4) (i32.const 800))
        (if (i32.ne (i32.load8_u (i32.const 800)) (i32.const 0)) (then unreachable))
        (call $keys (i32.load (i32.const 804)) (i32.const 808))
        (i32.store8 (i32.const 600) (i32.const 0))
        (i32.store16 (i32.const 604) (i32.const 200))
        (i32.store8 (i32.const 608) (i32.const 0)) (i32.store8 (i32.const 620) (i32.const 0))
        (i32.const 600)";
    let f = host
        .load("list", &wat_guest_with_imports(&imports, "", SERVE, list))
        .unwrap();
    let err = invoke_err(&f);
    assert!(
        matches!(
            fault_of(&err),
            Fault::Memory { spent: Spend::HostAllocation, needed, limit, .. }
                if *needed == 70_000 * keyvalue::listed_key_cost(4) && *limit == 4 << 20
        ),
        "{err}"
    );
    // With room for the listing, the same guest lists them all.
    let roomy = host_over(kv, 16 << 20);
    let f = roomy
        .load("list", &wat_guest_with_imports(&imports, "", SERVE, list))
        .unwrap();
    assert_eq!(
        f.handle(request(Method::Get, "/x", b""))
            .result
            .unwrap()
            .status,
        200
    );
}

/// on-server-init registering `count` GET routes of `pattern` (placed at 8192) for handler "h".
fn routes_guest(pattern: &str, count: u32) -> Vec<u8> {
    let init = format!(
        "(local $router i32) (local $i i32)
    (local.set $router (call $new))
    (loop $more
      (local.set $router (call $get (local.get $router)
        (i32.const 8192) (i32.const {len}) (i32.const 32) (i32.const 1)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $more (i32.lt_u (local.get $i) (i32.const {count}))))
    (call $serve (i32.const 48) (i32.const 4) (local.get $router) (i32.const 512))
    (i32.const 512)",
        len = pattern.len()
    );
    wat_guest(
        &format!(r#"(data (i32.const 8192) "{pattern}")"#),
        &init,
        OK_200,
    )
}

#[test]
fn route_patterns_beyond_the_caps_fail_the_load_naming_the_limit() {
    let (host, _) = host();
    // The measured attack: routes of 1,100 `/:a` segments, each matched against a path of
    // 1,101 segments on every request, outside the sandbox (96 ms per request for 1,000 routes).
    let err = host
        .load("long", &routes_guest(&"/:a".repeat(1_100), 1_000))
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("route pattern of 3300 bytes exceeds the limit of 1024"),
        "{err}"
    );
    let many = "/a".repeat(wasm_host::MAX_SEGMENTS + 1);
    let err = host
        .load("many", &routes_guest(&many, 1))
        .expect_err("refused");
    assert!(
        err.to_string()
            .contains("route pattern of 33 segments exceeds the limit of 32"),
        "{err}"
    );
}

#[test]
fn matching_the_most_routes_allowed_counts_toward_the_request() {
    let (host, _) = host();
    // As many routes as allowed, each with as many segments as allowed: a path that differs from
    // all of them only in its last segment is compared with every segment of every route.
    let pattern = format!("{}/x", "/:a".repeat(wasm_host::MAX_SEGMENTS - 1));
    let count = u32::try_from(wasm_host::MAX_ROUTES).unwrap();
    let f = host
        .load("maze", &routes_guest(&pattern, count))
        .expect("within the caps");
    assert_eq!(f.routes().len(), wasm_host::MAX_ROUTES);
    let near_miss = format!("{}/y", "/v".repeat(wasm_host::MAX_SEGMENTS - 1));
    let missed = f.handle(request(Method::Get, &near_miss, b""));
    assert!(
        matches!(missed.result, Err(InvokeError::NoRoute { .. })),
        "{:?}",
        missed.result
    );
    assert!(
        missed.report.elapsed > std::time::Duration::ZERO,
        "the time spent matching is the request's: {:?}",
        missed.report
    );
    let too_long = "/v".repeat(10_000);
    assert!(f.route(Method::Get, &too_long).is_none());
    let hit = format!("{}/x", "/v".repeat(wasm_host::MAX_SEGMENTS - 1));
    let matched = f.route(Method::Get, &hit).expect("matches");
    assert_eq!(matched.params.len(), wasm_host::MAX_SEGMENTS - 1);
    assert_eq!(call(&f, Method::Get, &hit, b"").0, 200);
}

/// Spiderlightning's router and server calls (`new-with-base`, `add-route`, `server.serve`,
/// `server.stop`) for WAT guests: `{init}` runs with `$base` (a router below `/api`), and the
/// strings "x" (900), "my-handler" (910), "/x" (16), "addr" (48). Results land at 800 and 820.
fn slight_wat_guest(init: &str) -> Vec<u8> {
    let imports = format!(
        r#"(import "{HTTP}" "[static]router.new-with-base" (func $new_with_base (param i32 i32 i32)))
  (import "{HTTP}" "[method]router.add-route"
    (func $add_route (param i32 i32 i32 i32 i32 i32 i32)))
  (import "{HTTP}" "[static]server.serve" (func $server_serve (param i32 i32 i32 i32)))
  (import "{HTTP}" "[method]server.stop" (func $server_stop (param i32 i32)))"#
    );
    let extra = r#"(data (i32.const 880) "/api/")
  (data (i32.const 900) "x")
  (data (i32.const 910) "my-handler")
  (func $base (result i32)
    (call $new_with_base (i32.const 880) (i32.const 5) (i32.const 800))
    (if (i32.load8_u (i32.const 800)) (then unreachable))
    (i32.load (i32.const 804)))"#;
    wat_guest_with_imports(&imports, extra, init, OK_200)
}

#[test]
fn slight_router_calls_return_errors_prefix_the_base_and_unify_handler_names() {
    let (host, _) = host();
    // add-route "x" (no leading '/') is an invalid-route error (result 1, variant 0), not a
    // trap; then GET /x under base /api for "my-handler" is served through server.serve.
    let init = "(local $router i32)
    (local.set $router (call $base))
    (call $add_route (local.get $router) (i32.const 0) (i32.const 900) (i32.const 1)
      (i32.const 910) (i32.const 10) (i32.const 820))
    (if (i32.ne (i32.load8_u (i32.const 820)) (i32.const 1)) (then unreachable))
    (if (i32.ne (i32.load8_u (i32.const 824)) (i32.const 0)) (then unreachable))
    (call $add_route (local.get $router) (i32.const 0) (i32.const 16) (i32.const 2)
      (i32.const 910) (i32.const 10) (i32.const 820))
    (if (i32.load8_u (i32.const 820)) (then unreachable))
    (call $server_serve (i32.const 48) (i32.const 4) (i32.load (i32.const 824)) (i32.const 512))
    (i32.const 512)";
    let f = host.load("slight-wat", &slight_wat_guest(init)).unwrap();
    let routes: Vec<(&str, &str)> = f
        .routes()
        .iter()
        .map(|r| (r.pattern.as_str(), r.handler.as_str()))
        .collect();
    assert_eq!(routes, [("/api/x", "my_handler")]);
    assert_eq!(call(&f, Method::Get, "/api/x", b"").0, 200);
    assert_eq!(call(&f, Method::Get, "/x", b"").0, 404);

    // The same bad route through the trapping `get` fails the load, naming the reason.
    let trap = "(drop (call $get (call $base) (i32.const 900) (i32.const 1) (i32.const 32)
      (i32.const 1))) (i32.const 512)";
    let err = host
        .load("slight-trap", &slight_wat_guest(trap))
        .unwrap_err();
    assert!(err.to_string().contains("does not start with '/'"), "{err}");

    // server.stop after serve: the function serves nothing, so it does not load.
    let stop = "(call $server_serve (i32.const 48) (i32.const 4) (call $base) (i32.const 512))
    (call $server_stop (i32.load (i32.const 516)) (i32.const 800))
    (i32.const 512)";
    let err = host
        .load("slight-stop", &slight_wat_guest(stop))
        .unwrap_err();
    assert!(matches!(err, LoadError::NotServed { .. }), "{err}");
}
