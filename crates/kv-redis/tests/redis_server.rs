//! The Redis backend against a real redis-server started per test on 127.0.0.1.

use std::collections::HashSet;
use std::process::Command;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use keyvalue::{Bounds, KeyValue, KvError};
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
            matches!(result, Err(KvError::Connection(ref m)) if m.contains("did not answer")),
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
        matches!(result, Err(KvError::Connection(ref m)) if m.contains("authentication")),
        "{result:?}"
    );
    let missing = store_for(&format!("redis://127.0.0.1:{port}"));
    let result = missing.get("s", "k", &Bounds::UNBOUNDED);
    assert!(
        matches!(result, Err(KvError::Connection(ref m)) if m.contains("NOAUTH")),
        "{result:?}"
    );
    assert!(matches!(
        missing.open("s", &Bounds::UNBOUNDED),
        Err(KvError::Connection(_))
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
        matches!(mallory.get("s", "k", &Bounds::UNBOUNDED), Err(KvError::Connection(m)) if m.contains("WRONGPASS"))
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
