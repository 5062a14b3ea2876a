//! A small blocking HTTP/1.1 server on `std::net`, portable to hermit (no libc-specific APIs).
//!
//! - [`RequestParser`] turns a byte stream into [`Request`]s (Content-Length and chunked
//!   bodies, pipelining) within fixed [`Limits`].
//! - [`Server`] accepts connections and hands them through a bounded queue to a fixed pool of
//!   workers that call a [`Handler`]; when the queue is full, new connections get `503`.
//! - [`HttpError`] is the single mapping from failures to statuses and JSON error bodies.
//!
//! ```no_run
//! use http_front::{Request, Response, Server, ServerConfig};
//!
//! let server = Server::bind("0.0.0.0:8080", ServerConfig::default())?;
//! server.run(|request: &Request| Response::text(200, format!("you asked for {}", request.path)))?;
//! # Ok::<(), std::io::Error>(())
//! ```

mod error;
mod parser;
mod request;
mod response;
mod server;

pub use error::{HttpError, reason_phrase};
pub use parser::RequestParser;
pub use request::{Limits, Request, Version};
pub use response::{Response, http_date, http_date_now};
pub use server::{Handler, Server, ServerConfig, ServerHandle, ServerStats, TimeoutMode};
