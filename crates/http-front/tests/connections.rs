//! Hostile and slow clients: they cost the server memory, never a worker, and each phase of an
//! exchange has a deadline.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Client, start, test_config};
use http_front::Timeouts;

#[test]
fn idle_connections_and_slow_readers_do_not_stall_other_clients() {
    let mut config = test_config();
    config.queue_capacity = 64;
    config.timeouts = Timeouts {
        header: Duration::from_secs(60),
        keep_alive: Duration::from_secs(60),
        send: Duration::from_secs(60),
        ..Timeouts::default()
    };
    let (handle, addr) = start(config);

    let idle: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).expect("idle connection"))
        .collect();
    // Slow readers ask for 2 MiB each and read 1 KiB every 200 ms.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..20)
        .map(|_| {
            let stop = Arc::clone(&stop);
            let mut stream = TcpStream::connect(addr).expect("slow reader");
            stream
                .write_all(b"GET /big?n=2097152 HTTP/1.1\r\nHost: slow\r\n\r\n")
                .expect("request");
            std::thread::spawn(move || {
                let mut buf = [0u8; 1024];
                let mut total = 0;
                while !stop.load(Ordering::Relaxed) {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) if total == 0 => {
                            assert!(buf[..n].starts_with(b"HTTP/1.1 200 "), "a 200 response");
                            total += n;
                        }
                        Ok(n) => total += n,
                    }
                    std::thread::sleep(Duration::from_millis(200));
                }
                total
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let mut client = Client::connect(addr);
    let mut slowest = Duration::ZERO;
    for i in 0..100 {
        let started = Instant::now();
        client.send(format!("GET /healthz/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let reply = client.read(false);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["path"], format!("/healthz/{i}"));
        slowest = slowest.max(started.elapsed());
    }
    assert!(
        slowest < Duration::from_secs(1),
        "slowest answer took {slowest:?}"
    );

    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        assert!(reader.join().expect("reader") > 0, "slow readers got data");
    }
    drop(idle);
    handle.shutdown().expect("shutdown");
}

#[test]
fn connections_beyond_the_limit_get_503_and_are_closed() {
    let mut config = test_config();
    config.max_connections = 4;
    let (handle, addr) = start(config);
    let mut held: Vec<Client> = (0..4)
        .map(|i| {
            let mut client = Client::connect(addr);
            client.send(format!("GET /held/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
            assert_eq!(client.read(false).status, 200);
            client
        })
        .collect();

    let mut extra = Client::connect(addr);
    let reply = extra.read(false);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(extra.at_eof());
    assert_eq!(
        handle.stats().connections_rejected.load(Ordering::Relaxed),
        1
    );

    // Once one closes, a new connection is served.
    drop(held.pop());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut next = Client::connect(addr);
        next.send(b"GET /next HTTP/1.1\r\nHost: t\r\n\r\n");
        if next.read(false).status == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "a freed slot is never reused");
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(held);
    handle.shutdown().expect("shutdown");
}

#[test]
fn a_client_that_trickles_its_headers_is_cut_at_the_header_deadline() {
    let mut config = test_config();
    config.timeouts.header = Duration::from_millis(500);
    let (handle, addr) = start(config);
    let mut client = Client::connect(addr);
    let started = Instant::now();
    let mut writer = client.reader.get_ref().try_clone().expect("clone");
    let trickle = std::thread::spawn(move || {
        // One byte every 50 ms: always some progress, never a complete head.
        for byte in b"GET / HTTP/1.1\r\nHost: t\r\nX-Slow: "
            .iter()
            .chain([b'a'; 200].iter())
        {
            if writer.write_all(&[*byte]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    let reply = client.read(false);
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 408);
    assert!(client.at_eof());
    assert!(elapsed >= Duration::from_millis(450), "{elapsed:?}");
    assert!(
        elapsed < Duration::from_secs(3),
        "cut at the deadline, not per byte: {elapsed:?}"
    );
    trickle.join().expect("trickle");
    assert_eq!(handle.stats().timeouts.load(Ordering::Relaxed), 1);
    handle.shutdown().expect("shutdown");
}

#[test]
fn a_body_below_the_minimum_rate_is_cut_and_a_fair_one_passes() {
    let mut config = test_config();
    config.limits.max_body_bytes = 1 << 20;
    config.timeouts.body = Duration::from_millis(500);
    config.timeouts.min_rate = 1000;
    let (handle, addr) = start(config);

    // 100 bytes/s against a minimum of 1000: cut soon after the base time.
    let mut slow = Client::connect(addr);
    slow.send(b"POST /slow HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n");
    let started = Instant::now();
    let mut writer = slow.reader.get_ref().try_clone().expect("clone");
    let sender = std::thread::spawn(move || {
        for _ in 0..100 {
            if writer.write_all(&[b'b'; 10]).is_err() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    assert_eq!(slow.read(false).status, 408);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    sender.join().expect("sender");

    // 20,000 bytes in 10 pieces over ~1 s: 20 KB/s, well above the minimum.
    let mut fair = Client::connect(addr);
    fair.send(b"POST /fair HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n");
    for _ in 0..10 {
        fair.send(&[b'f'; 2000]);
        std::thread::sleep(Duration::from_millis(100));
    }
    let reply = fair.read(false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body"].as_str().map(str::len), Some(20000));
    handle.shutdown().expect("shutdown");
}

#[test]
fn a_slow_reader_is_cut_at_the_minimum_rate() {
    let mut config = test_config();
    config.timeouts.send = Duration::from_secs(1);
    config.timeouts.min_rate = 1 << 20;
    let (handle, addr) = start(config);
    let mut stream = TcpStream::connect(addr).expect("connect");
    stream
        .write_all(b"GET /big?n=67108864 HTTP/1.1\r\nHost: slow\r\n\r\n")
        .expect("request");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    // 1 KiB every 50 ms is ~20 KiB/s, far below 1 MiB/s: the server gives up long before
    // the 64 MiB are through.
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let mut total = 0usize;
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
        std::thread::sleep(Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(60), "never cut");
    }
    assert!(total < 64 << 20, "cut before the end ({total} bytes)");
    // The server is fine afterwards.
    let mut client = Client::connect(addr);
    client.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
    handle.shutdown().expect("shutdown");
}

#[test]
fn idle_and_silent_connections_are_closed_at_their_deadlines() {
    let mut config = test_config();
    config.timeouts.header = Duration::from_millis(300);
    config.timeouts.keep_alive = Duration::from_millis(300);
    let (handle, addr) = start(config);

    // A request that never completes gets 408.
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: slow");
    assert_eq!(client.read(false).status, 408);
    assert!(client.at_eof());

    // An idle keep-alive connection is closed silently.
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
    let started = Instant::now();
    assert!(client.at_eof());
    assert!(started.elapsed() < Duration::from_secs(3));

    // A connection that never sends anything is closed silently.
    let mut client = Client::connect(addr);
    assert!(client.at_eof());

    // A body in pieces is fine.
    let mut client = Client::connect(addr);
    client.send(b"POST /p HTTP/1.1\r\nHost: t\r\nContent-Length: 6\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(50));
    client.send(b"cdef");
    assert_eq!(client.read(false).json()["body"], "abcdef");
    drop(client);
    handle.shutdown().expect("shutdown");
}

/// Bodies and responses held in memory share one server-wide budget: a request that does not
/// fit is answered 503 at once (before its body is read), a response that does not fit becomes
/// a 503, and other clients go on. Freed bytes are given back.
#[test]
fn buffered_bytes_are_bounded_by_the_buffer_budget() {
    let mut config = test_config();
    config.limits.max_body_bytes = 1 << 20;
    config.buffer_budget = 600 * 1024;
    let (handle, addr) = start(config);

    // A client that declares a 500 KiB body and sends it slowly holds 500 KiB of the budget.
    let mut holder = Client::connect(addr);
    holder.send(b"POST /hold HTTP/1.1\r\nHost: t\r\nContent-Length: 512000\r\n\r\nabc");
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.stats().buffered_bytes() < 400 * 1024 {
        assert!(
            Instant::now() < deadline,
            "the declared body is never charged"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    // Another large body does not fit: 503 with Retry-After before its body is sent, closed.
    let mut refused = Client::connect(addr);
    refused.send(b"POST /refused HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n");
    let reply = refused.read(false);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(
        reply.json()["error"]
            .as_str()
            .is_some_and(|e| e.contains("buffer memory")),
        "{:?}",
        reply.json()
    );
    assert!(refused.at_eof());

    // A response that does not fit is replaced by 503; small requests still work meanwhile.
    let mut big = Client::connect(addr);
    big.send(b"GET /big?n=300000 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(big.read(false).status, 503);
    let mut small = Client::connect(addr);
    small.send(b"POST /small HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello");
    let reply = small.read(false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["body"], "hello");
    assert_eq!(handle.stats().buffers_full.load(Ordering::Relaxed), 2);

    // When the holder goes away its bytes come back and the same requests succeed.
    drop(holder);
    let deadline = Instant::now() + Duration::from_secs(5);
    while handle.stats().buffered_bytes() > 0 {
        assert!(
            Instant::now() < deadline,
            "a closed connection keeps its charge"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut retry = Client::connect(addr);
    retry.send(b"GET /big?n=300000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = retry.read(false);
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body.len(), 300_000);
    let mut body = Client::connect(addr);
    body.send(b"POST /body HTTP/1.1\r\nHost: t\r\nContent-Length: 300000\r\n\r\n");
    body.send(&vec![b'y'; 300_000]);
    assert_eq!(body.read(false).status, 200);
    handle.shutdown().expect("shutdown");
}

/// A request that waited for a worker longer than the queue timeout is answered 503 without
/// running; one whose client reset the connection meanwhile is not run at all.
#[test]
fn stale_and_abandoned_requests_are_not_run() {
    let mut config = test_config();
    config.workers = 1;
    config.queue_timeout = Duration::from_millis(300);
    let (handle, addr) = start(config);

    let mut busy = Client::connect(addr);
    busy.send(b"GET /sleep?ms=1000 HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let mut stale = Client::connect(addr);
    stale.send(b"GET /stale HTTP/1.1\r\nHost: t\r\n\r\n");
    let abandoned = TcpStream::connect(addr).expect("connect");
    (&abandoned)
        .write_all(b"GET /abandoned HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("request");
    std::thread::sleep(Duration::from_millis(100));
    // Close with a reset (linger 0).
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads one `linger` we own, on a socket we own.
    unsafe {
        use std::os::fd::AsRawFd;
        libc::setsockopt(
            abandoned.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
    drop(abandoned);

    assert_eq!(busy.read(false).status, 200);
    let reply = stale.read(false);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    let stats = handle.stats();
    let deadline = Instant::now() + Duration::from_secs(5);
    while stats.cancelled.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "the abandoned request was run");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(stats.queue_expired.load(Ordering::Relaxed), 1);
    // The connection that waited is still usable.
    stale.send(b"GET /again HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(stale.read(false).status, 200);
    handle.shutdown().expect("shutdown");
}
