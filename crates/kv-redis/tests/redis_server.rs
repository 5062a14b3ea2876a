//! The Redis backend against a real redis-server started per test on 127.0.0.1.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use keyvalue::{Bounds, KeyValue, KvError, listed_key_cost, listing_cost};
use kv_redis::{RedisConfig, RedisError, RedisStore, TimeoutEnforcement, TimeoutStrategy};
use redis_test_server::RedisServer;

/// A store with short timeouts so failure tests finish quickly.
fn store_for(url: &str) -> RedisStore {
    let mut config = RedisConfig::from_url(url).expect("valid url");
    config.options.connect_timeout = Duration::from_millis(500);
    config.options.io_timeout = Duration::from_millis(500);
    config.pool_size = 4;
    RedisStore::with_config(config)
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys
}

#[test]
fn set_get_delete_and_keys() {
    let server = RedisServer::start();
    let kv = store_for(&server.url());
    kv.open("fruits", &Bounds::UNBOUNDED).expect("open");
    assert_eq!(
        kv.get("fruits", "apple", &Bounds::UNBOUNDED),
        Err(KvError::KeyNotFound("apple".into()))
    );
    assert!(
        kv.keys("fruits", &Bounds::UNBOUNDED)
            .expect("keys of empty store")
            .is_empty()
    );
    kv.set("fruits", "apple", b"red", &Bounds::UNBOUNDED)
        .expect("set");
    kv.set("fruits", "banana", b"yellow", &Bounds::UNBOUNDED)
        .expect("set");
    kv.set("fruits", "apple", b"green", &Bounds::UNBOUNDED)
        .expect("overwrite");
    assert_eq!(
        kv.get("fruits", "apple", &Bounds::UNBOUNDED).expect("get"),
        b"green".to_vec()
    );
    assert_eq!(
        sorted(kv.keys("fruits", &Bounds::UNBOUNDED).expect("keys")),
        vec!["apple", "banana"]
    );
    kv.delete("fruits", "apple", &Bounds::UNBOUNDED)
        .expect("delete");
    kv.delete("fruits", "apple", &Bounds::UNBOUNDED)
        .expect("deleting a missing key is fine");
    assert_eq!(
        kv.get("fruits", "apple", &Bounds::UNBOUNDED),
        Err(KvError::KeyNotFound("apple".into()))
    );
    assert_eq!(
        kv.keys("fruits", &Bounds::UNBOUNDED).expect("keys"),
        vec!["banana"]
    );
    assert!(matches!(
        kv.set("", "k", b"v", &Bounds::UNBOUNDED),
        Err(KvError::InvalidKey(_))
    ));
    assert!(matches!(
        kv.get("s", &"k".repeat(2000), &Bounds::UNBOUNDED),
        Err(KvError::InvalidKey(_))
    ));
}

