//! One connection's state machine: read and parse until a request is complete, hand it out,
//! write the response, then wait for the next request or close. It never blocks: it moves what
//! the socket allows and says what it waits for.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mio::net::TcpStream;

use crate::buffers::{BufferBudget, BufferCharge};
use crate::config::ServerConfig;
use crate::deadlines::Deadline;
use crate::error::HttpError;
use crate::parser::RequestParser;
use crate::request::{Request, Version};
use crate::response::Response;
use crate::server::ServerStats;

/// Bytes drained from a closing connection before it is dropped regardless.
const MAX_DRAIN: usize = 1 << 20;

/// Buffer capacity an idle connection may keep.
const IDLE_BUFFER: usize = 4096;

/// Where a connection is in its exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing of the next request has arrived (a new or an idle keep-alive connection).
    Waiting,
    /// Part of a request head has arrived.
    Head,
    /// The head is complete; the body is arriving.
    Body,
    /// A complete request is with a handler.
    Dispatched {
        keep_alive: bool,
        head_only: bool,
        version: Version,
    },
    /// A response is being written.
    Writing { close_after: bool },
    /// Our side is shut down; what the client still sends is drained until it closes.
    Closing,
}

/// What the connection waits for after [`Connection::drive`].
#[derive(Debug)]
pub(crate) enum Step {
    /// Socket readiness or its deadline.
    Wait,
    /// A handler's response to this request.
    Dispatch(Request),
    /// Nothing: drop it.
    Close,
    /// Drop it and discard what it has not delivered yet (a reader too slow to keep).
    Abort,
}

/// What [`Connection::drive`] needs from its event loop.
pub(crate) struct Context<'a> {
    pub(crate) config: &'a ServerConfig,
    pub(crate) now: Instant,
    /// The `Date` header value, if responses carry one.
    pub(crate) date: Option<&'a str>,
    /// Scratch space for reads.
    pub(crate) scratch: &'a mut [u8],
    /// The server is shutting down: no more keep-alive.
    pub(crate) shutting_down: bool,
    /// Where protocol errors and timeouts are counted.
    pub(crate) stats: &'a ServerStats,
    /// The server-wide bound on buffered bytes.
    pub(crate) budget: &'a BufferBudget,
}

/// One client connection.
pub(crate) struct Connection {
    pub(crate) stream: TcpStream,
    parser: RequestParser,
    phase: Phase,
    out: Vec<u8>,
    out_pos: usize,
    /// The socket may have data (or EOF) to read.
    pub(crate) readable: bool,
    /// The socket may accept data.
    pub(crate) writable: bool,
    served: usize,
    phase_started: Instant,
    /// Bytes moved in the current body or response phase (for the minimum rate).
    moved: usize,
    /// What this connection's buffers (and a request it handed out) hold of the budget.
    buffers: BufferCharge,
    /// Set when the client goes away while its request waits for a worker.
    cancel: Option<Arc<AtomicBool>>,
    pub(crate) deadline: Deadline,
}

impl Connection {
    /// A freshly accepted connection.
    pub(crate) fn new(stream: TcpStream, config: &ServerConfig, now: Instant) -> Connection {
        Connection {
            stream,
            parser: RequestParser::new(config.limits),
            phase: Phase::Waiting,
            out: Vec::new(),
            out_pos: 0,
            readable: true,
            writable: true,
            served: 0,
            phase_started: now,
            moved: 0,
            buffers: BufferCharge::default(),
            cancel: None,
            deadline: Deadline::default(),
        }
    }

    /// A connection that is only told `error` (e.g. 503 when the server is full) and closed.
    pub(crate) fn refuse(
        stream: TcpStream,
        error: &HttpError,
        config: &ServerConfig,
        now: Instant,
        date: Option<&str>,
    ) -> Connection {
        let mut conn = Connection::new(stream, config, now);
        conn.out = error
            .to_response()
            .serialize(false, false, Version::Http11, date);
        conn.phase = Phase::Writing { close_after: true };
        conn
    }

    /// When the current phase expires (`None` while a handler has the request).
    pub(crate) fn due(&self, config: &ServerConfig) -> Option<Instant> {
        let t = &config.timeouts;
        let started = self.phase_started;
        let allowed = match self.phase {
            Phase::Waiting if self.served == 0 => t.header,
            Phase::Waiting => t.keep_alive,
            Phase::Head => t.header,
            Phase::Body => t.allowance(t.body, self.moved),
            Phase::Dispatched { .. } => return None,
            Phase::Writing { .. } => t.allowance(t.send, self.moved),
            Phase::Closing => t.linger,
        };
        Some(started.checked_add(allowed).unwrap_or(started))
    }

