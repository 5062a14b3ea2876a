//! Route patterns registered by guests (`/items/:id`, or Spin's `/items/{id}`) and matching
//! request paths against them.
//!
//! Every request is matched against every route of its function on the host, before the guest
//! runs: patterns are capped in size at registration ([`MAX_PATTERN_BYTES`], [`MAX_SEGMENTS`]),
//! a route is only compared with paths of as many segments as it has, and the comparison
//! allocates nothing; parameters are collected only for the route that matches.

use percent_encoding::percent_decode_str;

use crate::bindings::http_types::Method;

/// Longest route pattern a guest may register, in bytes.
pub const MAX_PATTERN_BYTES: usize = 1024;

/// Most segments (`/`-separated parts) a route pattern may have.
pub const MAX_SEGMENTS: usize = 32;

/// Longest handler name a guest may register, in bytes (copied for every request it answers).
pub const MAX_HANDLER_BYTES: usize = 256;

/// One registered route: method, pattern and the name of the handler that answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The request method this route answers.
    pub method: Method,
    /// The pattern as registered, e.g. `/items/:id`.
    pub pattern: String,
    /// The handler name passed to the guest's `handle-http`.
    pub handler: String,
    /// How many segments the pattern has: only paths with as many can match.
    segments: usize,
}

/// Why a route pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// Patterns start with `/`.
    #[error("route \"{}\" does not start with '/'", sandbox::Clipped(.0))]
    NoLeadingSlash(String),
    /// A `:` or `{}` segment needs a name.
    #[error("route \"{}\" has a parameter without a name", sandbox::Clipped(.0))]
    UnnamedParam(String),
    /// Braces that do not make a whole segment `{name}` (e.g. `/a{b}`, `{*rest}`, `{a}{b}`).
    #[error(
        "route \"{}\" has braces that are not a parameter: a parameter is a whole segment, \
         `{{name}}` or `:name`, whose name has letters, digits, - or _",
        sandbox::Clipped(.0)
    )]
    BadBraces(String),
    /// Handler names are not empty.
    #[error("route \"{}\" has an empty handler name", sandbox::Clipped(.0))]
    EmptyHandler(String),
    /// The pattern is longer than [`MAX_PATTERN_BYTES`].
    #[error("a route pattern of {bytes} bytes exceeds the limit of {MAX_PATTERN_BYTES}")]
    PatternTooLong {
        /// Its length.
        bytes: usize,
    },
    /// The pattern has more than [`MAX_SEGMENTS`] segments.
    #[error("a route pattern of {segments} segments exceeds the limit of {MAX_SEGMENTS}")]
    TooManySegments {
        /// How many it has.
        segments: usize,
    },
    /// The handler name is longer than [`MAX_HANDLER_BYTES`].
    #[error("a handler name of {bytes} bytes exceeds the limit of {MAX_HANDLER_BYTES}")]
    HandlerTooLong {
        /// Its length.
        bytes: usize,
    },
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

/// The parameter a pattern segment declares, `:name` or `{name}`; `None` for a literal.
fn param_name(segment: &str) -> Option<&str> {
    segment
        .strip_prefix(':')
        .or_else(|| segment.strip_prefix('{')?.strip_suffix('}'))
}

/// Whether a pattern segment is well formed: a literal without braces, or a named parameter
/// whose braced name has letters, digits, `-` or `_` only.
fn check_segment(pattern: &str, segment: &str) -> Result<(), RouteError> {
    match param_name(segment) {
        Some("") => Err(RouteError::UnnamedParam(pattern.into())),
        Some(name)
            if segment.starts_with('{')
                && !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(RouteError::BadBraces(pattern.into()))
        }
        None if segment.contains(['{', '}']) => Err(RouteError::BadBraces(pattern.into())),
        _ => Ok(()),
    }
}

impl Route {
    /// Checks the pattern and handler name.
    pub fn new(method: Method, pattern: &str, handler: &str) -> Result<Self, RouteError> {
        if !pattern.starts_with('/') {
            return Err(RouteError::NoLeadingSlash(pattern.into()));
        }
        if pattern.len() > MAX_PATTERN_BYTES {
            return Err(RouteError::PatternTooLong {
                bytes: pattern.len(),
            });
        }
        if handler.len() > MAX_HANDLER_BYTES {
            return Err(RouteError::HandlerTooLong {
                bytes: handler.len(),
            });
        }
        let count = segments(pattern).count();
        if count > MAX_SEGMENTS {
            return Err(RouteError::TooManySegments { segments: count });
        }
        for segment in segments(pattern) {
            check_segment(pattern, segment)?;
        }
        if handler.is_empty() {
            return Err(RouteError::EmptyHandler(pattern.into()));
        }
        Ok(Self {
            method,
            pattern: pattern.into(),
            handler: handler.into(),
            segments: count,
        })
    }

