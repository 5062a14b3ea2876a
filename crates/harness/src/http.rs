//! A small HTTP/1.1 client over raw TCP, independent of the server's own code: one request per
//! connection ([`request`], [`send`]), raw bytes ([`exchange`], [`parse_responses`]) or
//! keep-alive ([`read_response`]). Responses are parsed with `httparse`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header names (lower-cased) and values.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text()))
    }
}

/// Connects to 127.0.0.1:`port` with test timeouts.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(5),
    )?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.set_write_timeout(Some(Duration::from_secs(30)))?;
    Ok(stream)
}

/// Whether `GET /healthz` answers 200 within `timeout` (for polling a booting server: a fresh
/// attempt beats waiting for QEMU's user network to retransmit a SYN the guest dropped).
pub fn is_healthy(port: u16, timeout: Duration) -> bool {
    let probe = || -> std::io::Result<bool> {
        let mut stream = connect(port)?;
        stream.set_read_timeout(Some(timeout))?;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut buf = Vec::new();
        stream.read_to_end(&mut buf)?;
        Ok(parse_responses(&buf)?
            .first()
            .is_some_and(|r| r.status == 200))
    };
    probe().unwrap_or(false)
}

/// `GET path` with `Connection: close`.
pub fn get(port: u16, path: &str) -> std::io::Result<Response> {
    request(port, "GET", path, &[], b"")
}

/// Sends one request with `Connection: close` and reads the whole response.
pub fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<Response> {
    exchange(port, &request_bytes(method, path, headers, body))
}

/// The bytes of a request with `Connection: close` (and `Content-Length` when there is a body,
/// or always for POST and PUT).
pub fn request_bytes(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || matches!(method, "POST" | "PUT") {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// Writes `raw` bytes, reads until the server closes, and parses the first response.
pub fn exchange(port: u16, raw: &[u8]) -> std::io::Result<Response> {
    send(&mut connect(port)?, raw)
}

/// Like [`exchange`] on a stream the caller connected (its own address and timeouts).
pub fn send(stream: &mut TcpStream, raw: &[u8]) -> std::io::Result<Response> {
    stream.write_all(raw)?;
    let mut buf = Vec::new();
    stream.read_to_end(&mut buf)?;
    parse_responses(&buf)?
        .into_iter()
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "no response"))
}

/// What [`read_response`] tells about a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// Status code.
    pub status: u16,
    /// The server said `Connection: close`.
    pub closes: bool,
    /// Where the body lies in the buffer.
    pub body: std::ops::Range<usize>,
}

/// Reads one response with a `Content-Length` body (none without it) from a keep-alive
/// connection into `buf` (cleared first); allocates nothing else, for load generators.
pub fn read_response(stream: &mut impl Read, buf: &mut Vec<u8>) -> std::io::Result<Head> {
    buf.clear();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        match parsed.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) => {
                let mut head = Head {
                    status: parsed.code.unwrap_or(0),
                    closes: false,
                    body: head_len..head_len,
                };
                let mut length = 0;
                for header in parsed.headers.iter() {
                    if header.name.eq_ignore_ascii_case("content-length") {
                        length = std::str::from_utf8(header.value)
                            .ok()
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                    } else if header.name.eq_ignore_ascii_case("connection") {
                        head.closes = header.value.eq_ignore_ascii_case(b"close");
                    }
                }
                head.body.end = head_len + length;
                while buf.len() < head.body.end {
                    read_more(stream, &mut chunk, buf)?;
                }
                return Ok(head);
            }
            Ok(httparse::Status::Partial) => read_more(stream, &mut chunk, buf)?,
            Err(e) => {
                let message = format!("bad response: {e}");
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    message,
                ));
            }
        }
    }
}

/// Appends what one read gives to `buf`; end of stream is an error.
fn read_more(stream: &mut impl Read, chunk: &mut [u8], buf: &mut Vec<u8>) -> std::io::Result<()> {
    let n = stream.read(chunk)?;
    if n == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    Ok(())
}

/// Parses consecutive responses (pipelining, keep-alive) from `buf`; bodies are delimited by
/// `Content-Length`.
pub fn parse_responses(mut buf: &[u8]) -> std::io::Result<Vec<Response>> {
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    let mut out = Vec::new();
    while !buf.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Err(invalid("truncated response head".into())),
            Err(e) => return Err(invalid(format!("bad response: {e}"))),
        };
        let status = parsed.code.unwrap_or(0);
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_ascii_lowercase(),
                    String::from_utf8_lossy(h.value).into_owned(),
                )
            })
            .collect();
        let len = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(buf.len() - head_len);
        let end = head_len + len;
        if end > buf.len() {
            return Err(invalid(format!("body truncated: want {len} bytes")));
        }
        out.push(Response {
            status,
            headers,
            body: buf[head_len..end].to_vec(),
        });
        buf = &buf[end..];
    }
    Ok(out)
}
