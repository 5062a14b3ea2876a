//! Streaming HTTP/1.x request parsing: bytes go in as they arrive, complete requests come out
//! in order (pipelining), bounded by [`Limits`].

use crate::error::HttpError;
use crate::request::{Limits, Request, Version};

/// Longest accepted chunk-size line (size plus extensions).
const MAX_CHUNK_LINE: usize = 4096;

/// Bytes of a head parsed before its first line is complete (enough to refuse a TLS hello or
/// other garbage at once).
const FIRST_BYTES: usize = 16;

/// Body capacity reserved ahead of the bytes that arrived; it then doubles, never beyond the
/// declared length (or `max_body_bytes` for chunked bodies).
const BODY_RESERVE: usize = 64 * 1024;

/// Where the next parse of a head (or trailer section) ends: after its last complete line, or
/// at [`FIRST_BYTES`] while no line is complete. A head is parsed again only when that point
/// moves, so a client that trickles its head byte by byte costs one parse per line, not one
/// per byte, and the outcome does not depend on how the bytes were split.
#[derive(Debug, Default, Clone, Copy)]
struct LineScan {
    /// Bytes already searched for line ends.
    scanned: usize,
    /// End of the last complete line.
    lines_end: usize,
    /// End of the window parsed last.
    parsed: usize,
}

impl LineScan {
    /// The end of the window to parse now, or `None` if it is the one parsed last.
    fn next_window(&mut self, buf: &[u8]) -> Option<usize> {
        if let Some(new) = buf.get(self.scanned..)
            && let Some(at) = new.iter().rposition(|&b| b == b'\n')
        {
            self.lines_end = self.scanned + at + 1;
        }
        self.scanned = buf.len();
        let window = self.lines_end.max(buf.len().min(FIRST_BYTES));
        if window == self.parsed {
            return None;
        }
        self.parsed = window;
        Some(window)
    }
}

/// Incremental request parser for one connection.
///
/// Feed bytes with [`push`](Self::push) and take requests with
/// [`next_request`](Self::next_request) until it returns `Ok(None)` (more bytes needed).
/// An error is final: every later call returns it again, and the connection should be
/// answered with the error and closed.
#[derive(Debug)]
pub struct RequestParser {
    limits: Limits,
    buf: Vec<u8>,
    /// How far the head at the start of `buf` was parsed.
    head_scan: LineScan,
    state: State,
    continue_pending: bool,
    failed: Option<HttpError>,
}

#[derive(Debug)]
enum State {
    /// Waiting for a complete request head.
    Head,
    /// The head is parsed; the body is still arriving.
    Body { request: Request, framing: Framing },
}

#[derive(Debug)]
enum Framing {
    Length { remaining: usize },
    Chunked(Chunk),
}

#[derive(Debug)]
enum Chunk {
    Size,
    Data { remaining: u64 },
    DataEnd,
    Trailers(LineScan),
}

impl RequestParser {
    /// A parser with nothing buffered.
    pub fn new(limits: Limits) -> Self {
        RequestParser {
            limits,
            buf: Vec::new(),
            head_scan: LineScan::default(),
            state: State::Head,
            continue_pending: false,
            failed: None,
        }
    }

    /// Appends bytes received from the client.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whether no part of a request has been received (nothing buffered, no body pending).
    pub fn is_idle(&self) -> bool {
        matches!(self.state, State::Head) && self.buf.is_empty()
    }

    /// Body bytes received so far while a request's body is still arriving; `None` before the
    /// head is complete and between requests.
    pub fn body_progress(&self) -> Option<usize> {
        match &self.state {
            State::Head => None,
            State::Body { request, .. } => Some(request.body.len()),
        }
    }

