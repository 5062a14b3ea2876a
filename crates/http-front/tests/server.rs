//! Protocol behaviour of a real server on 127.0.0.1:0, talked to over raw TCP.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Client, Reply, start, test_config};
use http_front::{Request, Response, Server};

#[test]
fn keep_alive_serves_several_requests() {
    let (handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    for i in 0..3 {
        client.send(format!("GET /item/{i}?x=1 HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
        let reply = client.read(false);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["path"], format!("/item/{i}"));
        assert_eq!(reply.json()["query"], "x=1");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(reply.header("date").is_some_and(|d| d.ends_with(" GMT")));
        assert_eq!(reply.header("connection"), None);
    }
    client.send(b"GET /last HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(client.read(false).header("connection"), Some("close"));
    assert!(client.at_eof());
    assert_eq!(handle.stats().requests.load(Ordering::Relaxed), 4);
    handle.shutdown().expect("shutdown");
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(
        b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\n\
          POST /2 HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nbody\
          POST /3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n\
          HEAD /4 HTTP/1.1\r\nHost: t\r\n\r\n\
          GET /5 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let replies: Vec<Reply> = (1..=5).map(|i| client.read(i == 4)).collect();
    assert_eq!(replies[0].json()["path"], "/1");
    assert_eq!(replies[1].json()["body"], "body");
    assert_eq!(replies[2].json()["body"], "abc");
    assert_eq!(replies[2].json()["trailers"], 1);
    // HEAD: the length of the GET body, no body bytes (else reply 5 would not parse).
    assert!(replies[3].header("content-length").is_some());
    assert!(replies[3].body.is_empty());
    assert_eq!(replies[4].json()["path"], "/5");
    assert!(client.at_eof());
}

fn expect_error_and_close(addr: SocketAddr, raw: &[u8], status: u16) {
    let mut client = Client::connect(addr);
    client.send(raw);
    let reply = client.read(false);
    assert_eq!(
        reply.status,
        status,
        "for {:?}",
        String::from_utf8_lossy(raw)
    );
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.json()["status"], status);
    assert!(reply.json()["error"].is_string());
    assert!(client.at_eof(), "connection not closed after {status}");
}

#[test]
fn protocol_errors_close_the_connection_and_the_server_goes_on() {
    let (handle, addr) = start(test_config());
    expect_error_and_close(addr, b"\x16\x03\x01garbage\r\n\r\n", 400);
    expect_error_and_close(addr, b"GET / HTTP/2.0\r\n\r\n", 505);
    expect_error_and_close(
        addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
    expect_error_and_close(
        addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
    );
    expect_error_and_close(
        addr,
        b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 5000\r\n\r\n",
        413,
    );
    let long = format!(
        "GET / HTTP/1.1\r\nHost: t\r\nX: {}\r\n\r\n",
        "a".repeat(4000)
    );
    expect_error_and_close(addr, long.as_bytes(), 431);
    // A valid request before the broken one is still answered.
    let mut client = Client::connect(addr);
    client.send(b"GET /fine HTTP/1.1\r\nHost: t\r\n\r\nNOT HTTP AT ALL\x00\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
    assert_eq!(client.read(false).status, 400);
    assert!(client.at_eof());
    // And the server still serves new clients.
    let mut client = Client::connect(addr);
    client.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read(false).json()["path"], "/after");
    assert!(handle.stats().protocol_errors.load(Ordering::Relaxed) >= 7);
}

#[test]
fn oversized_body_is_rejected_while_the_client_is_still_sending() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 200000\r\n\r\n");
    // Part of the body is already on its way; the answer must still arrive.
    let _ = client.reader.get_mut().write_all(&[b'x'; 20000]);
    assert_eq!(client.read(false).status, 413);
}

#[test]
fn handler_panic_becomes_500() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"GET /panic HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.read(false);
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("connection"), Some("close"));
    let mut client = Client::connect(addr);
    client.send(b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
}

#[test]
fn handler_can_close_the_connection() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"GET /close HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = client.read(false);
    assert_eq!(reply.body, b"bye");
    assert_eq!(reply.header("connection"), Some("close"));
    assert!(client.at_eof());
}

#[test]
fn http_1_0_closes_unless_keep_alive() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(client.read(false).header("connection"), Some("close"));
    assert!(client.at_eof());

    let mut client = Client::connect(addr);
    client.send(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_eq!(client.read(false).header("connection"), Some("keep-alive"));
    client.send(b"GET /b HTTP/1.0\r\n\r\n");
    assert_eq!(client.read(false).json()["path"], "/b");
    assert!(client.at_eof());
}

#[test]
fn expect_100_continue_is_answered() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client
        .send(b"PUT /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(client.line(), "HTTP/1.1 100 Continue\r\n");
    assert_eq!(client.line(), "\r\n");
    client.send(b"hello");
    assert_eq!(client.read(false).json()["body"], "hello");

    // Too large: rejected at once, no 100.
    let mut client = Client::connect(addr);
    client.send(
        b"PUT /up HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 999999\r\n\r\n",
    );
    assert_eq!(client.read(false).status, 413);
}

#[test]
fn max_requests_per_connection_closes() {
    let mut config = test_config();
    config.limits.max_requests_per_connection = 2;
    let (_handle, addr) = start(config);
    let mut client = Client::connect(addr);
    client.send(b"GET /1 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(client.read(false).header("connection"), None);
    assert_eq!(client.read(false).header("connection"), Some("close"));
    assert!(client.at_eof());
}

/// A handler that blocks on `/block` until released, reporting when it starts.
struct Blocking {
    entered: Mutex<Sender<()>>,
    release: Mutex<Receiver<()>>,
}

impl http_front::Handler for Blocking {
    fn handle(&self, request: &Request) -> Response {
        if request.path == "/block" {
            let _ = self.entered.lock().expect("lock").send(());
            let _ = self
                .release
                .lock()
                .expect("lock")
                .recv_timeout(Duration::from_secs(10));
        }
        Response::text(200, request.path.clone())
    }
}

#[test]
fn a_full_worker_queue_answers_503_with_retry_after_and_keeps_the_connection() {
    let mut config = test_config();
    config.workers = 1;
    config.queue_capacity = 1;
    let server = Server::bind("127.0.0.1:0", config).expect("bind");
    let (entered_tx, entered_rx) = channel();
    let (release_tx, release_rx) = channel();
    let handle = server
        .spawn(Blocking {
            entered: Mutex::new(entered_tx),
            release: Mutex::new(release_rx),
        })
        .expect("spawn");
    let addr = handle.local_addr();

    // A occupies the only worker.
    let mut a = Client::connect(addr);
    a.send(b"GET /block HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("handler entered");
    // B waits in the queue; C finds it full.
    let mut b = Client::connect(addr);
    b.send(b"GET /b HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(addr);
    c.send(b"GET /c HTTP/1.1\r\nHost: t\r\n\r\n");
    let reply = c.read(false);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.json()["status"], 503);
    assert_eq!(
        reply.header("connection"),
        None,
        "the connection stays usable"
    );

    release_tx.send(()).expect("release");
    assert_eq!(a.read(false).body, b"/block");
    assert_eq!(b.read(false).body, b"/b");
    assert_eq!(handle.stats().queue_full.load(Ordering::Relaxed), 1);

    // Once the worker is free, C's connection is served again.
    c.send(b"GET /c2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    assert_eq!(c.read(false).body, b"/c2");
    drop((a, b, c));
    handle.shutdown().expect("shutdown");
}

#[test]
fn many_concurrent_clients() {
    let (handle, addr) = start(test_config());
    let served = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let served = Arc::clone(&served);
            std::thread::spawn(move || {
                let mut client = Client::connect(addr);
                for i in 0..50 {
                    client.send(format!("GET /{t}/{i} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
                    let reply = client.read(false);
                    assert_eq!(reply.json()["path"], format!("/{t}/{i}"));
                    served.fetch_add(1, Ordering::Relaxed);
                    assert_eq!(reply.header("connection"), None);
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().expect("client thread");
    }
    assert_eq!(served.load(Ordering::Relaxed), 200);
    handle.shutdown().expect("shutdown");
}

#[test]
fn shutdown_stops_accepting() {
    let (handle, addr) = start(test_config());
    handle.shutdown().expect("shutdown");
    let refused = match TcpStream::connect(addr) {
        Err(_) => true,
        Ok(mut stream) => {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = stream.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
            let mut buf = Vec::new();
            matches!(stream.read_to_end(&mut buf), Ok(0) | Err(_))
        }
    };
    assert!(refused);
}

#[test]
fn a_connection_close_answer_ends_the_stream_while_the_client_keeps_its_side_open() {
    let (handle, addr) = start(test_config());
    // The client gets its answer and our end of stream without closing its own side.
    let mut lingering = Client::connect(addr);
    lingering.send(b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(lingering.read(false).status, 200);
    let mut rest = Vec::new();
    lingering
        .reader
        .read_to_end(&mut rest)
        .expect("end of stream");
    assert!(rest.is_empty());
    let mut next = Client::connect(addr);
    next.send(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    assert_eq!(next.read(false).json()["path"], "/next");
    drop(lingering);
    handle.shutdown().expect("shutdown");
}

/// A handler answering `/healthz` on the I/O thread and everything else on a worker.
struct Inline;

impl http_front::Handler for Inline {
    fn handle(&self, request: &Request) -> Response {
        if request.path == "/block" {
            std::thread::sleep(Duration::from_secs(2));
        }
        Response::text(200, request.path.clone())
    }

    fn runs_inline(&self, request: &Request) -> bool {
        request.path == "/healthz"
    }
}

#[test]
fn inline_requests_are_answered_while_every_worker_is_busy() {
    let mut config = test_config();
    config.workers = 1;
    let handle = Server::bind("127.0.0.1:0", config)
        .expect("bind")
        .spawn(Inline)
        .expect("spawn");
    let addr = handle.local_addr();
    let mut busy = Client::connect(addr);
    busy.send(b"GET /block HTTP/1.1\r\nHost: t\r\n\r\n");
    std::thread::sleep(Duration::from_millis(100));
    let mut health = Client::connect(addr);
    health.send(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    let started = std::time::Instant::now();
    assert_eq!(health.read(false).body, b"/healthz");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "answered without the worker"
    );
    assert_eq!(busy.read(false).body, b"/block");
    drop((busy, health));
    handle.shutdown().expect("shutdown");
}
