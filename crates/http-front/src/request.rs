//! A parsed request and the per-connection limits that bound parsing.

/// Fixed bounds on what one connection may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Maximum size of the request line plus header fields (and of a chunked trailer section).
    pub max_header_bytes: usize,
    /// Maximum number of header fields (and of trailer fields).
    pub max_headers: usize,
    /// Maximum decoded body size.
    pub max_body_bytes: usize,
    /// Requests served on one connection before it is closed.
    pub max_requests_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            max_headers: 64,
            max_body_bytes: 4 * 1024 * 1024,
            max_requests_per_connection: 1000,
        }
    }
}

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// HTTP/1.0: the connection closes after the response unless `Connection: keep-alive`.
    Http10,
    /// HTTP/1.1: persistent unless `Connection: close`.
    Http11,
}

impl Version {
    /// `HTTP/1.0` or `HTTP/1.1`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::Http10 => "HTTP/1.0",
            Version::Http11 => "HTTP/1.1",
        }
    }
}

/// A complete request with its decoded body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method as sent (methods are case-sensitive), e.g. `GET`.
    pub method: String,
    /// The path, still percent-encoded, always starting with `/` (or exactly `*`).
    /// An absolute-form target (`http://host/p`) is reduced to its path.
    pub path: String,
    /// The query after `?`, still percent-encoded; `None` when the target has no `?`.
    pub query: Option<String>,
    /// The protocol version.
    pub version: Version,
    /// Header fields in arrival order; names lower-cased, values trimmed UTF-8.
    pub headers: Vec<(String, String)>,
    /// Trailer fields of a chunked body (same form as `headers`).
    pub trailers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.header_values(name).next()
    }

    /// All values of header `name` (case-insensitive), in arrival order.
    pub fn header_values<'a, 'n>(
        &'a self,
        name: &'n str,
    ) -> impl Iterator<Item = &'a str> + use<'a, 'n> {
        self.headers
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (such as `Connection`) contains `token`
    /// (case-insensitive).
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.header_values(name)
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// Whether the client wants the connection kept open after this request.
    pub fn keep_alive(&self) -> bool {
        match self.version {
            Version::Http11 => !self.header_has_token("connection", "close"),
            Version::Http10 => self.header_has_token("connection", "keep-alive"),
        }
    }

    /// Whether this is a `HEAD` request (the response carries no body).
    pub fn is_head(&self) -> bool {
        self.method == "HEAD"
    }

    /// Bytes of memory this request holds (strings, fields and body), for buffer accounting.
    pub fn footprint(&self) -> usize {
        let fields = |fields: &[(String, String)]| -> usize {
            fields
                .iter()
                .map(|(name, value)| name.capacity() + value.capacity() + 48)
                .sum()
        };
        std::mem::size_of::<Request>()
            + self.method.capacity()
            + self.path.capacity()
            + self.query.as_ref().map_or(0, String::capacity)
            + fields(&self.headers)
            + fields(&self.trailers)
            + self.body.capacity()
    }

    /// The request target as path plus `?query`.
    pub fn target(&self) -> String {
        match &self.query {
            Some(query) => format!("{}?{query}", self.path),
            None => self.path.clone(),
        }
    }
}
