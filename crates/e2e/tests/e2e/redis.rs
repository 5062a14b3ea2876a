//! Redis as the key-value backend (`kv=redis://...` at boot): the demo guests work against a
//! real redis-server, data lands in Redis under `<store>:<key>`, a Redis outage turns key-value
//! routes into quick 503s while everything else keeps serving, and the server recovers on its
//! own when Redis comes back on the same port.

use std::time::{Duration, Instant};

use e2e::redis_server::{RawClient, RawRedis, RedisServer, Reply};
use e2e::{Instance, Mode};

use crate::{ADMIN_TOKEN, admin, call};

/// Longest a key-value route may take to give up while Redis is down.
const OUTAGE_ANSWER_LIMIT: Duration = Duration::from_secs(5);

/// How long the server may take to use Redis again after it restarted.
const RECOVERY_LIMIT: Duration = Duration::from_secs(20);

/// Keys written straight into Redis for the listing check.
const BULK_KEYS: usize = 10_000;

/// Boots `mode` with its key-value store in `redis` (reached at 10.0.2.2 from QEMU's user
/// network, at 127.0.0.1 natively) and a body limit that allows 1 MiB values.
fn start_with_redis(mode: Mode, redis: &RedisServer) -> Instance {
    start_with_redis_and(mode, redis, "")
}

/// Like [`start_with_redis`], with more `key=value` words.
pub fn start_with_redis_and(mode: Mode, redis: &RedisServer, more: &str) -> Instance {
    let host = match mode {
        Mode::Native => "127.0.0.1",
        Mode::Qemu => "10.0.2.2",
    };
    let append = format!(
        "log=info max-body=2m kv=redis://{host}:{} {more}",
        redis.port()
    );
    Instance::start(mode, &append, &[])
}