#[test]
fn values_are_binary_safe() {
    let server = RedisServer::start();
    let kv = store_for(&server.url());
    let every_byte: Vec<u8> = (0..=255u8).collect();
    kv.set("bin", "bytes", &every_byte, &Bounds::UNBOUNDED)
        .expect("set");
    assert_eq!(
        kv.get("bin", "bytes", &Bounds::UNBOUNDED).expect("get"),
        every_byte
    );
    kv.set("bin", "empty", b"", &Bounds::UNBOUNDED)
        .expect("set empty");
    assert_eq!(
        kv.get("bin", "empty", &Bounds::UNBOUNDED)
            .expect("get empty"),
        Vec::<u8>::new()
    );
    let big: Vec<u8> = (0..1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    kv.set("bin", "big", &big, &Bounds::UNBOUNDED)
        .expect("set 1 MiB");
    assert_eq!(
        kv.get("bin", "big", &Bounds::UNBOUNDED).expect("get 1 MiB"),
        big
    );
    // Keys may hold any Unicode, CRLF and the separator.
    for key in ["ключ", "a:b:c", "line\r\nbreak", "*?[]"] {
        kv.set("bin", key, key.as_bytes(), &Bounds::UNBOUNDED)
            .expect("set odd key");
        assert_eq!(
            kv.get("bin", key, &Bounds::UNBOUNDED).expect("get odd key"),
            key.as_bytes()
        );
    }
    let keys: HashSet<String> = kv
        .keys("bin", &Bounds::UNBOUNDED)
        .expect("keys")
        .into_iter()
        .collect();
    let expected: HashSet<String> = [
        "bytes",
        "empty",
        "big",
        "ключ",
        "a:b:c",
        "line\r\nbreak",
        "*?[]",
    ]
    .map(String::from)
    .into();
    assert_eq!(keys, expected);
}

#[test]
fn polling_timeouts_work_like_socket_timeouts() {
    let server = RedisServer::start();
    let mut config = RedisConfig::from_url(&server.url()).expect("valid url");
    config.options.timeouts = TimeoutStrategy::Polling;
    let kv = RedisStore::with_config(config);
    let enforcement = kv
        .run(&Bounds::UNBOUNDED, |connection| {
            Ok(connection.timeout_enforcement())
        })
        .expect("connect");
    assert_eq!(enforcement, TimeoutEnforcement::Polling);
    // Large values make the non-blocking socket report "not ready" on both write and read.
    let big: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    kv.set("poll", "big", &big, &Bounds::UNBOUNDED)
        .expect("set 8 MiB");
    assert_eq!(
        kv.get("poll", "big", &Bounds::UNBOUNDED)
            .expect("get 8 MiB"),
        big
    );
    for i in 0..200 {
        kv.set("poll", &i.to_string(), b"v", &Bounds::UNBOUNDED)
            .expect("set");
    }
    assert_eq!(
        kv.keys("poll", &Bounds::UNBOUNDED).expect("keys").len(),
        201
    );

    let socket = store_for(&server.url());
    let enforcement = socket
        .run(&Bounds::UNBOUNDED, |connection| {
            Ok(connection.timeout_enforcement())
        })
        .expect("connect");
    assert_eq!(
        enforcement,
        TimeoutEnforcement::Socket,
        "Linux supports socket timeouts"
    );
}

#[test]
fn ten_thousand_keys_are_listed_with_scan() {
    let server = RedisServer::start();
    let kv = store_for(&server.url());
    let expected: HashSet<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
    for key in &expected {
        kv.set("many", key, key.as_bytes(), &Bounds::UNBOUNDED)
            .expect("set");
    }
    // Neighbours whose names the pattern must not catch.
    kv.set("many2", "x", b"", &Bounds::UNBOUNDED).expect("set");
    kv.set("man", "y:z", b"", &Bounds::UNBOUNDED).expect("set");
    let started = Instant::now();
    let listed = kv.keys("many", &Bounds::UNBOUNDED).expect("keys");
    let elapsed = started.elapsed();
    assert_eq!(listed.len(), 10_000, "no duplicates, nothing missing");
    assert_eq!(listed.into_iter().collect::<HashSet<_>>(), expected);
    assert!(elapsed < Duration::from_secs(5), "listing took {elapsed:?}");
}

#[test]
fn stores_are_separate() {
    let server = RedisServer::start();
    let kv = store_for(&server.url());
    kv.set("a", "b:c", b"1", &Bounds::UNBOUNDED).expect("set");
    kv.set("a:b", "c", b"2", &Bounds::UNBOUNDED).expect("set");
    kv.set("a*", "k", b"3", &Bounds::UNBOUNDED).expect("set");
    kv.set("ab", "k", b"4", &Bounds::UNBOUNDED).expect("set");
    kv.set("[a]", "k", b"5", &Bounds::UNBOUNDED).expect("set");
    kv.set("a%3Ab", "c", b"6", &Bounds::UNBOUNDED).expect("set");
    assert_eq!(kv.get("a", "b:c", &Bounds::UNBOUNDED).expect("get"), b"1");
    assert_eq!(kv.get("a:b", "c", &Bounds::UNBOUNDED).expect("get"), b"2");
    assert_eq!(kv.get("a%3Ab", "c", &Bounds::UNBOUNDED).expect("get"), b"6");
    assert_eq!(kv.keys("a", &Bounds::UNBOUNDED).expect("keys"), vec!["b:c"]);
    assert_eq!(kv.keys("a:b", &Bounds::UNBOUNDED).expect("keys"), vec!["c"]);
    assert_eq!(kv.keys("a*", &Bounds::UNBOUNDED).expect("keys"), vec!["k"]);
    assert_eq!(kv.keys("[a]", &Bounds::UNBOUNDED).expect("keys"), vec!["k"]);
    assert_eq!(
        kv.keys("a%3Ab", &Bounds::UNBOUNDED).expect("keys"),
        vec!["c"]
    );
    kv.delete("a*", "k", &Bounds::UNBOUNDED).expect("delete");
    assert_eq!(
        kv.get("ab", "k", &Bounds::UNBOUNDED)
            .expect("other store untouched"),
        b"4"
    );
    assert!(kv.keys("a*", &Bounds::UNBOUNDED).expect("keys").is_empty());
    assert_eq!(
        kv.get("b", "c", &Bounds::UNBOUNDED),
        Err(KvError::KeyNotFound("c".into()))
    );
}

#[test]
fn databases_are_separate() {
    let server = RedisServer::start();
    let db0 = store_for(&server.url());
    let db2 = store_for(&format!("{}/2", server.url()));
    db2.set("s", "k", b"in db 2", &Bounds::UNBOUNDED)
        .expect("set");
    assert_eq!(
        db2.get("s", "k", &Bounds::UNBOUNDED).expect("get"),
        b"in db 2"
    );
    assert_eq!(
        db0.get("s", "k", &Bounds::UNBOUNDED),
        Err(KvError::KeyNotFound("k".into()))
    );
    let missing_db = store_for(&format!("{}/99", server.url()));
    assert!(
        matches!(missing_db.get("s", "k", &Bounds::UNBOUNDED), Err(KvError::Io(m)) if m.contains("DB index"))
    );
}

#[test]
fn outage_fails_fast_and_recovers_on_restart() {
    let mut server = RedisServer::start();
    let kv = Arc::new(store_for(&server.url()));
    // Fill the pool with several idle connections, all of which go stale below.
    let workers: Vec<_> = (0..4)
        .map(|i| {
            let kv = Arc::clone(&kv);
            thread::spawn(move || {
                for j in 0..50 {
                    kv.set("s", &format!("{i}-{j}"), b"v", &Bounds::UNBOUNDED)
                        .expect("set");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    assert!(kv.open_connections() >= 1);

    server.stop();
    for _ in 0..3 {
        let started = Instant::now();
        assert!(matches!(
            kv.get("s", "0-0", &Bounds::UNBOUNDED),
            Err(KvError::Connection(_))
        ));
        assert!(matches!(
            kv.set("s", "k", b"v", &Bounds::UNBOUNDED),
            Err(KvError::Connection(_))
        ));
        assert!(matches!(
            kv.keys("s", &Bounds::UNBOUNDED),
            Err(KvError::Connection(_))
        ));
        assert!(matches!(
            kv.delete("s", "k", &Bounds::UNBOUNDED),
            Err(KvError::Connection(_))
        ));
        assert!(matches!(
            kv.open("s", &Bounds::UNBOUNDED),
            Err(KvError::Connection(_))
        ));
        let elapsed = started.elapsed();
        assert!(
            elapsed < Duration::from_secs(1),
            "five failing calls took {elapsed:?}"
        );
    }
    assert_eq!(kv.open_connections(), 0, "broken connections are dropped");

    server.restart();
    // The very first call after the restart succeeds: nothing stale is handed out.
    kv.set("s", "after", b"restart", &Bounds::UNBOUNDED)
        .expect("set after restart");
    assert_eq!(
        kv.get("s", "after", &Bounds::UNBOUNDED)
            .expect("get after restart"),
        b"restart"
    );
    // Nothing was persisted, so the old keys are gone.
    assert_eq!(
        kv.keys("s", &Bounds::UNBOUNDED).expect("keys"),
        vec!["after"]
    );
}

#[test]
fn restart_while_idle_is_invisible_to_callers() {
    let mut server = RedisServer::start();
    let kv = store_for(&server.url());
    kv.set("s", "k", b"v", &Bounds::UNBOUNDED).expect("set");
    server.restart();
    assert_eq!(
        kv.get("s", "k", &Bounds::UNBOUNDED),
        Err(KvError::KeyNotFound("k".into()))
    );
    kv.set("s", "k", b"w", &Bounds::UNBOUNDED).expect("set");
}

#[test]
fn hung_server_times_out_then_recovers() {
    let server = RedisServer::start();
    let pid = server.pid().expect("running").to_string();
    let signal = |name: &str| {
        let status = Command::new("kill")
            .args([name, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {name} failed");
    };
    for strategy in [TimeoutStrategy::Socket, TimeoutStrategy::Polling] {
        let mut kv = store_for(&server.url());
        let mut config = kv.config().clone();
        config.options.timeouts = strategy;
        kv = RedisStore::with_config(config);
        kv.set("s", "k", b"v", &Bounds::UNBOUNDED).expect("set");
        signal("-STOP");
        let started = Instant::now();
        let result = kv.get("s", "k", &Bounds::UNBOUNDED);
        let elapsed = started.elapsed();
        signal("-CONT");
        assert!(
            matches!(result, Err(KvError::BackendTimeout(ref m)) if m.contains("did not answer")),
            "{strategy:?}: {result:?}"
        );
        assert!(
            elapsed < Duration::from_secs(2),
            "{strategy:?}: took {elapsed:?}"
        );
        assert_eq!(
            kv.get("s", "k", &Bounds::UNBOUNDED)
                .expect("get after resume"),
            b"v"
        );
    }
}

#[test]
fn password_authentication() {
    let server = RedisServer::start_with(&["--requirepass", "s3cret:@/"]);
    let port = server.port();
    let good = store_for(&format!("redis://:s3cret%3A%40%2F@127.0.0.1:{port}"));
    good.set("s", "k", b"v", &Bounds::UNBOUNDED)
        .expect("set with password");
    assert_eq!(good.get("s", "k", &Bounds::UNBOUNDED).expect("get"), b"v");

    let wrong = store_for(&format!("redis://:nope@127.0.0.1:{port}"));
    let result = wrong.get("s", "k", &Bounds::UNBOUNDED);
    assert!(
        matches!(result, Err(KvError::Authentication(ref m)) if m.contains("authentication")),
        "{result:?}"
    );
    let missing = store_for(&format!("redis://127.0.0.1:{port}"));
    let result = missing.get("s", "k", &Bounds::UNBOUNDED);
    assert!(
        matches!(result, Err(KvError::Authentication(ref m)) if m.contains("NOAUTH")),
        "{result:?}"
    );
    assert!(matches!(
        missing.open("s", &Bounds::UNBOUNDED),
        Err(KvError::Authentication(_))
    ));
}

#[test]
fn acl_user_authentication() {
    let server =
        RedisServer::start_with(&["--user", "alice", "on", ">wonderland", "~*", "&*", "+@all"]);
    let port = server.port();
    let alice = store_for(&format!("redis://alice:wonderland@127.0.0.1:{port}"));
    alice
        .set("s", "k", b"v", &Bounds::UNBOUNDED)
        .expect("set as alice");
    let mallory = store_for(&format!("redis://alice:guess@127.0.0.1:{port}"));
    assert!(
        matches!(mallory.get("s", "k", &Bounds::UNBOUNDED), Err(KvError::Authentication(m)) if m.contains("WRONGPASS"))
    );
}

#[test]
fn bad_urls_are_rejected() {
    for url in [
        "",
        "localhost:6379",
        "http://127.0.0.1:6379",
        "rediss://127.0.0.1",
        "redis://h:99999",
        "redis://h/x",
    ] {
        assert!(
            matches!(RedisStore::new(url), Err(RedisError::Url(_))),
            "accepted {url:?}"
        );
    }
    assert!(
        RedisStore::new("redis://127.0.0.1:6379/0").is_ok(),
        "construction does not connect"
    );
}

#[test]
fn concurrent_callers_share_a_bounded_pool() {
    let server = RedisServer::start();
    let kv = Arc::new(store_for(&server.url()));
    let workers: Vec<_> = (0..8)
        .map(|worker| {
            let kv = Arc::clone(&kv);
            thread::spawn(move || {
                for i in 0..300 {
                    let key = format!("{worker}-{i}");
                    kv.set("shared", &key, key.as_bytes(), &Bounds::UNBOUNDED)
                        .expect("set");
                    assert_eq!(
                        kv.get("shared", &key, &Bounds::UNBOUNDED).expect("get"),
                        key.as_bytes()
                    );
                    assert!(kv.open_connections() <= 4);
                }
            })
        })
        .collect();
    for worker in workers {
        worker.join().expect("worker");
    }
    assert_eq!(
        kv.keys("shared", &Bounds::UNBOUNDED).expect("keys").len(),
        8 * 300
    );
    assert!(kv.open_connections() <= 4);
}

/// A store with the default 5 s I/O timeout and pool wait, so only the caller's deadline can
/// make a call against a frozen Redis return early.
fn patient_store(url: &str, strategy: TimeoutStrategy) -> RedisStore {
    let mut config = RedisConfig::from_url(url).expect("valid url");
    config.options.timeouts = strategy;
    assert_eq!(config.options.io_timeout, Duration::from_secs(5));
    assert_eq!(config.pool_wait, Duration::from_secs(5));
    RedisStore::with_config(config)
}

/// 200 ms from now, any reply size.
fn deadline_200ms() -> Bounds {
    Bounds::within(Duration::from_millis(200), usize::MAX)
}

/// Runs `call`, asserts it failed with `KvError::Timeout` well before the 5 s I/O timeout (a
/// generous bound: this checks behaviour, not speed) and not before the deadline.
fn assert_times_out<T: std::fmt::Debug>(what: &str, call: impl FnOnce() -> Result<T, KvError>) {
    let started = Instant::now();
    let result = call();
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(KvError::Timeout(ref m)) if m.contains("deadline")),
        "{what}: {result:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(190) && elapsed < Duration::from_millis(1500),
        "{what}: took {elapsed:?}"
    );
}

#[test]
fn frozen_redis_fails_at_the_callers_deadline() {
    let server = RedisServer::start();
    for strategy in [TimeoutStrategy::Socket, TimeoutStrategy::Polling] {
        let kv = patient_store(&server.url(), strategy);
        kv.set("s", "k", b"v", &Bounds::UNBOUNDED).expect("set");
        assert_eq!(kv.open_connections(), 1);
        server.freeze();
        // On the pooled connection: every operation gives up at its deadline.
        assert_times_out("get", || kv.get("s", "k", &deadline_200ms()));
        assert_times_out("set", || kv.set("s", "k", b"w", &deadline_200ms()));
        assert_times_out("keys", || kv.keys("s", &deadline_200ms()));
        assert_times_out("delete", || kv.delete("s", "k", &deadline_200ms()));
        assert_times_out("open", || kv.open("s", &deadline_200ms()));
        // Timed-out connections are out of step and were dropped.
        assert_eq!(kv.open_connections(), 0, "{strategy:?}");
        let result = kv.get("s", "k", &deadline_200ms());
        let Err(KvError::Timeout(message)) = result else {
            panic!("{strategy:?}: {result:?}");
        };
        assert!(
            message.contains("get") && message.contains(" ms"),
            "names the operation and how long it waited: {message}"
        );
        // A deadline already passed fails at once, without touching the pool.
        let started = Instant::now();
        let past = Bounds::new(Some(Instant::now()), usize::MAX);
        assert!(matches!(kv.get("s", "k", &past), Err(KvError::Timeout(_))));
        assert!(started.elapsed() < Duration::from_millis(100));
        server.thaw();
        // Redis may still run the commands it received while frozen (the delete included).
        kv.set("s", "k", b"x", &deadline_200ms())
            .expect("set after thaw");
        assert_eq!(
            kv.get("s", "k", &deadline_200ms()).expect("get after thaw"),
            b"x"
        );
    }
}

#[test]
fn frozen_redis_fails_at_the_deadline_while_connecting() {
    // SELECT (database 2) and AUTH are sent while a new connection is opened.
    let server = RedisServer::start_with(&["--requirepass", "pw"]);
    let url = format!("redis://:pw@127.0.0.1:{}/2", server.port());
    for strategy in [TimeoutStrategy::Socket, TimeoutStrategy::Polling] {
        let kv = patient_store(&url, strategy);
        server.freeze();
        // The kernel still completes the TCP handshake; AUTH then gets no answer.
        assert_times_out("get on a new connection", || {
            kv.get("s", "k", &deadline_200ms())
        });
        assert_eq!(kv.open_connections(), 0);
        server.thaw();
        kv.set("s", "k", b"v", &deadline_200ms())
            .expect("set after thaw");
    }
}

#[test]
fn pool_wait_ends_at_the_callers_deadline() {
    let server = RedisServer::start();
    let mut config = RedisConfig::from_url(&server.url()).expect("valid url");
    config.pool_size = 1;
    let kv = Arc::new(RedisStore::with_config(config));
    kv.set("s", "k", b"v", &Bounds::UNBOUNDED).expect("set");
    server.freeze();
    // One caller holds the only connection, waiting for the frozen server.
    let holder = {
        let kv = Arc::clone(&kv);
        thread::spawn(move || {
            let bounds = Bounds::within(Duration::from_millis(1500), usize::MAX);
            kv.get("s", "k", &bounds)
        })
    };
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let result = kv.get("s", "k", &deadline_200ms());
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(KvError::Timeout(ref m)) if m.contains("free connection")),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_millis(1000), "took {elapsed:?}");
    assert!(matches!(
        holder.join().expect("holder"),
        Err(KvError::Timeout(_))
    ));
    server.thaw();
}

#[test]
fn retry_after_a_restart_stays_within_the_deadline() {
    let mut server = RedisServer::start();
    let kv = patient_store(&server.url(), TimeoutStrategy::Socket);
    kv.set("s", "k", b"v", &Bounds::UNBOUNDED).expect("set");
    // The pooled connection goes stale; the retry connects to a server that hangs.
    server.restart();
    server.freeze();
    assert_times_out("get with retry", || kv.get("s", "k", &deadline_200ms()));
    server.thaw();
    assert_eq!(
        kv.get("s", "k", &deadline_200ms()),
        Err(KvError::KeyNotFound("k".into()))
    );
}

#[test]
fn redis_slower_than_io_timeout_is_a_backend_timeout() {
    let server = RedisServer::start();
    let kv = store_for(&server.url()); // io_timeout 500 ms
    kv.set("s", "k", b"v", &Bounds::UNBOUNDED).expect("set");
    server.freeze();
    let bounds = Bounds::within(Duration::from_secs(10), usize::MAX);
    let started = Instant::now();
    let result = kv.get("s", "k", &bounds);
    assert!(
        matches!(result, Err(KvError::BackendTimeout(ref m)) if m.contains("did not answer")),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    server.thaw();
}

#[test]
fn oversized_value_is_refused_and_the_store_recovers() {
    let server = RedisServer::start();
    for strategy in [TimeoutStrategy::Socket, TimeoutStrategy::Polling] {
        let kv = patient_store(&server.url(), strategy);
        let big = vec![b'x'; 1024 * 1024];
        kv.set("s", "big", &big, &Bounds::UNBOUNDED)
            .expect("set 1 MiB");
        kv.set("s", "small", b"tiny", &Bounds::UNBOUNDED)
            .expect("set");
        let limited = Bounds::new(None, 64 * 1024);
        assert_eq!(
            kv.get("s", "big", &limited),
            Err(KvError::TooLarge {
                limit: 64 * 1024,
                size: Some(1024 * 1024)
            }),
            "{strategy:?}"
        );
        assert_eq!(
            kv.open_connections(),
            0,
            "the refused reply's connection is dropped"
        );
        // The next call (on a new connection) works, with the same bounds.
        assert_eq!(kv.get("s", "small", &limited).expect("get"), b"tiny");
        assert_eq!(
            kv.get("s", "big", &Bounds::new(None, 1024 * 1024))
                .expect("exactly at the limit"),
            big
        );
        let error = kv.get("s", "big", &Bounds::new(None, 1000)).unwrap_err();
        assert!(error.to_string().contains("1000 bytes"), "{error}");
    }
}

#[test]
fn listing_more_than_the_callers_budget_is_refused() {
    let server = RedisServer::start();
    let mut config = RedisConfig::from_url(&server.url()).expect("valid url");
    // Several SCAN rounds.
    config.scan_count = 100;
    let kv = RedisStore::with_config(config);
    for i in 0..2000 {
        kv.set("many", &format!("key-{i:04}"), b"", &Bounds::UNBOUNDED)
            .expect("set");
    }
    let too_large = |limit| Err(KvError::TooLarge { limit, size: None });
    // The attack: 2000 names of 8 bytes are 16 000 bytes, but each costs the host its `String`
    // and more while the walk collects it. The names alone fitting is not enough.
    assert_eq!(
        kv.keys("many", &Bounds::new(None, 16_000)),
        too_large(16_000)
    );
    // Nor is the cost of the finished listing: the walk holds more while it collects.
    let listing = 2000 * listed_key_cost(8);
    assert_eq!(
        kv.keys("many", &Bounds::new(None, listing)),
        too_large(listing)
    );
    assert_eq!(
        kv.open_connections(),
        0,
        "a reply refused midway drops its connection"
    );
    // With room for the walk, every key is listed once, and the next call works.
    let listed = kv
        .keys("many", &Bounds::new(None, 1 << 20))
        .expect("keys within 1 MiB");
    assert_eq!(listed.len(), 2000);
    assert_eq!(listing_cost(&listed), listing);
    assert_eq!(kv.open_connections(), 1);

    // One round holding all keys is refused on the header of the first name that does not fit.
    let mut config = RedisConfig::from_url(&server.url()).expect("valid url");
    config.scan_count = 10_000;
    let kv = RedisStore::with_config(config);
    assert_eq!(
        kv.keys("many", &Bounds::new(None, 16_000)),
        too_large(16_000)
    );
    assert_eq!(kv.open_connections(), 0);
    assert_eq!(
        kv.keys("many", &Bounds::UNBOUNDED).expect("keys").len(),
        2000
    );
    // An empty store lists within any budget.
    assert_eq!(kv.keys("none", &Bounds::new(None, 0)), Ok(Vec::new()));
}

#[test]
fn write_counted_is_one_transaction_with_the_counter() {
    use keyvalue::Write;
    let server = RedisServer::start();
    let kv = store_for(&server.url());
    let counter = ("counters", "version");
    let first = kv
        .write_counted(
            &[
                Write::Set {
                    store: "a",
                    key: "x",
                    value: b"1",
                },
                Write::Set {
                    store: "b",
                    key: "y",
                    value: b"2",
                },
            ],
            counter,
            &Bounds::UNBOUNDED,
        )
        .expect("batch");
    assert_eq!(first, 1);
    assert_eq!(kv.get("a", "x", &Bounds::UNBOUNDED).expect("x"), b"1");
    assert_eq!(kv.get("b", "y", &Bounds::UNBOUNDED).expect("y"), b"2");
    let second = kv
        .write_counted(
            &[Write::Delete {
                store: "a",
                key: "x",
            }],
            counter,
            &Bounds::UNBOUNDED,
        )
        .expect("batch");
    assert_eq!(second, 2);
    assert!(kv.get("a", "x", &Bounds::UNBOUNDED).is_err());
    assert_eq!(
        kv.get("counters", "version", &Bounds::UNBOUNDED)
            .expect("counter"),
        b"2"
    );
    // A counter that is not a number fails the whole batch: nothing written.
    kv.set("counters", "version", b"not a number", &Bounds::UNBOUNDED)
        .expect("set");
    let refused = kv.write_counted(
        &[Write::Set {
            store: "a",
            key: "z",
            value: b"3",
        }],
        counter,
        &Bounds::UNBOUNDED,
    );
    assert!(matches!(refused, Err(KvError::Io(_))), "{refused:?}");
    // Redis runs the SET before the failing INCR (no rollback): the batch's writes stand.
    // What matters to callers is the error; the connection still works.
    kv.set("a", "w", b"4", &Bounds::UNBOUNDED)
        .expect("set after");
}