    /// Releases buffer capacity beyond `keep` bytes while nothing is buffered, so that an idle
    /// connection holds only a few bytes.
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.buf.is_empty() && self.buf.capacity() > keep {
            self.buf = Vec::new();
        }
    }

    /// Bytes received but not yet consumed by a request.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Bytes of memory held or promised: the receive buffer and a request whose body is
    /// arriving, counting a declared `Content-Length` whole from the moment the head is parsed
    /// (so that the caller can refuse it before the body is read).
    pub fn footprint(&self) -> usize {
        let pending = match &self.state {
            State::Head => 0,
            State::Body { request, framing } => {
                let declared = match framing {
                    Framing::Length { remaining } => request.body.len().saturating_add(*remaining),
                    Framing::Chunked(_) => 0,
                };
                request.footprint() + declared.saturating_sub(request.body.capacity())
            }
        };
        self.buf.capacity() + pending
    }

    /// True once per request whose head carried `Expect: 100-continue` (HTTP/1.1) while its
    /// body has not fully arrived: the caller should then send `100 Continue`.
    pub fn take_continue(&mut self) -> bool {
        std::mem::take(&mut self.continue_pending)
    }

    /// The next complete request, `Ok(None)` when more bytes are needed.
    pub fn next_request(&mut self) -> Result<Option<Request>, HttpError> {
        if let Some(error) = &self.failed {
            return Err(error.clone());
        }
        let result = self.advance();
        if let Err(error) = &result {
            self.failed = Some(error.clone());
            self.continue_pending = false;
        }
        result
    }

    fn advance(&mut self) -> Result<Option<Request>, HttpError> {
        if matches!(self.state, State::Head) {
            let window = self.head_scan.next_window(&self.buf);
            // Past the head limit the whole buffer is parsed (`parse_head` looks at the first
            // limit + 1 bytes only): a malformed byte within them is a 400, else the head is too
            // large, also when it arrived in pieces that never completed a line.
            let window = match window {
                _ if self.buf.len() > self.limits.max_header_bytes => self.buf.len(),
                Some(window) => window,
                None => return Ok(None),
            };
            let Some(head) = parse_head(
                self.buf.get(..window).unwrap_or_default(),
                self.buf.len(),
                &self.limits,
            )?
            else {
                return Ok(None);
            };
            self.buf.drain(..head.consumed);
            self.head_scan = LineScan::default();
            match head.framing {
                None => return Ok(Some(head.request)),
                Some(framing) => {
                    self.continue_pending = head.expect_continue;
                    self.state = State::Body {
                        request: head.request,
                        framing,
                    };
                }
            }
        }
        let State::Body { request, framing } = &mut self.state else {
            return Ok(None);
        };
        let (consumed, done) = advance_body(
            &mut request.body,
            &mut request.trailers,
            framing,
            &self.buf,
            &self.limits,
        )?;
        self.buf.drain(..consumed);
        if !done {
            return Ok(None);
        }
        self.continue_pending = false;
        match std::mem::replace(&mut self.state, State::Head) {
            State::Body { request, .. } => Ok(Some(request)),
            State::Head => Ok(None),
        }
    }
}

/// A parsed request head.
struct Head {
    request: Request,
    /// `None` when the request has no body (or an empty one).
    framing: Option<Framing>,
    consumed: usize,
    expect_continue: bool,
}

fn bad(message: impl Into<String>) -> HttpError {
    HttpError::BadRequest(message.into())
}

/// Parses the head at the start of `buf` (the window to parse of `buffered` bytes received).
fn parse_head(buf: &[u8], buffered: usize, limits: &Limits) -> Result<Option<Head>, HttpError> {
    // Nothing past the head limit is looked at: a head that is still incomplete there is too
    // large (431) whatever follows, also a malformed byte, however the bytes arrived (found by
    // `cargo xtask fuzz`, http_request: a bad byte beyond the limit gave 400 or 431).
    let buf = buf
        .get(..limits.max_header_bytes.saturating_add(1))
        .unwrap_or(buf);
    let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut parsed = httparse::Request::new(&mut fields);
    let consumed = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) => {
            if buffered > limits.max_header_bytes {
                return Err(HttpError::HeadersTooLarge);
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::HeadersTooLarge),
        // Whether a bad version is unsupported (505) or malformed (400) shows only once the
        // request line is whole: until then wait, so the answer does not depend on how the
        // bytes arrived (found by `cargo xtask fuzz`, http_request).
        Err(httparse::Error::Version) if buf.contains(&b'\n') => return Err(version_error(buf)),
        Err(httparse::Error::Version) if buffered > limits.max_header_bytes => {
            return Err(HttpError::HeadersTooLarge);
        }
        Err(httparse::Error::Version) => return Ok(None),
        Err(error) => return Err(bad(error.to_string())),
    };
    if consumed > limits.max_header_bytes {
        return Err(HttpError::HeadersTooLarge);
    }
    let version = match parsed.version {
        Some(0) => Version::Http10,
        Some(1) => Version::Http11,
        _ => return Err(HttpError::VersionNotSupported),
    };
    let method = parsed
        .method
        .ok_or_else(|| bad("missing method"))?
        .to_string();
    let (path, query) = split_target(parsed.path.ok_or_else(|| bad("missing target"))?)?;
    let headers = convert_fields(parsed.headers)?;
    // RFC 9112 §3.2: an HTTP/1.1 request without exactly one Host field is a 400 (HTTP/1.0
    // clients may omit it).
    let hosts = headers.iter().filter(|(name, _)| name == "host").count();
    if hosts > 1 || (hosts == 0 && version == Version::Http11) {
        return Err(bad(if hosts > 1 {
            "more than one Host header"
        } else {
            "HTTP/1.1 request without Host"
        }));
    }
    let mut request = Request {
        method,
        path,
        query,
        version,
        headers,
        trailers: Vec::new(),
        body: Vec::new(),
    };

    let framing = body_framing(&request, limits)?;
    let expects_body = match &framing {
        Some(Framing::Length { remaining }) => *remaining > 0,
        Some(Framing::Chunked(_)) => true,
        None => false,
    };
    let mut expect_continue = false;
    for value in request.header_values("expect") {
        if !value.eq_ignore_ascii_case("100-continue") {
            return Err(HttpError::ExpectationFailed(value.to_string()));
        }
        expect_continue = version == Version::Http11 && expects_body;
    }
    let framing = match framing {
        Some(Framing::Length { remaining: 0 }) | None => None,
        Some(Framing::Length { remaining }) => {
            // The declared length is charged by the caller (`footprint`) before it is reserved.
            request.body.reserve_exact(remaining.min(BODY_RESERVE));
            Some(Framing::Length { remaining })
        }
        chunked => chunked,
    };
    Ok(Some(Head {
        request,
        framing,
        consumed,
        expect_continue,
    }))
}