/// Bytes that are not text: every byte value, then a deterministic pseudo-random tail.
fn binary_value(len: usize) -> Vec<u8> {
    let mut state: u32 = 0x9e37_79b9;
    (0..len)
        .map(|i| {
            if i < 256 {
                return i as u8;
            }
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

/// PUT then GET through `/http-server-demo`, and the same bytes in Redis.
fn round_trip(port: u16, redis: &mut RawRedis, value: &[u8]) {
    let set = call(port, "PUT", "/http-server-demo/set", value);
    assert_eq!(set.status, 204, "set {} bytes: {}", value.len(), set.text());
    let got = call(port, "GET", "/http-server-demo/get", b"");
    assert_eq!(got.status, 200, "get {} bytes: {}", value.len(), got.text());
    assert!(
        got.body == value,
        "GET returned {} bytes, not the {} bytes set",
        got.body.len(),
        value.len()
    );
    let stored = redis
        .get("my-container:my-key")
        .expect("my-container:my-key exists in redis");
    assert!(
        stored == value,
        "redis holds {} bytes, not the {} bytes set",
        stored.len(),
        value.len()
    );
}

/// The demo key-value routes against a running Redis.
fn demo_routes_suite(port: u16, redis: &RedisServer) {
    let mut raw = redis.client();

    // Spiderlightning's http-server demo.
    assert_eq!(
        call(port, "GET", "/http-server-demo/hello", b"").text(),
        "hello"
    );
    let missing = call(port, "GET", "/http-server-demo/get", b"");
    assert_eq!(
        missing.status,
        404,
        "fresh redis has no key: {}",
        missing.text()
    );
    round_trip(port, &mut raw, b"value-1");
    // Written by someone else straight into Redis: the server reads Redis, not a cache.
    raw.set("my-container:my-key", b"written-by-redis-cli");
    assert_eq!(
        call(port, "GET", "/http-server-demo/get", b"").text(),
        "written-by-redis-cli"
    );

    // Binary and large values.
    round_trip(port, &mut raw, &binary_value(300));
    round_trip(port, &mut raw, &binary_value(1 << 20));
    round_trip(port, &mut raw, b"small-again");

    // keyvalue demo: two stores, keys, get, delete; it leaves both stores empty.
    crate::assert_keyvalue_demo(port);
    assert_eq!(
        raw.get("my-container2:key"),
        None,
        "deleted through the guest"
    );

    // Listing a store of 10,000 keys (SCAN in rounds) through the guest.
    for batch in 0..BULK_KEYS / 1000 {
        let keys: Vec<String> = (batch * 1000..(batch + 1) * 1000)
            .map(|i| format!("my-container2:bulk-{i:05}"))
            .collect();
        let mut args: Vec<&[u8]> = vec![b"MSET"];
        for key in &keys {
            args.extend([key.as_bytes(), b"x".as_slice()]);
        }
        assert_eq!(
            raw.command(&args).expect("MSET"),
            Reply::Simple("OK".into())
        );
    }
    let kv = call(port, "GET", "/keyvalue-demo/", b"");
    assert_eq!(kv.status, 200, "{}", kv.text());
    let report = kv.text();
    let b_keys = report
        .lines()
        .find(|l| l.starts_with("keyvalue2 keys: "))
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(
        b_keys.matches("\"bulk-").count(),
        BULK_KEYS,
        "every bulk key listed once"
    );
    assert!(b_keys.contains("\"bulk-00000\"") && b_keys.contains("\"bulk-09999\""));
    assert!(
        b_keys.contains("\"key\""),
        "the guest's own key is listed too"
    );

    // todo demo: JSON records under `todos:`.
    let created = call(
        port,
        "POST",
        "/todo-demo/todos",
        br#"{"title":"persist in redis"}"#,
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["id"].as_u64().expect("id");
    let record = raw
        .get(&format!("todos:todo:{id:020}"))
        .expect("todo record in redis");
    assert!(String::from_utf8_lossy(&record).contains("persist in redis"));
    let list = call(port, "GET", "/todo-demo/todos", b"");
    assert!(list.text().contains("persist in redis"), "{}", list.text());
    assert_eq!(
        call(port, "DELETE", &format!("/todo-demo/todos/{id}"), b"").status,
        204
    );
    assert_eq!(raw.get(&format!("todos:todo:{id:020}")), None);
    assert_eq!(
        call(port, "GET", &format!("/todo-demo/todos/{id}"), b"").status,
        404
    );
}

/// Calls `method path`, asserting it answers within [`OUTAGE_ANSWER_LIMIT`]; the response.
fn timed_call(port: u16, method: &str, path: &str, body: &[u8]) -> e2e::http::Response {
    let started = Instant::now();
    let response = call(port, method, path, body);
    let elapsed = started.elapsed();
    assert!(
        elapsed < OUTAGE_ANSWER_LIMIT,
        "{method} {path} took {elapsed:?} while redis is down (limit {OUTAGE_ANSWER_LIMIT:?})"
    );
    response
}

/// Redis goes away: key-value routes fail fast with 503, the rest serves; Redis comes back on
/// the same port: the same server uses it again.
fn outage_suite(port: u16, redis: &mut RedisServer) {
    assert_eq!(
        call(port, "PUT", "/http-server-demo/set", b"before-outage").status,
        204
    );
    redis.stop();

    let outage_started = Instant::now();
    for round in 0..3 {
        let get = timed_call(port, "GET", "/http-server-demo/get", b"");
        assert_eq!(get.status, 503, "round {round}: {}", get.text());
        assert_eq!(get.header("retry-after"), Some("1"));
        assert!(get.text().contains("unavailable"), "{}", get.text());
        let set = timed_call(port, "PUT", "/http-server-demo/set", b"during-outage");
        assert_eq!(set.status, 503, "round {round}: {}", set.text());
        // Guests that do not special-case connection errors still fail cleanly, as a 5xx.
        let kv = timed_call(port, "GET", "/keyvalue-demo/", b"");
        assert!(kv.status >= 500, "{} {}", kv.status, kv.text());
        let todos = timed_call(port, "GET", "/todo-demo/todos", b"");
        assert!(todos.status >= 500, "{} {}", todos.status, todos.text());
        // What does not need the store keeps working.
        assert_eq!(
            timed_call(port, "GET", "/http-server-demo/hello", b"").text(),
            "hello"
        );
        assert_eq!(timed_call(port, "GET", "/healthz", b"").status, 200);
        assert_eq!(timed_call(port, "GET", "/api/fib/5", b"").status, 200);
    }

    eprintln!(
        "redis outage: 3 rounds of 7 requests answered in {:?}",
        outage_started.elapsed()
    );
    redis.restart();
    let started = Instant::now();
    loop {
        // The restarted Redis is empty: 404 means the server reached it again.
        let get = call(port, "GET", "/http-server-demo/get", b"");
        if get.status == 404 {
            break;
        }
        assert_eq!(
            get.status,
            503,
            "only 503 while reconnecting: {}",
            get.text()
        );
        assert!(
            started.elapsed() < RECOVERY_LIMIT,
            "no recovery within {RECOVERY_LIMIT:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!(
        "redis restarted: first success after {:?}",
        started.elapsed()
    );
    let mut raw = redis.client();
    round_trip(port, &mut raw, b"after-restart");
    let kv = call(port, "GET", "/keyvalue-demo/", b"");
    assert_eq!(kv.status, 200, "{}", kv.text());
    assert_eq!(call(port, "GET", "/todo-demo/todos", b"").text(), "[]");
}

fn redis_suite(mode: Mode) {
    let mut redis = RedisServer::start();
    let inst = start_with_redis(mode, &redis);
    demo_routes_suite(inst.port, &redis);
    outage_suite(inst.port, &mut redis);
    // A second outage right after recovery behaves the same.
    outage_suite(inst.port, &mut redis);
    let output = inst.output();
    assert!(
        output.contains("kv=redis://"),
        "the boot summary names the backend:\n{output}"
    );
}

#[test]
fn native_redis_backend() {
    redis_suite(Mode::Native);
}

#[test]
fn qemu_redis_backend() {
    redis_suite(Mode::Qemu);
}

/// Booting while Redis is down works (connections are made on first use); the routes answer
/// 503 until Redis starts, then work without a restart.
fn redis_down_at_boot(mode: Mode) {
    let mut redis = RedisServer::start();
    redis.stop();
    let inst = start_with_redis(mode, &redis);
    assert_eq!(
        call(inst.port, "GET", "/http-server-demo/hello", b"").text(),
        "hello"
    );
    let get = timed_call(inst.port, "GET", "/http-server-demo/get", b"");
    assert_eq!(get.status, 503, "{}", get.text());
    redis.restart();
    let mut raw = redis.client();
    round_trip(inst.port, &mut raw, b"first-value");
}

#[test]
fn native_redis_down_at_boot() {
    redis_down_at_boot(Mode::Native);
}

#[test]
fn qemu_redis_down_at_boot() {
    redis_down_at_boot(Mode::Qemu);
}

/// Longest a key-value route may take while Redis hangs: the client's I/O timeout (5 s) plus
/// slack for TCG.
const HUNG_ANSWER_LIMIT: Duration = Duration::from_secs(10);

/// Redis hangs (SIGSTOP: connections are accepted, nothing answers): key-value requests give
/// up after the I/O timeout with 503 and meanwhile do not hold up other routes; once Redis
/// runs again, so does the server.
fn redis_hangs(mode: Mode) {
    let redis = RedisServer::start();
    let inst = start_with_redis_and(mode, &redis, "workers=4");
    let port = inst.port;
    assert_eq!(
        call(port, "PUT", "/http-server-demo/set", b"before-hang").status,
        204
    );
    redis.freeze();
    let stuck: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let get = call(port, "GET", "/http-server-demo/get", b"");
                (get.status, get.text(), started.elapsed())
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..5 {
        let started = Instant::now();
        assert_eq!(
            call(port, "GET", "/http-server-demo/hello", b"").text(),
            "hello"
        );
        assert_eq!(call(port, "GET", "/healthz", b"").status, 200);
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(2),
            "other routes waited {elapsed:?} for the hung store"
        );
    }
    for handle in stuck {
        let (status, text, elapsed) = handle.join().expect("request thread");
        eprintln!("redis hung: GET answered {status} after {elapsed:?}");
        assert_eq!(status, 503, "{text}");
        assert!(
            text.contains("did not answer"),
            "a timeout, not another failure: {text}"
        );
        assert!(
            elapsed < HUNG_ANSWER_LIMIT,
            "took {elapsed:?} (limit {HUNG_ANSWER_LIMIT:?})"
        );
    }
    redis.thaw();
    let started = Instant::now();
    loop {
        let get = call(port, "GET", "/http-server-demo/get", b"");
        if get.status == 200 {
            assert_eq!(get.text(), "before-hang");
            break;
        }
        assert!(
            started.elapsed() < RECOVERY_LIMIT,
            "no recovery: {} {}",
            get.status,
            get.text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn native_redis_hangs() {
    redis_hangs(Mode::Native);
}

#[test]
fn qemu_redis_hangs() {
    redis_hangs(Mode::Qemu);
}

/// A nanoprocess answering `value`.
fn answer_wat(value: u32) -> String {
    format!(r#"(module (func (export "_start") (result i32) i32.const {value}))"#)
}

/// Functions deployed through the admin API are kept in Redis (store `_functions`): a new
/// server on the same Redis serves them, with their limits, and not the deleted ones; an admin
/// replacement of a built-in function wins over the built-in one.
fn functions_survive_reboot(mode: Mode) {
    let redis = RedisServer::start();
    let token = format!("admin-token={ADMIN_TOKEN}");
    let first = start_with_redis_and(mode, &redis, &token);
    let port = first.port;
    let kept = admin(
        port,
        "PUT",
        "/_admin/functions/kept-answer?fuel=123456",
        answer_wat(7).as_bytes(),
    );
    assert_eq!(kept.status, 201, "{}", kept.text());
    assert_eq!(
        admin(
            port,
            "PUT",
            "/_admin/functions/deleted-answer",
            answer_wat(8).as_bytes()
        )
        .status,
        201
    );
    assert_eq!(
        admin(port, "DELETE", "/_admin/functions/deleted-answer", b"").status,
        204
    );
    assert_eq!(
        call(port, "GET", "/exec/answer", b"").text(),
        "42",
        "the built-in answer"
    );
    assert_eq!(
        admin(
            port,
            "PUT",
            "/_admin/functions/answer",
            answer_wat(9).as_bytes()
        )
        .status,
        200
    );
    let mut raw = redis.client();
    let stored = raw
        .get("_functions:kept-answer")
        .expect("kept-answer stored in redis");
    assert!(
        stored.starts_with(b"uniwasm-function v1\n"),
        "{}",
        String::from_utf8_lossy(&stored)
    );
    assert_eq!(raw.get("_functions:deleted-answer"), None);
    first.stop();

    let second = start_with_redis_and(mode, &redis, &token);
    let port = second.port;
    assert_eq!(call(port, "GET", "/exec/kept-answer", b"").text(), "7");
    let info = admin(port, "GET", "/_admin/functions/kept-answer", b"").json();
    assert_eq!(info["limits"]["fuel"], 123456, "{info}");
    assert_eq!(call(port, "GET", "/exec/deleted-answer", b"").status, 404);
    assert_eq!(
        call(port, "GET", "/exec/answer", b"").text(),
        "9",
        "the admin's replacement"
    );
    assert_eq!(
        call(port, "GET", "/http-server-demo/hello", b"").text(),
        "hello",
        "built-ins too"
    );
    let output = second.output();
    assert!(output.contains("restored kept-answer"), "{output}");
}

#[test]
fn native_functions_survive_reboot() {
    functions_survive_reboot(Mode::Native);
}

#[test]
fn qemu_functions_survive_reboot() {
    functions_survive_reboot(Mode::Qemu);
}