    /// Whether the segments of a path match, comparing without allocating.
    fn fits(&self, method: Method, path: &[&str]) -> bool {
        method == self.method && self.fits_path(path)
    }

    /// Whether the segments of a path match, whatever the method.
    fn fits_path(&self, path: &[&str]) -> bool {
        path.len() == self.segments
            && segments(&self.pattern)
                .zip(path)
                .all(|(p, a)| param_name(p).is_some() || p == *a)
    }

    /// The parameters captured from the segments of a path that [`Route::fits`].
    fn params(&self, path: &[&str]) -> Vec<(String, String)> {
        segments(&self.pattern)
            .zip(path)
            .filter_map(|(p, a)| param_name(p).map(|name| (name.to_string(), percent_decode(a))))
            .collect()
    }

    /// Matches `path` (without query), returning the captured parameters.
    pub fn matches(&self, method: Method, path: &str) -> Option<Vec<(String, String)>> {
        with_segments(path, |path| {
            self.fits(method, path).then(|| self.params(path))
        })
        .flatten()
    }
}

/// Calls `f` with the segments of `path`, split once on the stack; `None` when the path has
/// more segments than any route may have.
fn with_segments<T>(path: &str, f: impl FnOnce(&[&str]) -> T) -> Option<T> {
    let mut parts = [""; MAX_SEGMENTS];
    let mut all = segments(path);
    let mut count = 0;
    for (slot, segment) in parts.iter_mut().zip(&mut all) {
        *slot = segment;
        count += 1;
    }
    if all.next().is_some() {
        return None;
    }
    parts.get(..count).map(f)
}

/// Finds the first route answering `method path`: the path is split once, each route with as
/// many segments is compared without allocating, and only the route found collects parameters.
pub fn find(routes: &[Route], method: Method, path: &str) -> Option<RouteMatch> {
    with_segments(path, |path| {
        let route = routes.iter().find(|route| route.fits(method, path))?;
        Some(RouteMatch {
            handler: route.handler.clone(),
            params: route.params(path),
        })
    })
    .flatten()
}

/// The methods of the routes whose pattern matches `path` (none when no route's does), in
/// registration order without repeats: the `Allow` of a 405.
pub fn allowed_methods(routes: &[Route], path: &str) -> Vec<Method> {
    with_segments(path, |path| {
        let mut methods = Vec::new();
        for route in routes.iter().filter(|route| route.fits_path(path)) {
            if !methods.contains(&route.method) {
                methods.push(route.method);
            }
        }
        methods
    })
    .unwrap_or_default()
}

/// The routes as `GET /a, POST /b/:id`, at most `max` bytes (then how many more there are).
pub fn listing(routes: &[Route], max: usize) -> String {
    let mut out = String::new();
    for (index, route) in routes.iter().enumerate() {
        let entry = format!(
            "{} {}",
            route.method.as_str(),
            sandbox::Clipped(&route.pattern)
        );
        if out.len() + entry.len() + 2 > max {
            out.push_str(&format!(
                "{}… and {} more",
                if out.is_empty() { "" } else { ", " },
                routes.len() - index
            ));
            break;
        }
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(&entry);
    }
    out
}

/// Decodes `%XX` escapes and `+` (as space); invalid escapes stay as they are.
pub fn percent_decode(s: &str) -> String {
    String::from_utf8_lossy(&percent_decode_bytes(s, true)).into_owned()
}

