//! Route patterns registered by guests (`/items/:id`) and matching request paths against them.

use crate::bindings::http_types::Method;

/// One registered route: method, pattern and the name of the handler that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The request method this route answers.
    pub method: Method,
    /// The pattern as registered, e.g. `/items/:id`.
    pub pattern: String,
    /// The handler name passed to the guest's `handle-http`.
    pub handler: String,
}

/// Why a route pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Patterns start with `/`.
    #[error("route \"{}\" does not start with '/'", sandbox::Clipped(.0))]
    NoLeadingSlash(String),
    /// A `:` segment needs a name.
    #[error("route \"{}\" has a parameter without a name", sandbox::Clipped(.0))]
    UnnamedParam(String),
    /// Handler names are not empty.
    #[error("route \"{}\" has an empty handler name", sandbox::Clipped(.0))]
    EmptyHandler(String),
}

/// A successful match: which handler answers and the route parameters it captured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch {
    /// The handler name.
    pub handler: String,
    /// `(name, value)` for every `:name` segment.
    pub params: Vec<(String, String)>,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

impl Route {
    /// Checks the pattern and handler name.
    pub fn new(method: Method, pattern: &str, handler: &str) -> Result<Self, RouteError> {
        if !pattern.starts_with('/') {
            return Err(RouteError::NoLeadingSlash(pattern.into()));
        }
        if segments(pattern).any(|s| s == ":") {
            return Err(RouteError::UnnamedParam(pattern.into()));
        }
        if handler.is_empty() {
            return Err(RouteError::EmptyHandler(pattern.into()));
        }
        Ok(Self {
            method,
            pattern: pattern.into(),
            handler: handler.into(),
        })
    }

    /// Matches `path` (without query), returning the captured parameters.
    pub fn matches(&self, method: Method, path: &str) -> Option<Vec<(String, String)>> {
        if method != self.method {
            return None;
        }
        let mut params = Vec::new();
        let mut pattern = segments(&self.pattern);
        let mut actual = segments(path);
        loop {
            match (pattern.next(), actual.next()) {
                (None, None) => return Some(params),
                (Some(p), Some(a)) => {
                    if let Some(name) = p.strip_prefix(':') {
                        params.push((name.to_string(), percent_decode(a)));
                    } else if p != a {
                        return None;
                    }
                }
                _ => return None,
            }
        }
    }
}

/// Finds the first route answering `method path`.
pub fn find(routes: &[Route], method: Method, path: &str) -> Option<RouteMatch> {
    routes.iter().find_map(|r| {
        r.matches(method, path).map(|params| RouteMatch {
            handler: r.handler.clone(),
            params,
        })
    })
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    let hex = |b: Option<&u8>| b.and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.as_bytes().iter().peekable();
    while let Some(&b) = bytes.next() {
        match b {
            b'%' => {
                let mut ahead = bytes.clone();
                match (hex(ahead.next()), hex(ahead.next())) {
                    (Some(high), Some(low)) => {
                        out.push((high * 16 + low) as u8);
                        bytes = ahead;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits a query string into decoded `(name, value)` pairs.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn params_are_captured_and_literals_must_match() {
        let r = Route::new(Method::Get, "/items/:id", "get_item").unwrap();
        assert_eq!(
            r.matches(Method::Get, "/items/7"),
            Some(vec![("id".into(), "7".into())])
        );
        assert_eq!(
            r.matches(Method::Get, "/items/a%20b"),
            Some(vec![("id".into(), "a b".into())])
        );
        assert_eq!(r.matches(Method::Get, "/items"), None);
        assert_eq!(r.matches(Method::Get, "/items/7/x"), None);
        assert_eq!(r.matches(Method::Get, "/other/7"), None);
        assert_eq!(r.matches(Method::Post, "/items/7"), None);
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert!(Route::new(Method::Get, "items", "h").is_err());
        assert!(Route::new(Method::Get, "/a/:", "h").is_err());
        assert!(Route::new(Method::Get, "/a", "").is_err());
    }

    #[test]
    fn first_route_wins_and_queries_decode() {
        let routes = vec![
            Route::new(Method::Get, "/a/b", "exact").unwrap(),
            Route::new(Method::Get, "/a/:x", "param").unwrap(),
        ];
        assert_eq!(find(&routes, Method::Get, "/a/b").unwrap().handler, "exact");
        assert_eq!(find(&routes, Method::Get, "/a/c").unwrap().handler, "param");
        assert_eq!(
            query_pairs("x=1&y=a+b&z&w=%41"),
            vec![
                ("x".into(), "1".into()),
                ("y".into(), "a b".into()),
                ("z".into(), String::new()),
                ("w".into(), "A".into())
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
