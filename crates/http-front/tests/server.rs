//! Starts real servers on 127.0.0.1:0 and talks raw TCP to them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_front::{Limits, Request, Response, Server, ServerConfig, ServerHandle, TimeoutMode};

/// A response as seen by the test client.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

struct Client {
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        line
    }

    /// Reads one response; `head_only` for answers to HEAD.
    fn read(&mut self, head_only: bool) -> Reply {
        let status_line = self.line();
        assert!(
            status_line.starts_with("HTTP/1.1 "),
            "status line {status_line:?}"
        );
        let status = status_line[9..12].parse().expect("status code");
        let mut headers = Vec::new();
        loop {
            let line = self.line();
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').expect("header line");
            headers.push((name.to_string(), value.trim().to_string()));
        }
        let mut reply = Reply {
            status,
            headers,
            body: Vec::new(),
        };
        if !head_only && let Some(length) = reply.header("content-length") {
            let mut body = vec![0u8; length.parse().expect("length")];
            self.reader.read_exact(&mut body).expect("body");
            reply.body = body;
        }
        reply
    }

    /// Whether the server closed the connection (EOF) with nothing more sent.
    fn at_eof(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

fn echo(request: &Request) -> Response {
    match request.path.as_str() {
        "/panic" => panic!("handler panic on purpose"),
        "/close" => Response::text(200, "bye").with_header("Connection", "close"),
        _ => Response::json(
            200,
            &serde_json::json!({
                "method": request.method,
                "path": request.path,
                "query": request.query,
                "body": String::from_utf8_lossy(&request.body),
                "trailers": request.trailers.len(),
            }),
        ),
    }
}

fn test_config() -> ServerConfig {
    ServerConfig {
        workers: 2,
        queue_capacity: 4,
        limits: Limits {
            max_header_bytes: 2048,
            max_headers: 16,
            max_body_bytes: 1024,
            read_timeout: Duration::from_secs(3),
            keep_alive_timeout: Duration::from_secs(2),
            max_requests_per_connection: 100,
        },
        ..ServerConfig::default()
    }
}

fn start(config: ServerConfig) -> (ServerHandle, SocketAddr) {
    let server = Server::bind("127.0.0.1:0", config).expect("bind");
    let handle = server.spawn(echo).expect("spawn");
    let addr = handle.local_addr();
    (handle, addr)
}

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
    client.send(b"GET /last HTTP/1.1\r\nConnection: close\r\n\r\n");
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
        b"GET /1 HTTP/1.1\r\n\r\n\
          POST /2 HTTP/1.1\r\nContent-Length: 4\r\n\r\nbody\
          POST /3 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: 1\r\n\r\n\
          HEAD /4 HTTP/1.1\r\n\r\n\
          GET /5 HTTP/1.1\r\nConnection: close\r\n\r\n",
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
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        501,
    );
    expect_error_and_close(
        addr,
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        400,
    );
    expect_error_and_close(
        addr,
        b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n",
        413,
    );
    let long = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(4000));
    expect_error_and_close(addr, long.as_bytes(), 431);
    // A valid request before the broken one is still answered.
    let mut client = Client::connect(addr);
    client.send(b"GET /fine HTTP/1.1\r\n\r\nNOT HTTP AT ALL\x00\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
    assert_eq!(client.read(false).status, 400);
    assert!(client.at_eof());
    // And the server still serves new clients.
    let mut client = Client::connect(addr);
    client.send(b"GET /after HTTP/1.1\r\n\r\n");
    assert_eq!(client.read(false).json()["path"], "/after");
    assert!(handle.stats().protocol_errors.load(Ordering::Relaxed) >= 7);
}

#[test]
fn oversized_body_is_rejected_while_the_client_is_still_sending() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"POST / HTTP/1.1\r\nContent-Length: 200000\r\n\r\n");
    // Part of the body is already on its way; the answer must still arrive.
    let _ = client.reader.get_mut().write_all(&[b'x'; 20000]);
    assert_eq!(client.read(false).status, 413);
}

#[test]
fn handler_panic_becomes_500() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"GET /panic HTTP/1.1\r\n\r\n");
    let reply = client.read(false);
    assert_eq!(reply.status, 500);
    assert_eq!(reply.header("connection"), Some("close"));
    let mut client = Client::connect(addr);
    client.send(b"GET /ok HTTP/1.1\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
}