/// 505 when the request line ends in something shaped like `HTTP/x.y`, 400 otherwise.
fn version_error(buf: &[u8]) -> HttpError {
    let line_end = buf.iter().position(|&b| b == b'\n').unwrap_or(buf.len());
    let line = String::from_utf8_lossy(buf.get(..line_end).unwrap_or(buf));
    let looks_like_http = line
        .split_ascii_whitespace()
        .nth(2)
        .is_some_and(|token| token.starts_with("HTTP/"));
    if looks_like_http {
        HttpError::VersionNotSupported
    } else {
        bad("invalid HTTP version")
    }
}

/// Splits an origin-form or absolute-form target into path and query.
fn split_target(target: &str) -> Result<(String, Option<String>), HttpError> {
    if target == "*" {
        return Ok(("*".to_string(), None));
    }
    let origin = if target.starts_with('/') {
        target
    } else {
        let lower = target.get(..8).unwrap_or(target).to_ascii_lowercase();
        let after_scheme = if lower.starts_with("http://") {
            &target[7..]
        } else if lower.starts_with("https://") {
            &target[8..]
        } else {
            return Err(bad("invalid request target"));
        };
        match after_scheme.find(['/', '?']) {
            Some(index) => &after_scheme[index..],
            None => "/",
        }
    };
    let (path, query) = match origin.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (origin, None),
    };
    let path = if path.is_empty() { "/" } else { path };
    Ok((path.to_string(), query))
}

fn convert_fields(fields: &[httparse::Header<'_>]) -> Result<Vec<(String, String)>, HttpError> {
    fields
        .iter()
        .map(|field| {
            let value = std::str::from_utf8(field.value)
                .map_err(|_| bad(format!("header {} is not UTF-8", field.name)))?;
            Ok((field.name.to_ascii_lowercase(), value.trim().to_string()))
        })
        .collect()
}

/// How the body is delimited, per RFC 9112 §6.
fn body_framing(request: &Request, limits: &Limits) -> Result<Option<Framing>, HttpError> {
    let has_transfer_encoding = request.header("transfer-encoding").is_some();
    let content_length = content_length(request)?;
    if has_transfer_encoding && content_length.is_some() {
        return Err(bad("both Transfer-Encoding and Content-Length"));
    }
    if has_transfer_encoding {
        let codings: Vec<String> = request
            .header_values("transfer-encoding")
            .flat_map(|v| v.split(','))
            .map(|c| c.trim().to_ascii_lowercase())
            .filter(|c| !c.is_empty())
            .collect();
        if let Some(unknown) = codings.iter().find(|c| *c != "chunked") {
            return Err(HttpError::NotImplemented(format!(
                "transfer coding {unknown}"
            )));
        }
        if codings.len() != 1 {
            return Err(bad("invalid Transfer-Encoding"));
        }
        return Ok(Some(Framing::Chunked(Chunk::Size)));
    }
    match content_length {
        Some(length) if length > limits.max_body_bytes => Err(HttpError::PayloadTooLarge {
            limit: limits.max_body_bytes,
        }),
        Some(length) => Ok(Some(Framing::Length { remaining: length })),
        None => Ok(None),
    }
}

/// The Content-Length, which must be identical across repeated fields and list elements.
fn content_length(request: &Request) -> Result<Option<usize>, HttpError> {
    let mut length = None;
    for element in request
        .header_values("content-length")
        .flat_map(|v| v.split(','))
    {
        let element = element.trim();
        if element.is_empty() || !element.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad("invalid Content-Length"));
        }
        let value: usize = element
            .parse()
            .map_err(|_| bad("Content-Length out of range"))?;
        match length {
            Some(previous) if previous != value => return Err(bad("conflicting Content-Length")),
            _ => length = Some(value),
        }
    }
    Ok(length)
}

