//! Tests against scripted fake servers; tests with a real redis-server live in `tests/`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::thread;

use super::*;

#[test]
fn store_prefixes_cannot_collide() {
    assert_eq!(key_prefix("users"), "users:");
    assert_eq!(key_prefix("a:b"), "a%3Ab:");
    assert_eq!(key_prefix("50%"), "50%25:");
    assert_eq!(key_prefix("%3A"), "%253A:");
    // Store "a" key "b:c" and store "a:b" key "c" are different Redis keys.
    assert_ne!(redis_key("a", "b:c").ok(), redis_key("a:b", "c").ok());
    assert!(matches!(redis_key("", "k"), Err(KvError::InvalidKey(_))));
    assert!(matches!(redis_key("s", ""), Err(KvError::InvalidKey(_))));
}

#[test]
fn glob_metacharacters_are_escaped() {
    assert_eq!(glob_escape("plain-name_1"), "plain\\-name_1");
    assert_eq!(glob_escape("a*b?c[d]e\\f^"), "a\\*b\\?c\\[d\\]e\\\\f\\^");
}

#[test]
fn errors_map_to_kv_errors() {
    let refused = RedisError::Connect {
        address: "127.0.0.1:1".into(),
        source: io::Error::from(io::ErrorKind::ConnectionRefused),
    };
    assert!(matches!(KvError::from(refused), KvError::Connection(_)));
    assert!(matches!(
        KvError::from(RedisError::Closed),
        KvError::Connection(_)
    ));
    assert!(matches!(
        KvError::from(RedisError::Auth("WRONGPASS".into())),
        KvError::Authentication(_)
    ));
    assert!(matches!(
        KvError::from(RedisError::Server(
            "ERR string exceeds maximum allowed size (proto-max-bulk-len)".into()
        )),
        KvError::InvalidValue(_)
    ));
    assert!(matches!(
        KvError::from(RedisError::Server("OOM".into())),
        KvError::Io(_)
    ));
    assert!(matches!(
        KvError::from(RedisError::Protocol(ProtocolError::UnknownType(b'?'))),
        KvError::Io(_)
    ));
    // Redis slower than io_timeout is the backend's fault; the caller's deadline is not.
    assert!(matches!(
        KvError::from(RedisError::Timeout(Duration::from_secs(5))),
        KvError::BackendTimeout(_)
    ));
    assert!(matches!(
        KvError::from(RedisError::Deadline { phase: "waiting for the reply" }),
        KvError::Timeout(m) if m.contains("waiting for the reply")
    ));
    assert_eq!(
        KvError::from(RedisError::TooLarge {
            limit: 10,
            size: Some(11)
        }),
        KvError::TooLarge {
            limit: 10,
            size: Some(11)
        }
    );
    let timeout = kv_error(
        "get",
        Instant::now() - Duration::from_millis(250),
        RedisError::Deadline {
            phase: "connecting",
        },
    );
    assert!(
        matches!(&timeout, KvError::Timeout(m) if m.contains("redis get gave up connecting after 25")),
        "{timeout:?}"
    );
}

fn config_for(port: u16) -> RedisConfig {
    let mut config = RedisConfig::from_url(&format!("redis://127.0.0.1:{port}")).expect("url");
    config.options.connect_timeout = Duration::from_millis(500);
    config.options.io_timeout = Duration::from_millis(300);
    config
}

/// Serves one connection: for each request read, sends the next canned reply (then keeps the
/// connection open without answering).
fn fake_server(replies: Vec<Vec<u8>>) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let handle = thread::spawn(move || {
        let Ok((mut socket, _)) = listener.accept() else {
            return;
        };
        let mut buf = [0u8; 4096];
        for reply in replies {
            if socket.read(&mut buf).unwrap_or(0) == 0 {
                return;
            }
            if socket.write_all(&reply).is_err() {
                return;
            }
        }
        // Hold the connection until the client gives up.
        while socket.read(&mut buf).unwrap_or(0) > 0 {}
    });
    (port, handle)
}

#[test]
fn refused_connection_is_a_connection_error() {
    let port = TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let store = RedisStore::with_config(config_for(port));
    let started = Instant::now();
    assert!(matches!(
        store.get("s", "k", &Bounds::UNBOUNDED),
        Err(KvError::Connection(_))
    ));
    assert!(matches!(
        store.open("s", &Bounds::UNBOUNDED),
        Err(KvError::Connection(_))
    ));
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(store.open_connections(), 0);
}