#[test]
fn handler_can_close_the_connection() {
    let (_handle, addr) = start(test_config());
    let mut client = Client::connect(addr);
    client.send(b"GET /close HTTP/1.1\r\n\r\n");
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
    client.send(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    assert_eq!(client.line(), "HTTP/1.1 100 Continue\r\n");
    assert_eq!(client.line(), "\r\n");
    client.send(b"hello");
    assert_eq!(client.read(false).json()["body"], "hello");

    // Too large: rejected at once, no 100.
    let mut client = Client::connect(addr);
    client.send(b"PUT /up HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 999999\r\n\r\n");
    assert_eq!(client.read(false).status, 413);
}

#[test]
fn max_requests_per_connection_closes() {
    let mut config = test_config();
    config.limits.max_requests_per_connection = 2;
    let (_handle, addr) = start(config);
    let mut client = Client::connect(addr);
    client.send(b"GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n");
    assert_eq!(client.read(false).header("connection"), None);
    assert_eq!(client.read(false).header("connection"), Some("close"));
    assert!(client.at_eof());
}

fn timeouts(mode: TimeoutMode) {
    let mut config = test_config();
    config.timeouts = mode;
    config.limits.read_timeout = Duration::from_millis(300);
    config.limits.keep_alive_timeout = Duration::from_millis(300);
    let (handle, addr) = start(config);

    // A request that never completes gets 408.
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\nHost: slow");
    let started = Instant::now();
    assert_eq!(client.read(false).status, 408);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(client.at_eof());

    // A trickling request is bounded by the whole-request deadline, not per read.
    let mut client = Client::connect(addr);
    let started = Instant::now();
    for byte in b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" {
        if started.elapsed() > Duration::from_millis(500)
            || client.reader.get_mut().write_all(&[*byte]).is_err()
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(client.read(false).status, 408);

    // An idle keep-alive connection is closed silently.
    let mut client = Client::connect(addr);
    client.send(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(client.read(false).status, 200);
    let started = Instant::now();
    assert!(client.at_eof());
    assert!(started.elapsed() < Duration::from_secs(3));

    // A connection that never sends anything is closed silently.
    let mut client = Client::connect(addr);
    assert!(client.at_eof());

    // Normal requests work in this mode too (incl. a body in pieces).
    let mut client = Client::connect(addr);
    client.send(b"POST /p HTTP/1.1\r\nContent-Length: 6\r\n\r\nab");
    std::thread::sleep(Duration::from_millis(50));
    client.send(b"cdef");
    assert_eq!(client.read(false).json()["body"], "abcdef");
    drop(client);
    handle.shutdown().expect("shutdown");
}

#[test]
fn timeouts_with_socket_timeouts() {
    timeouts(TimeoutMode::Auto);
}

#[test]
fn timeouts_with_polling() {
    timeouts(TimeoutMode::Polling);
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
fn overload_gets_503_with_retry_after() {
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
    a.send(b"GET /block HTTP/1.1\r\nConnection: close\r\n\r\n");
    entered_rx
        .recv_timeout(Duration::from_secs(5))
        .expect("handler entered");
    // B waits in the queue; C finds it full.
    let mut b = Client::connect(addr);
    b.send(b"GET /b HTTP/1.1\r\nConnection: close\r\n\r\n");
    let mut c = Client::connect(addr);
    let reply = c.read(false);
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert_eq!(reply.header("connection"), Some("close"));
    assert_eq!(reply.json()["status"], 503);
    assert!(c.at_eof());

    release_tx.send(()).expect("release");
    assert_eq!(a.read(false).body, b"/block");
    assert_eq!(b.read(false).body, b"/b");
    assert_eq!(
        handle.stats().connections_rejected.load(Ordering::Relaxed),
        1
    );

    // Once the worker is free, new clients are served again.
    let mut d = Client::connect(addr);
    d.send(b"GET /d HTTP/1.1\r\nConnection: close\r\n\r\n");
    assert_eq!(d.read(false).body, b"/d");
    drop((a, b, c, d));
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
                    client.send(format!("GET /{t}/{i} HTTP/1.1\r\n\r\n").as_bytes());
                    let reply = client.read(false);
                    assert_eq!(reply.json()["path"], format!("/{t}/{i}"));
                    served.fetch_add(1, Ordering::Relaxed);
                    // With more clients than workers the server closes to share workers.
                    if reply.header("connection") == Some("close") {
                        client = Client::connect(addr);
                    }
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
            let _ = stream.write_all(b"GET / HTTP/1.1\r\n\r\n");
            let mut buf = Vec::new();
            matches!(stream.read_to_end(&mut buf), Ok(0) | Err(_))
        }
    };
    assert!(refused);
}

#[test]
fn idle_keep_alive_connection_yields_its_worker_to_waiting_clients() {
    let mut config = test_config();
    config.workers = 1;
    config.limits.keep_alive_timeout = Duration::from_secs(20);
    let (handle, addr) = start(config);
    let mut a = Client::connect(addr);
    a.send(b"GET /a HTTP/1.1\r\n\r\n");
    assert_eq!(a.read(false).status, 200);
    // A now idles on the only worker; B must not wait for A's keep-alive timeout.
    let started = Instant::now();
    let mut b = Client::connect(addr);
    b.send(b"GET /b HTTP/1.1\r\n\r\n");
    assert_eq!(b.read(false).json()["path"], "/b");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert!(a.at_eof());
    drop(b);
    handle.shutdown().expect("shutdown");
}

#[test]
fn serves_without_timeouts_too() {
    let mut config = test_config();
    config.timeouts = TimeoutMode::Off;
    let (handle, addr) = start(config);
    let mut client = Client::connect(addr);
    client.send(b"POST /x HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(client.read(false).json()["body"], "hi");
    client.send(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n");
    assert_eq!(client.read(false).status, 400);
    assert!(client.at_eof());
    drop(client);
    handle.shutdown().expect("shutdown");
}

#[test]
fn background_close_frees_the_worker_while_the_client_keeps_its_side_open() {
    let (handle, addr) = start(ServerConfig {
        workers: 1,
        background_close: true,
        ..test_config()
    });
    // The first client gets its answer and the server's end of stream, but keeps its own
    // side open: the closer thread waits for it, the only worker must not.
    let mut lingering = Client::connect(addr);
    lingering.send(b"GET /first HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let reply = lingering.read(false);
    assert_eq!(reply.status, 200);
    let mut rest = Vec::new();
    lingering
        .reader
        .read_to_end(&mut rest)
        .expect("end of stream");
    assert!(rest.is_empty());

    let started = Instant::now();
    for i in 0..3 {
        let mut client = Client::connect(addr);
        client.send(
            format!("GET /next{i} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        let reply = client.read(false);
        assert_eq!(reply.status, 200);
        assert_eq!(reply.json()["path"], format!("/next{i}"));
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    drop(lingering);
    handle.shutdown().expect("shutdown");
}
