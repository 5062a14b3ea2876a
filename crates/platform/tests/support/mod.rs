//! Helpers shared by the platform's integration tests.

use std::sync::Arc;

use http_front::{Request, Version};
use platform::app::AppOptions;
use platform::limits::FunctionLimits;

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

/// What the tests start a [`platform::app::App`] with: no root directory, `token` for the admin API, an
/// in-memory store without a quota of its own, default limits and a 1 GiB memory budget.
pub fn options(token: &str) -> AppOptions {
    AppOptions {
        root: None,
        admin_token: Some(token.into()),
        kv: Arc::new(keyvalue::MemoryStore::new()),
        default_limits: FunctionLimits::default(),
        memory_budget: 1 << 30,
        memory_in_use: || None,
    }
}
