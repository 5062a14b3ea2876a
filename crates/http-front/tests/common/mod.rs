//! Test client and servers shared by the integration tests.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use http_front::{Limits, Request, Response, Server, ServerConfig, ServerHandle, Timeouts};

/// A response as seen by the test client.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

pub struct Client {
    pub reader: BufReader<TcpStream>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            reader: BufReader::new(stream),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    pub fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read line");
        line
    }

    /// Reads one response; `head_only` for answers to HEAD.
    pub fn read(&mut self, head_only: bool) -> Reply {
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
    pub fn at_eof(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(self.reader.read_to_end(&mut rest), Ok(0))
    }
}

/// The test handler: echoes the request as JSON; `/panic` panics, `/close` asks to close,
/// `/sleep?ms=N` sleeps,
/// `/big?n=BYTES` answers that many bytes.
pub fn echo(request: &Request) -> Response {
    match request.path.as_str() {
        "/panic" => panic!("handler panic on purpose"),
        "/close" => Response::text(200, "bye").with_header("Connection", "close"),
        "/sleep" => {
            let ms = request
                .query
                .as_deref()
                .and_then(|q| q.strip_prefix("ms="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            std::thread::sleep(Duration::from_millis(ms));
            Response::text(200, "slept")
        }
        "/big" => {
            let n = request
                .query
                .as_deref()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1 << 20);
            Response::bytes(200, "application/octet-stream", vec![b'x'; n])
        }
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

pub fn test_config() -> ServerConfig {
    ServerConfig {
        io_threads: 2,
        workers: 2,
        queue_capacity: 4,
        limits: Limits {
            max_header_bytes: 2048,
            max_headers: 16,
            max_body_bytes: 1024,
            max_requests_per_connection: 100,
        },
        timeouts: Timeouts {
            header: Duration::from_secs(3),
            body: Duration::from_secs(3),
            send: Duration::from_secs(3),
            keep_alive: Duration::from_secs(2),
            ..Timeouts::default()
        },
        ..ServerConfig::default()
    }
}

pub fn start(config: ServerConfig) -> (ServerHandle, SocketAddr) {
    let server = Server::bind("127.0.0.1:0", config).expect("bind");
    let handle = server.spawn(echo).expect("spawn");
    let addr = handle.local_addr();
    (handle, addr)
}