#[test]
fn silent_server_times_out() {
    let (port, server) = fake_server(Vec::new());
    let store = RedisStore::with_config(config_for(port));
    let started = Instant::now();
    let result = store.set("s", "k", b"v", &Bounds::UNBOUNDED);
    assert!(
        matches!(result, Err(KvError::BackendTimeout(ref m)) if m.contains("did not answer")),
        "{result:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(
        store.open_connections(),
        0,
        "timed-out connection must be dropped"
    );
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn silent_server_times_out_with_polling() {
    let (port, server) = fake_server(Vec::new());
    let mut config = config_for(port);
    config.options.timeouts = TimeoutStrategy::Polling;
    let store = RedisStore::with_config(config);
    let started = Instant::now();
    let result = store.get("s", "k", &Bounds::UNBOUNDED);
    let elapsed = started.elapsed();
    assert!(
        matches!(result, Err(KvError::BackendTimeout(ref m)) if m.contains("did not answer")),
        "{result:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "{elapsed:?}"
    );
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn garbage_reply_is_an_io_error_and_drops_the_connection() {
    let (port, server) = fake_server(vec![b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec()]);
    let store = RedisStore::with_config(config_for(port));
    let result = store.get("s", "k", &Bounds::UNBOUNDED);
    assert!(
        matches!(result, Err(KvError::Io(ref m)) if m.contains("protocol")),
        "{result:?}"
    );
    assert_eq!(store.open_connections(), 0);
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn oversized_value_is_rejected() {
    let (port, server) = fake_server(vec![b"$2000000\r\n".to_vec()]);
    let mut config = config_for(port);
    config.options.limits.max_bulk_len = 1024 * 1024;
    let store = RedisStore::with_config(config);
    let result = store.get("s", "k", &Bounds::UNBOUNDED);
    assert!(
        matches!(result, Err(KvError::Io(ref m)) if m.contains("exceeds")),
        "{result:?}"
    );
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn set_requires_an_ok_acknowledgement() {
    // `SET` answered with nil (as with NX/XX conditions) is not a success.
    let (port, server) = fake_server(vec![b"$-1\r\n".to_vec()]);
    let store = RedisStore::with_config(config_for(port));
    assert!(matches!(
        store.set("s", "k", b"v", &Bounds::UNBOUNDED),
        Err(KvError::Unexpected(_))
    ));
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn error_reply_keeps_the_connection() {
    let (port, server) = fake_server(vec![
        b"-OOM command not allowed\r\n".to_vec(),
        b"+OK\r\n".to_vec(),
    ]);
    let store = RedisStore::with_config(config_for(port));
    assert!(
        matches!(store.set("s", "k", b"v", &Bounds::UNBOUNDED), Err(KvError::Io(ref m)) if m.contains("OOM"))
    );
    assert_eq!(store.open_connections(), 1);
    // The fake server accepts a single connection, so this succeeds only on the same one.
    assert_eq!(store.set("s", "k", b"v", &Bounds::UNBOUNDED), Ok(()));
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn scan_reply_is_validated() {
    let reply = b"*2\r\n$1\r\n0\r\n*3\r\n$3\r\ns:a\r\n$3\r\ns:b\r\n$4\r\ns:\xff\xfe\r\n".to_vec();
    let (port, server) = fake_server(vec![reply, b"*1\r\n$1\r\n0\r\n".to_vec()]);
    let store = RedisStore::with_config(config_for(port));
    let mut keys = store.keys("s", &Bounds::UNBOUNDED).expect("keys");
    keys.sort();
    // The non-UTF-8 key is skipped.
    assert_eq!(keys, vec!["a".to_string(), "b".to_string()]);
    assert!(matches!(
        store.keys("s", &Bounds::UNBOUNDED),
        Err(KvError::Unexpected(_))
    ));
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn pool_is_bounded() {
    let (port, server) = fake_server(Vec::new());
    let mut config = config_for(port);
    config.pool_size = 1;
    config.pool_wait = Duration::from_millis(100);
    let store = RedisStore::with_config(config);
    let lease = store
        .checkout(true, &Bounds::UNBOUNDED)
        .expect("first connection");
    assert!(matches!(
        store.checkout(true, &Bounds::UNBOUNDED),
        Err(RedisError::PoolExhausted(1))
    ));
    assert_eq!(store.open_connections(), 1);
    drop(lease);
    assert_eq!(store.open_connections(), 1);
    assert_eq!(store.lock().idle.len(), 1);
    drop(store);
    server.join().expect("server thread");
}

/// No deadline for 5 s of I/O timeout: only the caller's deadline can end a call early.
fn patient_config(port: u16, strategy: TimeoutStrategy) -> RedisConfig {
    let mut config = config_for(port);
    config.options.io_timeout = Duration::from_secs(5);
    config.options.timeouts = strategy;
    config
}

#[test]
fn silent_server_fails_at_the_callers_deadline() {
    for strategy in [TimeoutStrategy::Socket, TimeoutStrategy::Polling] {
        let (port, server) = fake_server(Vec::new());
        let store = RedisStore::with_config(patient_config(port, strategy));
        let bounds = Bounds::within(Duration::from_millis(200), usize::MAX);
        let started = Instant::now();
        let result = store.get("s", "k", &bounds);
        let elapsed = started.elapsed();
        assert!(
            matches!(result, Err(KvError::Timeout(ref m)) if m.contains("waiting for the reply")),
            "{strategy:?}: {result:?}"
        );
        assert!(
            elapsed >= Duration::from_millis(190) && elapsed < Duration::from_millis(1500),
            "{strategy:?}: {elapsed:?}"
        );
        assert_eq!(store.open_connections(), 0);
        drop(store);
        server.join().expect("server thread");
    }
}

#[test]
fn io_timeout_before_the_deadline_is_a_connection_error() {
    let (port, server) = fake_server(Vec::new());
    let store = RedisStore::with_config(config_for(port)); // io_timeout 300 ms
    let bounds = Bounds::within(Duration::from_secs(10), usize::MAX);
    let result = store.get("s", "k", &bounds);
    assert!(
        matches!(result, Err(KvError::BackendTimeout(ref m)) if m.contains("did not answer")),
        "{result:?}"
    );
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn passed_deadline_fails_without_touching_the_pool() {
    let (port, server) = fake_server(vec![b"+OK\r\n".to_vec(), b"$1\r\nv\r\n".to_vec()]);
    let store = RedisStore::with_config(config_for(port));
    assert_eq!(store.set("s", "k", b"v", &Bounds::UNBOUNDED), Ok(()));
    let past = Bounds::new(Some(Instant::now()), usize::MAX);
    assert!(matches!(
        store.get("s", "k", &past),
        Err(KvError::Timeout(m)) if m.contains("before starting")
    ));
    // The pooled connection is untouched and still in step.
    assert_eq!(store.open_connections(), 1);
    assert_eq!(store.get("s", "k", &Bounds::UNBOUNDED), Ok(b"v".to_vec()));
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn pool_wait_ends_at_the_deadline_or_pool_wait_whichever_first() {
    let (port, server) = fake_server(Vec::new());
    let mut config = config_for(port);
    config.pool_size = 1;
    config.pool_wait = Duration::from_millis(300);
    let store = RedisStore::with_config(config);
    let lease = store
        .checkout(true, &Bounds::UNBOUNDED)
        .expect("first connection");
    let started = Instant::now();
    let near = Bounds::within(Duration::from_millis(50), usize::MAX);
    assert!(matches!(
        store.checkout(true, &near),
        Err(RedisError::Deadline {
            phase: "waiting for a free connection"
        })
    ));
    assert!(started.elapsed() < Duration::from_millis(250));
    // The configured wait ends first: the pool (Redis) is overloaded, not the caller late.
    let far = Bounds::within(Duration::from_secs(10), usize::MAX);
    assert!(matches!(
        store.checkout(true, &far),
        Err(RedisError::PoolExhausted(1))
    ));
    drop(lease);
    drop(store);
    server.join().expect("server thread");
}

#[test]
fn value_over_the_callers_limit_is_too_large_and_drops_the_connection() {
    let (port, server) = fake_server(vec![b"$2000000\r\n".to_vec()]);
    let store = RedisStore::with_config(config_for(port));
    let result = store.get("s", "k", &Bounds::new(None, 1024));
    assert_eq!(
        result,
        Err(KvError::TooLarge {
            limit: 1024,
            size: Some(2_000_000)
        })
    );
    assert_eq!(store.open_connections(), 0);
    drop(store);
    server.join().expect("server thread");
}
