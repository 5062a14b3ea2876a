//! Runs HTTP functions — wasm guests of the `http-function` world in `wit/` — in wasmi.
//!
//! [`FunctionHost::load`] compiles and validates a guest once and runs its `on-server-init` to
//! learn its routes; [`Function::handle`] answers one request in a fresh store and instance.
//! Every run happens in the [`sandbox`]: fuel slices under a deadline, one memory budget for
//! linear memory, tables and what the host allocates for the guest (lifted values, routes, store
//! replies), and no host imports from inside host callbacks. Guest memory is only touched by the
//! bindings generated from `wit/` at build time (`build.rs`, runtime in [`abi`] and [`glue`]).

// Guest-controlled data passes through this crate: nothing here may panic on it (the image
// aborts on panic), so indexing, unwrap and friends are refused outside tests.
#![cfg_attr(
    not(test),
    deny(
        clippy::indexing_slicing,
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable,
        clippy::todo,
        clippy::unimplemented
    )
)]

pub mod abi;
#[cfg(test)]
mod abi_tests;
pub mod glue;
mod guest_log;
mod host;
mod resources;
mod routes;

/// Host bindings generated from `wit/` by `build.rs`.
#[allow(
    missing_docs,
    clippy::all,
    unused_imports,
    unused_variables,
    unused_mut,
    dead_code
)]
pub mod bindings {
    include!(concat!(env!("OUT_DIR"), "/bindings.rs"));
}

pub use bindings::http_types::{HttpError, Method};
pub use guest_log::LOG_BYTES_PER_RUN;
pub use host::{
    Function, FunctionHost, GuestRequest, GuestResponse, HostConfig, Invocation, InvokeError,
    LoadError,
};
pub use resources::MAX_ROUTES;
pub use routes::{
    MAX_HANDLER_BYTES, MAX_PATTERN_BYTES, MAX_SEGMENTS, Route, RouteError, RouteMatch,
    percent_decode_bytes,
};

impl Method {
    /// Parses an HTTP method name (case-sensitive, as on the wire).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "GET" => Method::Get,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "DELETE" => Method::Delete,
            "PATCH" => Method::Patch,
            "HEAD" => Method::Head,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    /// The method name as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Delete => "DELETE",
            Method::Patch => "PATCH",
            Method::Head => "HEAD",
            Method::Options => "OPTIONS",
        }
    }
}

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid url: {m}"),
            HttpError::TimeoutError(m) => write!(f, "timeout: {m}"),
            HttpError::ProtocolError(m) => write!(f, "protocol error: {m}"),
            HttpError::StatusError(s) => write!(f, "status {s}"),
            HttpError::UnexpectedError(m) => write!(f, "unexpected error: {m}"),
        }
    }
}

impl HttpError {
    /// The HTTP status a guest-returned error answers with: a `status-error` with a final
    /// status (200..=599) answers with it; an interim (1xx) or out-of-range one is a 500.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::StatusError(s) if (200..=599).contains(s) => *s,
            HttpError::InvalidUrl(_) | HttpError::ProtocolError(_) => 400,
            HttpError::TimeoutError(_) => 504,
            HttpError::StatusError(_) | HttpError::UnexpectedError(_) => 500,
        }
    }
}
