//! Server settings: threads, connection bounds and per-connection deadlines.

use std::time::Duration;

use crate::request::Limits;

/// How long a connection may take for each phase of an exchange.
///
/// Body and response deadlines follow a minimum rate: a phase may take its base time plus one
/// second for every [`Timeouts::min_rate`] bytes moved, so a large body at a fair rate passes
/// while a client that trickles (or reads) a few bytes now and then is cut, however long it
/// keeps making progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// From a request's first byte (or from accept, for a new connection) until its head is
    /// complete; 408 beyond.
    pub header: Duration,
    /// Base time for a request body once the head is in; 408 beyond.
    pub body: Duration,
    /// Base time for writing a response; the connection is closed beyond.
    pub send: Duration,
    /// Minimum transfer rate in bytes per second that extends `body` and `send`.
    pub min_rate: u64,
    /// How long an idle keep-alive connection waits for its next request.
    pub keep_alive: Duration,
    /// How long a closing connection drains what the client still sends (so that the client
    /// reads our last response rather than a reset) before it is dropped.
    pub linger: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            header: Duration::from_secs(10),
            body: Duration::from_secs(10),
            send: Duration::from_secs(10),
            min_rate: 1024,
            keep_alive: Duration::from_secs(5),
            linger: Duration::from_secs(2),
        }
    }
}

impl Timeouts {
    /// The time allowed for a phase with base time `base` after `bytes` moved at least at
    /// [`Timeouts::min_rate`].
    pub(crate) fn allowance(&self, base: Duration, bytes: usize) -> Duration {
        let rate = self.min_rate.max(1);
        let earned = Duration::from_millis((bytes as u64).saturating_mul(1000) / rate);
        base.saturating_add(earned)
    }
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Threads that wait for socket events, parse requests and write responses (at least 1).
    /// Connections are spread over them; none of them ever runs a handler that may block.
    pub io_threads: usize,
    /// Threads that run handlers on complete requests (at least 1).
    pub workers: usize,
    /// Complete requests that may wait for a free worker; beyond that a request is answered
    /// `503` with `Retry-After: 1` (the connection stays usable).
    pub queue_capacity: usize,
    /// How long a complete request may wait for a worker; one that waited longer is answered
    /// `503` with `Retry-After` without running (its client has likely given up).
    pub queue_timeout: Duration,
    /// Open connections served at once; a connection beyond it is answered `503` and closed.
    pub max_connections: usize,
    /// Parsing limits per request.
    pub limits: Limits,
    /// Per-connection deadlines.
    pub timeouts: Timeouts,
    /// Bytes that request and response buffers may hold across all connections beyond a
    /// small allowance each (16 KiB: a request head or a small response). A request whose body
    /// (declared or arriving) or a response that does not fit is answered `503` with
    /// `Retry-After` and its connection closed; other connections go on.
    pub buffer_budget: usize,
    /// Whether responses carry a `Date` header.
    pub send_date: bool,
    /// Whether to set `TCP_NODELAY` on connections.
    pub nodelay: bool,
    /// Stack size of worker threads (`None`: the platform default).
    pub worker_stack_size: Option<usize>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, usize::from);
        ServerConfig {
            io_threads: cpus.clamp(1, 4),
            workers: 2,
            queue_capacity: 1024,
            queue_timeout: Duration::from_secs(10),
            max_connections: 4096,
            limits: Limits::default(),
            timeouts: Timeouts::default(),
            buffer_budget: 256 << 20,
            send_date: true,
            nodelay: true,
            worker_stack_size: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowance_grows_with_bytes_at_the_minimum_rate() {
        let timeouts = Timeouts {
            min_rate: 1000,
            ..Timeouts::default()
        };
        let base = Duration::from_secs(2);
        assert_eq!(timeouts.allowance(base, 0), base);
        assert_eq!(timeouts.allowance(base, 500), Duration::from_millis(2500));
        assert_eq!(
            timeouts.allowance(base, usize::MAX),
            base.saturating_add(Duration::from_millis(u64::MAX / 1000))
        );
        let zero_rate = Timeouts {
            min_rate: 0,
            ..Timeouts::default()
        };
        assert_eq!(zero_rate.allowance(base, 1), Duration::from_millis(3000));
    }
}