/// Consumes body bytes from `buf`; returns how many were consumed and whether the body is done.
fn advance_body(
    body: &mut Vec<u8>,
    trailers: &mut Vec<(String, String)>,
    framing: &mut Framing,
    buf: &[u8],
    limits: &Limits,
) -> Result<(usize, bool), HttpError> {
    let chunk = match framing {
        Framing::Length { remaining } => {
            let take = (*remaining).min(buf.len());
            let ceiling = body.len().saturating_add(*remaining);
            grow_body(body, take, ceiling);
            body.extend_from_slice(buf.get(..take).unwrap_or_default());
            *remaining -= take;
            return Ok((take, *remaining == 0));
        }
        Framing::Chunked(chunk) => chunk,
    };
    let mut pos = 0;
    loop {
        let rest = buf.get(pos..).unwrap_or_default();
        match chunk {
            Chunk::Size => {
                let Some(&first) = rest.first() else {
                    return Ok((pos, false));
                };
                if !first.is_ascii_hexdigit() {
                    return Err(bad("invalid chunk size"));
                }
                match httparse::parse_chunk_size(rest) {
                    Ok(httparse::Status::Complete((used, size))) => {
                        pos += used;
                        let total = (body.len() as u64).saturating_add(size);
                        if total > limits.max_body_bytes as u64 {
                            return Err(HttpError::PayloadTooLarge {
                                limit: limits.max_body_bytes,
                            });
                        }
                        *chunk = if size == 0 {
                            Chunk::Trailers(LineScan::default())
                        } else {
                            Chunk::Data { remaining: size }
                        };
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > MAX_CHUNK_LINE {
                            return Err(bad("chunk size line too long"));
                        }
                        return Ok((pos, false));
                    }
                    Err(_) => return Err(bad("invalid chunk size")),
                }
            }
            Chunk::Data { remaining } => {
                if rest.is_empty() {
                    return Ok((pos, false));
                }
                // `remaining` fits in usize: it was checked against max_body_bytes.
                let take = usize::try_from(*remaining)
                    .unwrap_or(usize::MAX)
                    .min(rest.len());
                grow_body(body, take, limits.max_body_bytes);
                body.extend_from_slice(rest.get(..take).unwrap_or_default());
                pos += take;
                *remaining -= take as u64;
                if *remaining == 0 {
                    *chunk = Chunk::DataEnd;
                }
            }
            Chunk::DataEnd => {
                if rest.starts_with(b"\r\n") {
                    pos += 2;
                    *chunk = Chunk::Size;
                } else if rest.is_empty() || rest == b"\r" {
                    return Ok((pos, false));
                } else {
                    return Err(bad("chunk data not followed by CRLF"));
                }
            }
            Chunk::Trailers(scan) => {
                // The trailer section starts at `pos`; later calls see it at the start of `buf`.
                // As for heads: past the limit its first limit + 1 bytes are parsed whatever
                // lines they hold, so a malformed byte within them is a 400 and anything else
                // is too large, however the bytes arrived (found by `cargo xtask fuzz`,
                // http_request: a bad byte on a trailer line ending beyond the limit gave 400
                // or 431).
                let window = match scan.next_window(rest) {
                    _ if rest.len() > limits.max_header_bytes => rest.len(),
                    Some(window) => window,
                    None => return Ok((pos, false)),
                };
                let section = rest.get(..window).unwrap_or_default();
                let section = section
                    .get(..limits.max_header_bytes.saturating_add(1))
                    .unwrap_or(section);
                let mut fields = vec![httparse::EMPTY_HEADER; limits.max_headers];
                return match httparse::parse_headers(section, &mut fields) {
                    Ok(httparse::Status::Complete((used, parsed))) => {
                        if used > limits.max_header_bytes {
                            return Err(HttpError::HeadersTooLarge);
                        }
                        *trailers = convert_fields(parsed)?;
                        Ok((pos + used, true))
                    }
                    Ok(httparse::Status::Partial) => {
                        if rest.len() > limits.max_header_bytes {
                            return Err(HttpError::HeadersTooLarge);
                        }
                        Ok((pos, false))
                    }
                    Err(httparse::Error::TooManyHeaders) => Err(HttpError::HeadersTooLarge),
                    Err(error) => Err(bad(format!("invalid trailer: {error}"))),
                };
            }
        }
    }
}

/// Makes room in `body` for `additional` more bytes: at least doubling (from [`BODY_RESERVE`])
/// so that appends stay amortized, never beyond `ceiling` bytes of capacity.
fn grow_body(body: &mut Vec<u8>, additional: usize, ceiling: usize) {
    let needed = body.len().saturating_add(additional);
    if needed <= body.capacity() {
        return;
    }
    let target = body
        .capacity()
        .saturating_mul(2)
        .max(BODY_RESERVE)
        .min(ceiling)
        .max(needed);
    body.reserve_exact(target - body.len());
}

#[cfg(test)]
mod tests;