    /// Whether nothing is in progress (an idle keep-alive or a new silent connection).
    pub(crate) fn is_waiting(&self) -> bool {
        self.phase == Phase::Waiting
    }

    fn enter(&mut self, phase: Phase, now: Instant) {
        self.phase = phase;
        self.phase_started = now;
        self.moved = 0;
    }

    /// Moves everything the socket allows and returns what the connection waits for next.
    pub(crate) fn drive(&mut self, cx: &mut Context<'_>) -> Step {
        loop {
            match self.phase {
                Phase::Dispatched { .. } => return Step::Wait,
                Phase::Writing { close_after } => match self.flush() {
                    Ok(true) => self.finish_response(close_after, cx),
                    Ok(false) => return Step::Wait,
                    Err(_) => return Step::Close,
                },
                Phase::Closing => return self.drain(cx.scratch),
                Phase::Waiting | Phase::Head | Phase::Body => {
                    if let Some(step) = self.receive(cx) {
                        return step;
                    }
                }
            }
        }
    }

    /// One round of the reading phases; `None` to go on driving.
    fn receive(&mut self, cx: &mut Context<'_>) -> Option<Step> {
        // A pending `100 Continue`.
        match self.flush() {
            Ok(true) => {}
            Ok(false) => return Some(Step::Wait),
            Err(_) => return Some(Step::Close),
        }
        match self.parser.next_request() {
            Ok(Some(request)) => return Some(self.dispatch(request, cx)),
            Ok(None) => {}
            Err(error) => {
                log::debug!("http: protocol error: {error}");
                cx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                self.respond_error(&error, cx);
                return None;
            }
        }
        // What arrived so far (and the body capacity a declared length reserved) must fit in
        // the budget; else this request alone fails, before more of it is read.
        let held = self.parser.footprint() + self.out.capacity();
        if !self.buffers.try_set(cx.budget, held) {
            log::debug!("http: buffer budget exhausted; refusing a request of {held} bytes");
            cx.stats.buffers_full.fetch_add(1, Ordering::Relaxed);
            self.parser = RequestParser::new(cx.config.limits);
            self.respond_error(
                &HttpError::BuffersFull {
                    limit: cx.budget.limit(),
                },
                cx,
            );
            return None;
        }
        if self.parser.take_continue() {
            self.out.extend_from_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
            return None;
        }
        self.track_progress(cx.now);
        if !self.readable {
            return Some(Step::Wait);
        }
        match self.stream.read(cx.scratch) {
            Ok(0) => {
                if !self.parser.is_idle() {
                    log::debug!("http: client closed in the middle of a request");
                }
                Some(Step::Close)
            }
            Ok(n) => {
                self.parser.push(cx.scratch.get(..n).unwrap_or_default());
                None
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                self.readable = false;
                Some(Step::Wait)
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => None,
            Err(error) => {
                log::debug!("http: read failed: {error}");
                Some(Step::Close)
            }
        }
    }

    /// Moves between waiting, head and body as bytes arrive, starting each phase's clock.
    fn track_progress(&mut self, now: Instant) {
        match (self.phase, self.parser.body_progress()) {
            (Phase::Body, Some(received)) => self.moved = received,
            (_, Some(received)) => {
                self.enter(Phase::Body, now);
                self.moved = received;
            }
            (Phase::Waiting, None) if !self.parser.is_idle() => self.enter(Phase::Head, now),
            _ => {}
        }
    }

    fn dispatch(&mut self, request: Request, cx: &Context<'_>) -> Step {
        // The request was admitted byte by byte as it arrived; it stays charged to this
        // connection until its response replaces it.
        self.buffers.set(
            cx.budget,
            request.footprint() + self.parser.footprint() + self.out.capacity(),
        );
        self.served += 1;
        let keep_alive = request.keep_alive()
            && self.served < cx.config.limits.max_requests_per_connection
            && !cx.shutting_down;
        self.enter(
            Phase::Dispatched {
                keep_alive,
                head_only: request.is_head(),
                version: request.version,
            },
            cx.now,
        );
        Step::Dispatch(request)
    }

    /// The flag a worker looks at before running this connection's dispatched request.
    pub(crate) fn cancel_flag(&mut self) -> Arc<AtomicBool> {
        Arc::clone(self.cancel.get_or_insert_with(Default::default))
    }

    /// The client went away (reset, or closed both ways): a dispatched request is not run.
    pub(crate) fn client_gone(&self) {
        if let (Phase::Dispatched { .. }, Some(cancel)) = (self.phase, &self.cancel) {
            cancel.store(true, Ordering::Release);
        }
    }

    /// Starts writing the handler's `response` to the dispatched request.
    pub(crate) fn respond(&mut self, response: &Response, cx: &Context<'_>) {
        let Phase::Dispatched {
            keep_alive,
            head_only,
            version,
        } = self.phase
        else {
            return;
        };
        self.cancel = None;
        let keep_alive = keep_alive && !response.wants_close() && !cx.shutting_down;
        let bytes = response.serialize(head_only, keep_alive, version, cx.date);
        let held = self.parser.footprint() + self.out.capacity() + bytes.capacity();
        if !self.buffers.try_set(cx.budget, held) {
            log::debug!("http: buffer budget exhausted; dropping a response of {held} bytes");
            cx.stats.buffers_full.fetch_add(1, Ordering::Relaxed);
            drop(bytes);
            self.respond_error(
                &HttpError::BuffersFull {
                    limit: cx.budget.limit(),
                },
                cx,
            );
            return;
        }
        self.out.extend_from_slice(&bytes);
        self.enter(
            Phase::Writing {
                close_after: !keep_alive,
            },
            cx.now,
        );
    }

    /// Answers a protocol error or timeout and closes after it.
    fn respond_error(&mut self, error: &HttpError, cx: &Context<'_>) {
        self.out.extend_from_slice(&error.to_response().serialize(
            false,
            false,
            Version::Http11,
            cx.date,
        ));
        // An error answer is small; it is charged whatever the budget says.
        self.buffers
            .set(cx.budget, self.parser.footprint() + self.out.capacity());
        self.enter(Phase::Writing { close_after: true }, cx.now);
    }

    /// Gives this connection's share of the buffer budget back (it is being dropped).
    pub(crate) fn release_buffers(&mut self, budget: &BufferBudget) {
        self.buffers.release(budget);
    }

    /// The phase's deadline passed; what to do now.
    pub(crate) fn expire(&mut self, cx: &mut Context<'_>) -> Step {
        match self.phase {
            Phase::Head | Phase::Body => {
                cx.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.respond_error(&HttpError::RequestTimeout, cx);
                self.drive(cx)
            }
            Phase::Dispatched { .. } => Step::Wait,
            Phase::Writing { .. } => Step::Abort,
            Phase::Waiting | Phase::Closing => Step::Close,
        }
    }

    fn finish_response(&mut self, close_after: bool, cx: &Context<'_>) {
        if self.out.capacity() > 64 * 1024 {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        self.out_pos = 0;
        if close_after {
            let _ = self.stream.shutdown(Shutdown::Write);
            self.enter(Phase::Closing, cx.now);
        } else {
            self.parser.shrink_idle(IDLE_BUFFER);
            self.enter(Phase::Waiting, cx.now);
        }
        self.buffers
            .set(cx.budget, self.parser.footprint() + self.out.capacity());
    }

    /// Makes dropping the socket reset the connection instead of delivering what is still
    /// queued in the kernel (a reader cut for being too slow would otherwise keep receiving it).
    pub(crate) fn discard_unsent(&self) {
        #[cfg(unix)]
        {
            use std::os::fd::AsRawFd;
            let linger = libc::linger {
                l_onoff: 1,
                l_linger: 0,
            };
            // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid `linger` on a
            // socket this connection owns.
            let _ = unsafe {
                libc::setsockopt(
                    self.stream.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_LINGER,
                    (&raw const linger).cast(),
                    std::mem::size_of::<libc::linger>() as libc::socklen_t,
                )
            };
        }
        // hermit: the kernel aborts connections that do not finish closing in bounded time.
    }

    /// Writes pending output; `Ok(true)` when all is written.
    fn flush(&mut self) -> io::Result<bool> {
        while self.out_pos < self.out.len() {
            if !self.writable {
                return Ok(false);
            }
            let pending = self.out.get(self.out_pos..).unwrap_or_default();
            match self.stream.write(pending) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.out_pos += n;
                    if matches!(self.phase, Phase::Writing { .. }) {
                        self.moved += n;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(false);
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::debug!("http: write failed: {error}");
                    return Err(error);
                }
            }
        }
        if !self.out.is_empty() && !matches!(self.phase, Phase::Writing { .. }) {
            self.out.clear();
            self.out_pos = 0;
        }
        Ok(true)
    }

    /// Reads and discards until the client closes, it would block, or enough was drained.
    fn drain(&mut self, scratch: &mut [u8]) -> Step {
        while self.readable {
            match self.stream.read(scratch) {
                Ok(0) => return Step::Close,
                Ok(n) => {
                    self.moved += n;
                    if self.moved > MAX_DRAIN {
                        return Step::Close;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
        Step::Wait
    }
}
