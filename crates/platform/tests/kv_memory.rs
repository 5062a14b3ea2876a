//! The in-memory key-value store is bounded: guests that keep writing fill it up to its limit,
//! then their writes fail (the guest answers its own error) while the server and every other
//! function go on; deleting makes room again. Uses `todo-demo` from `cargo xtask guests`.

use std::path::PathBuf;
use std::sync::Arc;

use http_front::{Handler, Response};
use keyvalue::{KeyValue, MemoryStore};
use platform::app::{App, AppOptions};

mod support;

const TOKEN: &str = "kv-memory-test-token";

const ANSWER_7: &[u8] = br#"(module (func (export "_start") (result i32) i32.const 7))"#;

fn guest(name: &str) -> Vec<u8> {
    let dir = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("guests"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/guests"),
    };
    let path = dir.join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}. Build the guests first: `cargo xtask guests`",
            path.display()
        )
    })
}

fn send(app: &App, method: &str, path: &str, body: &[u8]) -> Response {
    app.handle(&support::request(
        method,
        path,
        body.to_vec(),
        "kv-memory.test",
        Some(TOKEN),
    ))
}

fn text(response: &Response) -> String {
    String::from_utf8_lossy(&response.body).into_owned()
}

#[test]
fn a_guest_filling_the_memory_store_fails_only_its_own_writes() {
    let limit = 640 << 10;
    let kv = Arc::new(MemoryStore::with_limit(limit));
    let app = App::new(AppOptions {
        kv: kv.clone(),
        ..support::options(TOKEN)
    });
    app.deploy("todo-demo", &guest("todo-demo"))
        .expect("todo-demo deploys");
    app.deploy("answer", ANSWER_7).expect("answer deploys");

    // The attack as measured in a 64 MiB image, scaled down: todos of 50 KB (300 KB there),
    // each kept forever.
    let body = format!(r#"{{"title":"{}"}}"#, "x".repeat(50_000));
    let mut created = 0;
    let refused = loop {
        let response = send(&app, "POST", "/todo-demo/todos", body.as_bytes());
        if response.status != 201 {
            break response;
        }
        created += 1;
        assert!(created < 100, "the store took {created} todos of 50 KB");
    };
    assert!(
        created >= 10,
        "only {created} todos of 50 KB fit in 640 KiB"
    );
    // todo-demo answers a failed write with an error of its own (500), naming the cause.
    assert_eq!(refused.status, 500, "{}", text(&refused));
    assert!(
        text(&refused).contains("key-value store full"),
        "{}",
        text(&refused)
    );
    assert!(kv.used() <= limit, "{} > {limit}", kv.used());

    // Everything else goes on: health, other functions, reading what is stored.
    assert_eq!(send(&app, "GET", "/healthz", b"").status, 200);
    let answer = send(&app, "GET", "/exec/answer", b"");
    assert_eq!((answer.status, text(&answer).as_str()), (200, "7"));
    assert_eq!(send(&app, "GET", "/todo-demo/todos/1", b"").status, 200);
    let metrics = text(&send(&app, "GET", "/metrics", b""));
    assert!(
        metrics.contains(&format!("kv_memory_used_bytes {}\n", kv.used())),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("kv_memory_limit_bytes {limit}\n")),
        "{metrics}"
    );

    // An admin deploy is kept in the same store: refused while it is full, 507.
    let late_source = guest("todo-demo");
    assert!(late_source.len() > 60_000);
    let late = send(&app, "PUT", "/_admin/functions/late", &late_source);
    assert_eq!(late.status, 507, "{}", text(&late));
    assert_eq!(send(&app, "GET", "/late/todos", b"").status, 404);

    // Deleting makes room again.
    assert_eq!(send(&app, "DELETE", "/todo-demo/todos/1", b"").status, 204);
    assert_eq!(send(&app, "DELETE", "/todo-demo/todos/2", b"").status, 204);
    assert_eq!(send(&app, "DELETE", "/todo-demo/todos/3", b"").status, 204);
    let late = send(&app, "PUT", "/_admin/functions/late", &late_source);
    assert_eq!(late.status, 201, "{}", text(&late));
    let again = send(&app, "POST", "/todo-demo/todos", body.as_bytes());
    assert_eq!(again.status, 201, "{}", text(&again));
    assert!(kv.used() <= limit);
    assert!(
        kv.keys("todos", &keyvalue::Bounds::UNBOUNDED)
            .expect("keys")
            .len()
            <= created + 1
    );
}
