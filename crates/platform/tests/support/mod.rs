//! Helpers shared by the platform's integration tests.

use http_front::{Request, Version};

/// A request as the HTTP front hands it over: `target` may carry a query, `bearer` adds an
/// `Authorization: Bearer` header.
pub fn request(
    method: &str,
    target: &str,
    body: Vec<u8>,
    host: &str,
    bearer: Option<&str>,
) -> Request {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query.to_string())),
        None => (target, None),
    };
    let mut headers = vec![("host".to_string(), host.to_string())];
    if let Some(token) = bearer {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    Request {
        method: method.into(),
        path: path.into(),
        query,
        version: Version::Http11,
        headers,
        trailers: Vec::new(),
        body,
    }
}
