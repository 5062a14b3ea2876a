//! The request handler of the whole server: platform endpoints and function dispatch.

use std::time::Instant;

use http_front::{Handler, HttpError, Request, Response};

use crate::route::{Route, route};
use crate::stats::Stats;

/// Version reported by `/healthz`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The server's handler. Cheap to share: all state is behind `&self`.
pub struct App {
    started: Instant,
    stats: Stats,
}

impl Default for App {
    fn default() -> Self {
        Self::new()
    }
}

impl App {
    /// A platform with no functions yet.
    pub fn new() -> Self {
        App { started: Instant::now(), stats: Stats::new() }
    }

    fn health(&self) -> Response {
        let uptime_ms = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        Response::json(
            200,
            &serde_json::json!({ "status": "ok", "version": VERSION, "uptime_ms": uptime_ms }),
        )
    }

    fn dispatch(&self, request: &Request) -> Result<Response, HttpError> {
        match route(&request.path) {
            Route::Health => Ok(self.health()),
            Route::Metrics => Ok(Response::bytes(
                200,
                "text/plain; version=0.0.4",
                self.stats.prometheus(),
            )),
            _ => Err(HttpError::NotFound),
        }
    }
}

impl Handler for App {
    fn handle(&self, request: &Request) -> Response {
        let started = Instant::now();
        let response = self.dispatch(request).unwrap_or_else(|e| e.to_response());
        log::info!(
            "{} {} -> {} in {} us",
            request.method,
            request.path,
            response.status,
            started.elapsed().as_micros()
        );
        response
    }
}
