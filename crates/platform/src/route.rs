//! Maps a request path to what serves it. Pure: no I/O, unit-tested.

/// Path segments that name platform endpoints and therefore cannot be function names.
pub const RESERVED_NAMES: &[&str] = &["healthz", "metrics", "stats", "api", "exec", "_admin"];

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route<'a> {
    /// `GET /healthz`.
    Health,
    /// `GET /metrics` (Prometheus text).
    Metrics,
    /// `GET /stats/{function}`.
    Stats {
        /// The function's name.
        function: &'a str,
    },
    /// `/_admin/...`: the rest after `/_admin` (starting with `/`, or empty).
    Admin {
        /// The path below `/_admin`.
        rest: &'a str,
    },
    /// `GET /api/{function}/{input}` (or `POST /api/{function}[/]` with a body): a WASI command
    /// with `input` (or the body) on stdin.
    Api {
        /// The function's name.
        function: &'a str,
        /// The (still percent-encoded) input.
        input: &'a str,
    },
    /// `GET|POST /exec/{function}`: a nanoprocess (`_start` takes and returns numbers).
    Exec {
        /// The function's name.
        function: &'a str,
    },
    /// `/{function}/...`: a guest that serves its own routes; `rest` starts with `/`.
    Function {
        /// The function's name.
        function: &'a str,
        /// The path inside the function (at least `/`).
        rest: &'a str,
    },
    /// A path no endpoint and no function name matches (the caller may try the root function).
    Unmatched,
}

/// Whether `name` can name a function: 1–64 bytes of `[A-Za-z0-9_-]`, not reserved.
pub fn is_valid_function_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !RESERVED_NAMES.contains(&name)
}

/// Splits `/first/rest...` into `("first", "/rest...")`; `rest` is empty when there is none.
fn split_first(path: &str) -> (&str, &str) {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    match trimmed.find('/') {
        Some(i) => (&trimmed[..i], &trimmed[i..]),
        None => (trimmed, ""),
    }
}

/// Routes `path` (without query string). Function routes are returned for any valid name;
/// whether such a function exists is the registry's business.
pub fn route(path: &str) -> Route<'_> {
    let (first, rest) = split_first(path);
    match first {
        "healthz" if rest.is_empty() => Route::Health,
        "metrics" if rest.is_empty() => Route::Metrics,
        "stats" => match split_first(rest) {
            (function, "") if !function.is_empty() => Route::Stats { function },
            _ => Route::Unmatched,
        },
        "_admin" => Route::Admin { rest },
        "api" => {
            let (function, input) = split_first(rest);
            // `/api/NAME` (no input in the path; e.g. a POST with the input as body) is
            // `/api/NAME/` with empty input.
            let input = if input.is_empty() {
                Some("")
            } else {
                input.strip_prefix('/')
            };
            match input {
                Some(input) if !function.is_empty() => Route::Api { function, input },
                _ => Route::Unmatched,
            }
        }
        "exec" => match split_first(rest) {
            (function, "") if !function.is_empty() => Route::Exec { function },
            _ => Route::Unmatched,
        },
        name if is_valid_function_name(name) => Route::Function {
            function: name,
            rest: if rest.is_empty() { "/" } else { rest },
        },
        _ => Route::Unmatched,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_endpoints() {
        assert_eq!(route("/healthz"), Route::Health);
        assert_eq!(route("/metrics"), Route::Metrics);
        assert_eq!(route("/stats/fib"), Route::Stats { function: "fib" });
        assert_eq!(route("/stats/"), Route::Unmatched);
        assert_eq!(route("/stats/a/b"), Route::Unmatched);
        assert_eq!(
            route("/_admin/functions/x"),
            Route::Admin {
                rest: "/functions/x"
            }
        );
        assert_eq!(route("/exec/sum"), Route::Exec { function: "sum" });
        assert_eq!(route("/exec"), Route::Unmatched);
    }

    #[test]
    fn api_keeps_the_whole_input() {
        assert_eq!(
            route("/api/fib/20"),
            Route::Api {
                function: "fib",
                input: "20"
            }
        );
        assert_eq!(
            route("/api/echo/a/b%20c"),
            Route::Api {
                function: "echo",
                input: "a/b%20c"
            }
        );
        assert_eq!(
            route("/api/fib/"),
            Route::Api {
                function: "fib",
                input: ""
            }
        );
        assert_eq!(
            route("/api/fib"),
            Route::Api {
                function: "fib",
                input: ""
            }
        );
        assert_eq!(route("/api"), Route::Unmatched);
        assert_eq!(route("/api/"), Route::Unmatched);
    }

    #[test]
    fn function_paths() {
        assert_eq!(
            route("/http-server-demo/hello"),
            Route::Function {
                function: "http-server-demo",
                rest: "/hello"
            }
        );
        assert_eq!(
            route("/todo"),
            Route::Function {
                function: "todo",
                rest: "/"
            }
        );
        assert_eq!(
            route("/todo/items/3"),
            Route::Function {
                function: "todo",
                rest: "/items/3"
            }
        );
        assert_eq!(route("/"), Route::Unmatched);
        assert_eq!(route("/bad.name/x"), Route::Unmatched);
        assert_eq!(route("/healthz/x"), Route::Unmatched);
    }

    #[test]
    fn names() {
        assert!(is_valid_function_name("fib_2-x"));
        assert!(!is_valid_function_name(""));
        assert!(!is_valid_function_name("metrics"));
        assert!(!is_valid_function_name(&"a".repeat(65)));
        assert!(!is_valid_function_name("a b"));
    }
}
