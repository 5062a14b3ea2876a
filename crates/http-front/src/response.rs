//! Responses and their serialization.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::error::reason_phrase;
use crate::request::Version;

/// A response built by a [`Handler`](crate::Handler).
///
/// `Content-Length`, `Connection` and `Transfer-Encoding` are managed by the server; values
/// for them set here are ignored, except `Connection: close`, which closes the connection
/// after this response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header fields in order.
    pub headers: Vec<(String, String)>,
    /// The body (not sent for `HEAD`, 1xx, 204 and 304).
    pub body: Vec<u8>,
}

impl Response {
    /// A response with no headers and an empty body.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A body with the given content type.
    pub fn bytes(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Self {
        Response::new(status)
            .with_header("Content-Type", content_type)
            .with_body(body)
    }

    /// A `text/plain; charset=utf-8` body.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::bytes(status, "text/plain; charset=utf-8", body.into())
    }

    /// An `application/json` body.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Response::bytes(status, "application/json", value.to_string())
    }

    /// The JSON error body `{"error": message, "status": status}`.
    pub fn error(status: u16, message: &str) -> Self {
        Response::json(
            status,
            &serde_json::json!({ "error": message, "status": status }),
        )
    }

    /// Adds a header field.
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Replaces the body.
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether the handler asked to close the connection (`Connection: close`).
    pub fn wants_close(&self) -> bool {
        self.headers.iter().any(|(n, v)| {
            n.eq_ignore_ascii_case("connection")
                && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
        })
    }

    /// Whether this status never carries a body.
    fn is_bodiless(&self) -> bool {
        (100..200).contains(&self.status) || self.status == 204 || self.status == 304
    }

    /// Serializes the response as HTTP/1.1.
    ///
    /// `head_only` drops the body but keeps its `Content-Length` (the answer to `HEAD`);
    /// `keep_alive` decides the `Connection` header for the request's `version`;
    /// `date` adds a `Date` field.
    pub fn serialize(
        &self,
        head_only: bool,
        keep_alive: bool,
        version: Version,
        date: Option<&str>,
    ) -> Vec<u8> {
        let bodiless = self.is_bodiless();
        let send_body = !head_only && !bodiless;
        let mut out = Vec::with_capacity(
            128 + self.headers.len() * 32 + if send_body { self.body.len() } else { 0 },
        );
        out.extend_from_slice(
            format!(
                "HTTP/1.1 {} {}\r\n",
                self.status,
                reason_phrase(self.status)
            )
            .as_bytes(),
        );
        // Invalid headers are dropped with one log line per response, whatever their number.
        let (mut invalid, mut first_invalid) = (0usize, "");
        for (name, value) in &self.headers {
            if ["content-length", "connection", "transfer-encoding"]
                .iter()
                .any(|managed| name.eq_ignore_ascii_case(managed))
            {
                continue;
            }
            if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
                invalid += 1;
                if invalid == 1 {
                    first_invalid = name;
                }
                continue;
            }
            push_field(&mut out, name, value);
        }
        if invalid > 0 {
            let first: String = first_invalid.chars().take(64).collect();
            log::warn!("dropped {invalid} invalid response header(s), the first named {first:?}");
        }
        if let Some(date) = date {
            push_field(&mut out, "Date", date);
        }
        if !bodiless {
            push_field(&mut out, "Content-Length", &self.body.len().to_string());
        }
        if !keep_alive {
            push_field(&mut out, "Connection", "close");
        } else if version == Version::Http10 {
            push_field(&mut out, "Connection", "keep-alive");
        }
        out.extend_from_slice(b"\r\n");
        if send_body {
            out.extend_from_slice(&self.body);
        }
        out
    }
}

fn push_field(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Whether `name` is a valid header field name (RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    http_date(seconds)
}

/// Formats seconds since the Unix epoch as an IMF-fixdate.
pub fn http_date(unix_seconds: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = unix_seconds / 86_400;
    let time = unix_seconds % 86_400;
    let (year, month, day) = civil_from_days(days);
    let weekday = WEEKDAYS.get((days % 7) as usize).copied().unwrap_or("Thu");
    let month = MONTHS
        .get(month.saturating_sub(1) as usize)
        .copied()
        .unwrap_or("Jan");
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        weekday,
        day,
        month,
        year,
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so leap days fall at the end of each 400-year era.
    let z = days + 719_468;
    let era = z / 146_097;
    let day_of_era = z % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn serializes_length_and_connection() {
        let response = Response::text(200, "hello").with_header("X-Id", "7");
        let out = text_of(response.serialize(false, true, Version::Http11, None));
        assert_eq!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nX-Id: 7\r\n\
             Content-Length: 5\r\n\r\nhello"
        );
        let out = text_of(response.serialize(false, false, Version::Http11, None));
        assert!(out.contains("Connection: close\r\n"), "{out}");
        let out = text_of(response.serialize(false, true, Version::Http10, None));
        assert!(out.contains("Connection: keep-alive\r\n"), "{out}");
    }

    #[test]
    fn head_keeps_length_but_drops_body() {
        let out =
            text_of(Response::text(200, "hello").serialize(true, true, Version::Http11, None));
        assert!(out.ends_with("Content-Length: 5\r\n\r\n"), "{out}");
    }

    #[test]
    fn bodiless_statuses_have_no_length_or_body() {
        let out = text_of(Response::new(204).with_body("x").serialize(
            false,
            true,
            Version::Http11,
            None,
        ));
        assert_eq!(out, "HTTP/1.1 204 No Content\r\n\r\n");
    }

    #[test]
    fn managed_and_invalid_headers_are_dropped() {
        let response = Response::text(200, "ok")
            .with_header("Content-Length", "99")
            .with_header("Transfer-Encoding", "chunked")
            .with_header("X-Evil", "a\r\nSet-Cookie: x=1")
            .with_header("Bad Name", "v");
        let out = text_of(response.serialize(false, true, Version::Http11, Some("D")));
        assert!(!out.contains("99"), "{out}");
        assert!(!out.contains("chunked"), "{out}");
        assert!(!out.contains("Set-Cookie"), "{out}");
        assert!(!out.contains("Bad Name"), "{out}");
        assert!(out.contains("Date: D\r\nContent-Length: 2\r\n"), "{out}");
    }

    #[test]
    fn wants_close_reads_connection_header() {
        assert!(
            Response::new(200)
                .with_header("connection", "Close")
                .wants_close()
        );
        assert!(!Response::new(200).wants_close());
    }

    #[test]
    fn formats_http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(http_date(951_782_400), "Tue, 29 Feb 2000 00:00:00 GMT");
        assert_eq!(http_date(1_798_761_599), "Thu, 31 Dec 2026 23:59:59 GMT");
        assert_eq!(http_date_now().len(), 29);
    }
}
