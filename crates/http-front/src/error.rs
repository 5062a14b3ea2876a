//! The one place where protocol and handler errors become HTTP statuses.

use crate::response::Response;

/// An error that ends in an HTTP error response.
///
/// Protocol errors found by the parser close the connection after the response;
/// handlers may also return these through [`HttpError::to_response`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request is syntactically wrong (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The client took too long to send a complete request (408).
    #[error("request timeout")]
    RequestTimeout,
    /// The body is larger than the configured limit (413).
    #[error(
        "request body larger than the server's max-body={limit} bytes; boot the server with a \
         larger max-body= (e.g. max-body=16m)"
    )]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request head is larger than allowed or has too many fields (431).
    #[error("request header fields too large")]
    HeadersTooLarge,
    /// An `Expect` value other than `100-continue` (417).
    #[error("unsupported expectation: {0}")]
    ExpectationFailed(String),
    /// A transfer coding the server does not implement (501).
    #[error("not implemented: {0}")]
    NotImplemented(String),
    /// An HTTP version other than 1.0 and 1.1 (505).
    #[error("HTTP version not supported")]
    VersionNotSupported,
    /// No resource at this path (404).
    #[error("not found")]
    NotFound,
    /// The resource does not support this method (405).
    #[error("method not allowed")]
    MethodNotAllowed,
    /// All workers are busy and the queue is full (503).
    #[error("server busy, retry later")]
    ServiceUnavailable,
    /// The server's memory for request and response buffers (`buffer-budget`) is used up by
    /// other connections (503).
    #[error("server buffer memory exhausted ({limit} bytes), retry later")]
    BuffersFull {
        /// The budget in bytes.
        limit: usize,
    },
    /// The handler failed (500).
    #[error("internal server error: {0}")]
    Internal(String),
}

impl HttpError {
    /// The status code this error is answered with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::BadRequest(_) => 400,
            HttpError::NotFound => 404,
            HttpError::MethodNotAllowed => 405,
            HttpError::RequestTimeout => 408,
            HttpError::PayloadTooLarge { .. } => 413,
            HttpError::ExpectationFailed(_) => 417,
            HttpError::HeadersTooLarge => 431,
            HttpError::Internal(_) => 500,
            HttpError::NotImplemented(_) => 501,
            HttpError::ServiceUnavailable | HttpError::BuffersFull { .. } => 503,
            HttpError::VersionNotSupported => 505,
        }
    }

    /// The JSON error response `{"error": "...", "status": N}`.
    pub fn to_response(&self) -> Response {
        let response = Response::error(self.status(), &self.to_string());
        if self.status() == 503 {
            response.with_header("Retry-After", "1")
        } else {
            response
        }
    }
}

/// The reason phrase for a status code (empty for unknown codes, which HTTP allows).
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_and_json_body() {
        let cases = [
            (HttpError::BadRequest("x".into()), 400),
            (HttpError::RequestTimeout, 408),
            (HttpError::PayloadTooLarge { limit: 1 }, 413),
            (HttpError::HeadersTooLarge, 431),
            (HttpError::NotImplemented("gzip".into()), 501),
            (HttpError::VersionNotSupported, 505),
            (HttpError::ServiceUnavailable, 503),
            (HttpError::BuffersFull { limit: 9 }, 503),
        ];
        for (error, status) in cases {
            assert_eq!(error.status(), status);
            let response = error.to_response();
            assert_eq!(response.status, status);
            let body: serde_json::Value =
                serde_json::from_slice(&response.body).expect("error body is JSON");
            assert_eq!(body["status"], status);
            assert_eq!(body["error"], error.to_string());
        }
        assert_eq!(
            HttpError::ServiceUnavailable
                .to_response()
                .header("retry-after"),
            Some("1")
        );
        assert_eq!(
            HttpError::BuffersFull { limit: 9 }
                .to_response()
                .header("retry-after"),
            Some("1")
        );
        // A 413 names the knob and how to turn it.
        let too_large = HttpError::PayloadTooLarge { limit: 4096 }.to_string();
        assert!(
            too_large.contains("max-body=4096") && too_large.contains("boot the server with"),
            "{too_large}"
        );
        assert_eq!(reason_phrase(431), "Request Header Fields Too Large");
        assert_eq!(reason_phrase(799), "");
    }
}
