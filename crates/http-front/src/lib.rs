//! An event-driven HTTP/1.1 server on `mio`, for Linux and hermit.
//!
//! - [`RequestParser`] turns a byte stream into [`Request`]s (Content-Length and chunked
//!   bodies, pipelining) within fixed [`Limits`].
//! - [`Server`] runs a few I/O threads that own non-blocking connections (idle and slow clients
//!   cost memory, not threads) and a pool of workers that call a [`Handler`] on complete
//!   requests. Each connection has deadlines ([`Timeouts`]): headers within a fixed time, body
//!   and response at a minimum rate, idle keep-alive bounded; [`ServerConfig::max_connections`]
//!   bounds open connections (beyond: `503` and close).
//! - [`HttpError`] is the single mapping from failures to statuses and JSON error bodies.
//!
//! ```no_run
//! use http_front::{Request, Response, Server, ServerConfig};
//!
//! let server = Server::bind("0.0.0.0:8080", ServerConfig::default())?;
//! server.run(|request: &Request| Response::text(200, format!("you asked for {}", request.path)))?;
//! # Ok::<(), std::io::Error>(())
//! ```

// Client-controlled data passes through this crate: nothing here may panic on it (the
// image aborts on panic), so indexing, unwrap and friends are refused outside tests.
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

mod buffers;
mod config;
mod connection;
mod deadlines;
mod error;
mod event_loop;
mod parser;
mod request;
mod response;
mod server;
mod workers;

pub use config::{ServerConfig, Timeouts};
pub use error::{HttpError, reason_phrase};
pub use parser::RequestParser;
pub use request::{Limits, Request, Version};
pub use response::{Response, http_date, http_date_now};
pub use server::{Handler, Server, ServerHandle, ServerStats};