/// Decodes `%XX` escapes (and `+` as space when `plus_is_space`) into bytes; invalid escapes
/// stay as they are (`percent-encoding`, which knows no `+`: that is replaced first, an encoded
/// plus being `%2B`).
pub fn percent_decode_bytes(text: &str, plus_is_space: bool) -> Vec<u8> {
    if plus_is_space && text.contains('+') {
        percent_decode_str(&text.replace('+', " ")).collect()
    } else {
        percent_decode_str(text).collect()
    }
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
        assert_eq!(
            Route::new(Method::Get, "/a/{}", "h"),
            Err(RouteError::UnnamedParam("/a/{}".into()))
        );
        for braces in ["/a{b}", "/{*rest}", "/{a}{b}", "/{a", "/a}", "/{a b}"] {
            let error = Route::new(Method::Get, braces, "h").unwrap_err();
            assert_eq!(error, RouteError::BadBraces(braces.into()));
            assert!(error.to_string().contains("`{name}` or `:name`"), "{error}");
        }
    }

    #[test]
    fn braced_and_colon_parameters_are_the_same() {
        let spin = Route::new(Method::Get, "/greet/{name}/{the-id_2}", "h").unwrap();
        let colon = Route::new(Method::Get, "/greet/:name/:the-id_2", "h").unwrap();
        let expected = Some(vec![
            ("name".into(), "bob".into()),
            ("the-id_2".into(), "7".into()),
        ]);
        assert_eq!(spin.matches(Method::Get, "/greet/bob/7"), expected);
        assert_eq!(colon.matches(Method::Get, "/greet/bob/7"), expected);
        assert_eq!(spin.matches(Method::Get, "/greet/bob"), None);
    }

    #[test]
    fn other_methods_and_the_listing() {
        let routes = vec![
            Route::new(Method::Get, "/items/:id", "get").unwrap(),
            Route::new(Method::Put, "/items/{id}", "put").unwrap(),
            Route::new(Method::Get, "/items/:other", "again").unwrap(),
            Route::new(Method::Post, "/items", "add").unwrap(),
        ];
        assert_eq!(
            allowed_methods(&routes, "/items/7"),
            vec![Method::Get, Method::Put]
        );
        assert_eq!(allowed_methods(&routes, "/items"), vec![Method::Post]);
        assert!(allowed_methods(&routes, "/nothing/here").is_empty());
        assert!(allowed_methods(&routes, &"/x".repeat(MAX_SEGMENTS + 1)).is_empty());
        assert_eq!(
            listing(&routes, 1024),
            "GET /items/:id, PUT /items/{id}, GET /items/:other, POST /items"
        );
        assert_eq!(
            listing(&routes, 40),
            "GET /items/:id, PUT /items/{id}, … and 2 more"
        );
        let many: Vec<Route> = (0..crate::MAX_ROUTES)
            .map(|i| {
                Route::new(Method::Get, &format!("/{}", "x".repeat(i % 900 + 1)), "h").unwrap()
            })
            .collect();
        assert!(listing(&many, 1024).len() <= 1024 + 32);
    }

    #[test]
    fn patterns_and_handlers_are_capped() {
        // The measured attack: 1,000 routes of 1,100 `/:a` segments each, matched against a
        // path of 1,101 segments, collected 1,100 parameters per route and took 96 ms.
        let attack = "/:a".repeat(1_100);
        assert_eq!(
            Route::new(Method::Get, &attack, "h"),
            Err(RouteError::PatternTooLong { bytes: 3_300 })
        );
        let many = "/a".repeat(MAX_SEGMENTS + 1);
        assert_eq!(
            Route::new(Method::Get, &many, "h"),
            Err(RouteError::TooManySegments {
                segments: MAX_SEGMENTS + 1
            })
        );
        assert!(
            Route::new(Method::Get, &"/:a".repeat(MAX_SEGMENTS), "h").is_ok(),
            "the most segments allowed"
        );
        let message = Route::new(Method::Get, &many, "h").unwrap_err().to_string();
        assert!(
            message.contains("33 segments exceeds the limit of 32"),
            "{message}"
        );
        assert_eq!(
            Route::new(Method::Get, "/a", &"h".repeat(MAX_HANDLER_BYTES + 1)),
            Err(RouteError::HandlerTooLong {
                bytes: MAX_HANDLER_BYTES + 1
            })
        );
        // Long, but few segments and few bytes: still fine.
        let long = format!("/{}", "x".repeat(MAX_PATTERN_BYTES - 1));
        assert!(Route::new(Method::Get, &long, "h").is_ok());
    }

    #[test]
    fn only_paths_of_as_many_segments_match_and_empty_segments_do_not_count() {
        let routes = vec![
            Route::new(Method::Get, "/:a/:b", "two").unwrap(),
            Route::new(Method::Get, "/:a/:b/:c", "three").unwrap(),
        ];
        let three = find(&routes, Method::Get, "//x/y//z/").unwrap();
        assert_eq!(three.handler, "three");
        assert_eq!(
            three.params,
            vec![
                ("a".into(), "x".into()),
                ("b".into(), "y".into()),
                ("c".into(), "z".into())
            ]
        );
        assert_eq!(find(&routes, Method::Get, "/x/y").unwrap().handler, "two");
        assert!(find(&routes, Method::Get, "/x").is_none());
        assert!(find(&routes, Method::Get, "/w/x/y/z").is_none());
        assert!(find(&routes, Method::Post, "/x/y").is_none());
        let root = Route::new(Method::Get, "/", "root").unwrap();
        assert_eq!(root.matches(Method::Get, "/"), Some(Vec::new()));
        assert_eq!(root.matches(Method::Get, "/x"), None);
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
        assert_eq!(percent_decode_bytes("a%20b+c", false), b"a b+c");
        assert_eq!(percent_decode_bytes("a%20b+c", true), b"a b c");
        assert_eq!(percent_decode_bytes("%zz%4", false), b"%zz%4");
        assert_eq!(percent_decode_bytes("%ff", false), [255]);
    }
}
