//! The server: one acceptor thread, a bounded queue and a fixed pool of worker threads that
//! each serve one connection at a time (keep-alive, pipelining, timeouts).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, TryRecvError, TrySendError, channel, sync_channel};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::error::HttpError;
use crate::parser::RequestParser;
use crate::request::{Limits, Request, Version};
use crate::response::{Response, http_date_now};

/// Application code that answers requests. Called concurrently from the worker threads.
pub trait Handler: Send + Sync + 'static {
    /// The response to `request`.
    fn handle(&self, request: &Request) -> Response;
}

impl<F> Handler for F
where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: &Request) -> Response {
        self(request)
    }
}

/// How connection timeouts are enforced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutMode {
    /// Socket timeouts (`set_read_timeout`); where the platform refuses them (hermit),
    /// non-blocking reads polled against a deadline.
    Auto,
    /// Always non-blocking reads polled against a deadline.
    Polling,
    /// No timeouts: a silent client holds its worker until it closes.
    Off,
}

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Worker threads, each serving one connection at a time (at least 1).
    pub workers: usize,
    /// Accepted connections that may wait for a free worker; beyond that new connections
    /// get `503` with `Retry-After: 1`. Zero hands connections only to idle workers.
    pub queue_capacity: usize,
    /// Parsing and timeout limits per connection.
    pub limits: Limits,
    /// How timeouts are enforced.
    pub timeouts: TimeoutMode,
    /// Whether responses carry a `Date` header.
    pub send_date: bool,
    /// Whether to set `TCP_NODELAY` on connections.
    pub nodelay: bool,
    /// Stack size of worker threads (`None`: the platform default).
    pub worker_stack_size: Option<usize>,
    /// Whether finished connections are closed on a background thread, which first waits
    /// (up to 2 s) for the client to close its side. On by default on hermit, whose socket
    /// close blocks until the connection is fully closed and can hang for over a minute after
    /// a simultaneous close.
    pub background_close: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            workers: 2,
            queue_capacity: 16,
            limits: Limits::default(),
            timeouts: TimeoutMode::Auto,
            send_date: true,
            nodelay: true,
            worker_stack_size: None,
            background_close: cfg!(target_os = "hermit"),
        }
    }
}

/// Counters kept by a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted and queued for a worker.
    pub connections_accepted: AtomicU64,
    /// Connections answered with 503 because the queue was full.
    pub connections_rejected: AtomicU64,
    /// Requests handed to the handler.
    pub requests: AtomicU64,
    /// Connections closed after a protocol error response (4xx/5xx from the parser).
    pub protocol_errors: AtomicU64,
    /// Connections currently waiting in the queue for a worker.
    pub queued: AtomicU64,
    /// Workers currently waiting for a connection.
    pub idle_workers: AtomicU64,
}

impl ServerStats {
    /// Whether queued connections wait for a busy worker (approximate, lock-free).
    fn others_waiting(&self) -> bool {
        self.queued.load(Ordering::SeqCst) > self.idle_workers.load(Ordering::SeqCst)
    }
}

/// A bound, not yet running server.
pub struct Server {
    listener: TcpListener,
    config: ServerConfig,
    shutdown: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
}

/// Controls a server started with [`Server::spawn`]. Dropping it stops the server
/// without waiting.
pub struct ServerHandle {
    local_addr: SocketAddr,
    shutdown: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

struct Shared {
    config: ServerConfig,
    handler: Box<dyn Handler>,
    shutdown: Arc<AtomicBool>,
    stats: Arc<ServerStats>,
    /// The closer thread's inbox when `config.background_close` is on.
    closer: Option<Sender<TcpStream>>,
}

impl Shared {
    /// Closes a finished connection: hands it to the closer thread, or drops it here.
    fn release(&self, stream: TcpStream) {
        match &self.closer {
            Some(closer) => {
                // The closer only ends when every sender is gone: a failed send is unreachable,
                // but dropping here is the right fallback anyway.
                if let Err(returned) = closer.send(stream) {
                    drop(returned.0);
                }
            }
            None => drop(stream),
        }
    }
}

impl Server {
    /// Binds a listener on `addr` (port 0 picks a free port).
    pub fn bind(addr: impl ToSocketAddrs, config: ServerConfig) -> io::Result<Server> {
        Ok(Server::from_listener(TcpListener::bind(addr)?, config))
    }

    /// Uses an already bound listener.
    pub fn from_listener(listener: TcpListener, config: ServerConfig) -> Server {
        Server {
            listener,
            config,
            shutdown: Arc::new(AtomicBool::new(false)),
            stats: Arc::new(ServerStats::default()),
        }
    }

    /// The address the listener is bound to.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The server's counters (shared with the running server).
    pub fn stats(&self) -> Arc<ServerStats> {
        Arc::clone(&self.stats)
    }

    /// Serves on the calling thread until shut down (never, unless through a handle).
    pub fn run(self, handler: impl Handler) -> io::Result<()> {
        let Server {
            listener,
            config,
            shutdown,
            stats,
        } = self;
        let (sender, receiver) = sync_channel::<TcpStream>(config.queue_capacity);
        let receiver = Arc::new(Mutex::new(receiver));
        let worker_count = config.workers.max(1);
        let stack_size = config.worker_stack_size;
        let closer = if config.background_close {
            let (closer, inbox) = channel::<TcpStream>();
            thread::Builder::new()
                .name("http-closer".to_string())
                .spawn(move || closer_loop(&inbox))?;
            Some(closer)
        } else {
            None
        };
        let shared = Arc::new(Shared {
            config,
            handler: Box::new(handler),
            shutdown,
            stats,
            closer,
        });

        let mut workers = Vec::with_capacity(worker_count);
        for index in 0..worker_count {
            let mut builder = thread::Builder::new().name(format!("http-worker-{index}"));
            if let Some(size) = stack_size {
                builder = builder.stack_size(size);
            }
            let receiver = Arc::clone(&receiver);
            let shared = Arc::clone(&shared);
            workers.push(builder.spawn(move || worker_loop(&receiver, &shared))?);
        }
        // hermit's getsockname on a listener fails with EINVAL: the address is only logged.
        let address = listener
            .local_addr()
            .map_or_else(|_| "its port".to_string(), |a| a.to_string());
        log::info!(
            "http: serving on {address} with {worker_count} workers, queue {}",
            shared.config.queue_capacity
        );

        for incoming in listener.incoming() {
            if shared.shutdown.load(Ordering::SeqCst) {
                break;
            }
            let stream = match incoming {
                Ok(stream) => stream,
                Err(error) => {
                    log::warn!("http: accept failed: {error}");
                    thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            shared.stats.queued.fetch_add(1, Ordering::SeqCst);
            match sender.try_send(stream) {
                Ok(()) => {
                    shared
                        .stats
                        .connections_accepted
                        .fetch_add(1, Ordering::Relaxed);
                }
                Err(TrySendError::Full(stream)) => {
                    shared.stats.queued.fetch_sub(1, Ordering::SeqCst);
                    shared
                        .stats
                        .connections_rejected
                        .fetch_add(1, Ordering::Relaxed);
                    reject_busy(stream, &shared);
                }
                Err(TrySendError::Disconnected(_)) => break,
            }
        }
        drop(sender);
        for worker in workers {
            if worker.join().is_err() {
                log::error!("http: a worker thread panicked");
            }
        }
        log::info!("http: server stopped");
        Ok(())
    }

    /// Serves on a background thread; the handle stops it.
    pub fn spawn(self, handler: impl Handler) -> io::Result<ServerHandle> {
        let local_addr = self.local_addr()?;
        let shutdown = Arc::clone(&self.shutdown);
        let stats = Arc::clone(&self.stats);
        let thread = thread::Builder::new()
            .name("http-acceptor".to_string())
            .spawn(move || self.run(handler))?;
        Ok(ServerHandle {
            local_addr,
            shutdown,
            stats,
            thread: Some(thread),
        })
    }
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's counters.
    pub fn stats(&self) -> &ServerStats {
        &self.stats
    }

    /// Stops accepting, lets workers finish their current connections and waits for them.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.signal_stop();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("acceptor thread panicked"))),
            None => Ok(()),
        }
    }

    /// Sets the flag and wakes the acceptor with a throw-away connection.
    fn signal_stop(&self) {
        if self.shutdown.swap(true, Ordering::SeqCst) {
            return;
        }
        let mut wake = self.local_addr;
        if wake.ip().is_unspecified() {
            match wake {
                SocketAddr::V4(_) => wake.set_ip([127, 0, 0, 1].into()),
                SocketAddr::V6(_) => wake.set_ip(std::net::Ipv6Addr::LOCALHOST.into()),
            }
        }
        if let Err(error) = TcpStream::connect_timeout(&wake, Duration::from_secs(1)) {
            log::warn!("http: could not wake the acceptor: {error}");
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.signal_stop();
        }
    }
}

fn worker_loop(receiver: &Mutex<Receiver<TcpStream>>, shared: &Shared) {
    loop {
        shared.stats.idle_workers.fetch_add(1, Ordering::SeqCst);
        let next = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        match next {
            Ok(stream) => {
                // Queue first, so a connection in hand-over never looks like it is waiting.
                shared.stats.queued.fetch_sub(1, Ordering::SeqCst);
                shared.stats.idle_workers.fetch_sub(1, Ordering::SeqCst);
                serve_connection(stream, shared);
            }
            Err(_) => {
                shared.stats.idle_workers.fetch_sub(1, Ordering::SeqCst);
                return;
            }
        }
    }
}

/// Answers 503 without blocking the acceptor, then closes.
fn reject_busy(stream: TcpStream, shared: &Shared) {
    let date = shared.config.send_date.then(http_date_now);
    let bytes = HttpError::ServiceUnavailable.to_response().serialize(
        false,
        false,
        Version::Http11,
        date.as_deref(),
    );
    let mut stream = stream;
    if stream.set_nonblocking(true).is_ok() {
        // Drain what already arrived so closing sends FIN rather than RST.
        let mut scratch = [0u8; 4096];
        for _ in 0..16 {
            match stream.read(&mut scratch) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
    }
    if let Err(error) = stream.write_all(&bytes) {
        log::debug!("http: 503 not delivered: {error}");
    }
    let _ = stream.shutdown(Shutdown::Write);
    shared.release(stream);
}

/// How long the closer thread waits for the client to close its side before closing anyway.
/// Clients that close as soon as they have the response (curl) do so well within it; clients
/// that read to end of stream wait for our FIN, so this delay is added to their requests.
const PEER_CLOSE_WAIT: Duration = Duration::from_millis(100);

/// How often the closer thread polls connections waiting for the client's close. 10 ms is
/// also the shortest sleep that blocks on hermit (shorter sleeps spin).
const CLOSER_POLL: Duration = Duration::from_millis(10);

/// Closes that may run at once on their own threads once [`PEER_CLOSE_WAIT`] expired.
const MAX_SLOW_CLOSES: usize = 16;

static SLOW_CLOSES: AtomicUsize = AtomicUsize::new(0);

/// The closer thread: keeps finished connections until the client has closed its side
/// (reads return end of stream) or [`PEER_CLOSE_WAIT`] passed, then drops them.
///
/// Why: hermit 0.11's socket close sends FIN and blocks until the connection is no longer
/// active, and `shutdown` is a no-op. When the client closes at the same moment (curl closes
/// as soon as it has a `Connection: close` response), smoltcp ends up in CLOSING, drops the
/// client's final FIN|ACK as a duplicate (its sequence number is already acknowledged) and
/// stays there until a timer, apparently the 75 s keep-alive, ends it: workers dropping such
/// streams blocked for ~70 s, all of them after a few hundred requests. Closing only after the client's FIN
/// (CLOSE-WAIT -> LAST-ACK) avoids the simultaneous close, and doing it here keeps workers free.
fn closer_loop(inbox: &Receiver<TcpStream>) {
    let mut pending: Vec<(TcpStream, Instant)> = Vec::new();
    let mut scratch = vec![0u8; 4096];
    let mut open = true;
    while open || !pending.is_empty() {
        if pending.is_empty() {
            match inbox.recv() {
                Ok(stream) => admit(&mut pending, stream),
                Err(_) => open = false,
            }
        }
        while open {
            match inbox.try_recv() {
                Ok(stream) => admit(&mut pending, stream),
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => open = false,
            }
        }
        let now = Instant::now();
        let mut index = 0;
        while index < pending.len() {
            let (stream, deadline) = &mut pending[index];
            if peer_closed(stream, &mut scratch) {
                drop(pending.swap_remove(index).0);
            } else if now >= *deadline {
                close_slowly(pending.swap_remove(index).0);
            } else {
                index += 1;
            }
        }
        if !pending.is_empty() {
            thread::sleep(CLOSER_POLL);
        }
    }
}

fn admit(pending: &mut Vec<(TcpStream, Instant)>, stream: TcpStream) {
    if stream.set_nonblocking(true).is_ok() {
        pending.push((stream, Instant::now() + PEER_CLOSE_WAIT));
    } else {
        drop(stream);
    }
}

/// Whether the client closed its side (or the connection failed); discards what it sent.
fn peer_closed(stream: &mut TcpStream, scratch: &mut [u8]) -> bool {
    for _ in 0..16 {
        match stream.read(scratch) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(error) => match error.kind() {
                io::ErrorKind::Interrupted => {}
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => return false,
                _ => return true,
            },
        }
    }
    false
}

/// Drops a connection whose client did not close in time. That drop may block for long on
/// hermit, so it runs on its own thread unless too many already do.
fn close_slowly(stream: TcpStream) {
    if SLOW_CLOSES.fetch_add(1, Ordering::SeqCst) >= MAX_SLOW_CLOSES {
        SLOW_CLOSES.fetch_sub(1, Ordering::SeqCst);
        drop(stream);
        return;
    }
    let spawned = thread::Builder::new()
        .name("http-slow-close".to_string())
        .stack_size(64 * 1024)
        .spawn(move || {
            drop(stream);
            SLOW_CLOSES.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(error) = spawned {
        SLOW_CLOSES.fetch_sub(1, Ordering::SeqCst);
        log::warn!("http: no thread for a slow close ({error})");
    }
}

/// What a read with a deadline produced.
enum ReadOutcome {
    Data(usize),
    Eof,
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum IoMode {
    Socket,
    Polling,
    Unbounded,
}

static POLLING_FALLBACK_LOGGED: AtomicBool = AtomicBool::new(false);

/// A connection with deadline-aware reads and stall-aware writes.
struct Conn {
    stream: TcpStream,
    mode: IoMode,
    write_timeout_set: bool,
}

impl Conn {
    fn new(stream: TcpStream, timeouts: TimeoutMode) -> Conn {
        let mut conn = Conn {
            stream,
            mode: IoMode::Socket,
            write_timeout_set: false,
        };
        match timeouts {
            TimeoutMode::Auto => {}
            TimeoutMode::Polling => conn.enter_polling(),
            TimeoutMode::Off => conn.mode = IoMode::Unbounded,
        }
        conn
    }

    fn enter_polling(&mut self) {
        self.mode = match self.stream.set_nonblocking(true) {
            Ok(()) => IoMode::Polling,
            Err(error) => {
                log::warn!("http: no connection timeouts available ({error})");
                IoMode::Unbounded
            }
        };
    }

    fn read(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<ReadOutcome> {
        let mut backoff = Backoff::default();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() && self.mode != IoMode::Unbounded {
                return Ok(ReadOutcome::TimedOut);
            }
            if self.mode == IoMode::Socket
                && let Err(error) = self.stream.set_read_timeout(Some(remaining))
            {
                if !POLLING_FALLBACK_LOGGED.swap(true, Ordering::Relaxed) {
                    log::info!("http: socket timeouts unavailable ({error}), polling instead");
                }
                self.enter_polling();
                continue;
            }
            match self.stream.read(buf) {
                Ok(0) => return Ok(ReadOutcome::Eof),
                Ok(n) => return Ok(ReadOutcome::Data(n)),
                Err(error) => match error.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => {
                        if self.mode == IoMode::Polling {
                            backoff.wait();
                        }
                    }
                    _ => return Err(error),
                },
            }
        }
    }

    /// Writes everything, failing when no progress is made for `stall`.
    fn write_all(&mut self, mut data: &[u8], stall: Duration) -> io::Result<()> {
        if self.mode == IoMode::Socket && !self.write_timeout_set {
            let stall = if stall.is_zero() {
                Duration::from_millis(1)
            } else {
                stall
            };
            match self.stream.set_write_timeout(Some(stall)) {
                Ok(()) => self.write_timeout_set = true,
                Err(_) => self.enter_polling(),
            }
        }
        let mut last_progress = Instant::now();
        let mut backoff = Backoff::default();
        while !data.is_empty() {
            match self.stream.write(data) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    data = &data[n..];
                    last_progress = Instant::now();
                    backoff = Backoff::default();
                }
                Err(error) => match error.kind() {
                    io::ErrorKind::Interrupted => {}
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        if self.mode == IoMode::Polling && last_progress.elapsed() < stall =>
                    {
                        backoff.wait();
                    }
                    _ => return Err(error),
                },
            }
        }
        Ok(())
    }

    /// Ends the connection after the last response: FIN first, then (if the client may
    /// still be sending) reads and discards for a moment so the response is not lost to a
    /// RST. With a closer thread (`background`) that does the draining instead.
    fn finish(&mut self, linger: bool, background: bool) {
        let _ = self.stream.flush();
        let _ = self.stream.shutdown(Shutdown::Write);
        // Without timeouts a lingering read could block until the client closes.
        if !linger || background || self.mode == IoMode::Unbounded {
            return;
        }
        let deadline = Instant::now() + Duration::from_millis(500);
        let mut scratch = vec![0u8; 8192];
        let mut discarded = 0usize;
        while discarded < 256 * 1024 {
            match self.read(&mut scratch, deadline) {
                Ok(ReadOutcome::Data(n)) => discarded += n,
                _ => break,
            }
        }
    }
}

/// How often an idle keep-alive connection checks whether it should give up its worker.
const IDLE_CHECK: Duration = Duration::from_millis(50);

/// How long a keep-alive connection must have been idle before it is closed in favour of
/// queued connections (shorter idle times race with a request already in flight).
const IDLE_YIELD_AFTER: Duration = Duration::from_millis(100);

/// Waits between polls of a non-blocking socket: a few yields, then growing sleeps.
#[derive(Default)]
struct Backoff {
    rounds: u32,
}

impl Backoff {
    fn wait(&mut self) {
        if self.rounds < 8 {
            thread::yield_now();
        } else {
            let millis = 1u64 << ((self.rounds - 8) / 4).min(2);
            thread::sleep(Duration::from_millis(millis));
        }
        self.rounds = self.rounds.saturating_add(1);
    }
}

fn serve_connection(stream: TcpStream, shared: &Shared) {
    if shared.config.nodelay {
        let _ = stream.set_nodelay(true);
    }
    let mut conn = Conn::new(stream, shared.config.timeouts);
    serve_requests(&mut conn, shared);
    shared.release(conn.stream);
}

/// Serves requests on `conn` until it should be closed.
fn serve_requests(conn: &mut Conn, shared: &Shared) {
    let config = &shared.config;
    let limits = config.limits;
    let background = shared.closer.is_some();
    let mut parser = RequestParser::new(limits);
    let mut buf = vec![0u8; 16 * 1024];
    let mut served = 0usize;
    let date = || config.send_date.then(http_date_now);

    loop {
        // Wait for the next complete request.
        let wait_start = Instant::now();
        let idle_deadline = wait_start
            + if served == 0 {
                limits.read_timeout
            } else {
                limits.keep_alive_timeout
            };
        let mut request_deadline = None;
        let request = loop {
            match parser.next_request() {
                Ok(Some(request)) => break request,
                Ok(None) => {}
                Err(error) => {
                    log::debug!("http: protocol error: {error}");
                    shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                    let bytes = error.to_response().serialize(
                        false,
                        false,
                        Version::Http11,
                        date().as_deref(),
                    );
                    let _ = conn.write_all(&bytes, limits.read_timeout);
                    conn.finish(true, background);
                    return;
                }
            }
            if parser.take_continue()
                && conn
                    .write_all(b"HTTP/1.1 100 Continue\r\n\r\n", limits.read_timeout)
                    .is_err()
            {
                return;
            }
            let idle = parser.is_idle();
            // Between requests, give the worker up to waiting connections or a shutdown.
            if idle
                && (shared.shutdown.load(Ordering::SeqCst)
                    || (served > 0
                        && wait_start.elapsed() >= IDLE_YIELD_AFTER
                        && shared.stats.others_waiting()))
            {
                conn.finish(false, background);
                return;
            }
            let deadline = if idle {
                idle_deadline.min(Instant::now() + IDLE_CHECK)
            } else {
                *request_deadline.get_or_insert_with(|| Instant::now() + limits.read_timeout)
            };
            match conn.read(&mut buf, deadline) {
                Ok(ReadOutcome::Data(n)) => parser.push(&buf[..n]),
                Ok(ReadOutcome::Eof) => {
                    if !parser.is_idle() {
                        log::debug!("http: client closed in the middle of a request");
                    }
                    return;
                }
                Ok(ReadOutcome::TimedOut) => {
                    if idle && Instant::now() < idle_deadline {
                        continue;
                    }
                    if !idle {
                        shared.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
                        let bytes = HttpError::RequestTimeout.to_response().serialize(
                            false,
                            false,
                            Version::Http11,
                            date().as_deref(),
                        );
                        let _ = conn.write_all(&bytes, limits.read_timeout);
                        conn.finish(true, background);
                    }
                    return;
                }
                Err(error) => {
                    log::debug!("http: read failed: {error}");
                    return;
                }
            }
        };

        served += 1;
        shared.stats.requests.fetch_add(1, Ordering::Relaxed);
        // Close after this response when others wait for a worker, so that a few
        // keep-alive clients cannot starve the queue.
        let mut keep_alive = request.keep_alive()
            && served < limits.max_requests_per_connection
            && !shared.shutdown.load(Ordering::SeqCst)
            && !shared.stats.others_waiting();
        let response = match catch_unwind(AssertUnwindSafe(|| shared.handler.handle(&request))) {
            Ok(response) => response,
            Err(_) => {
                log::error!(
                    "http: handler panicked on {} {}",
                    request.method,
                    request.path
                );
                keep_alive = false;
                HttpError::Internal("handler panicked".to_string()).to_response()
            }
        };
        keep_alive &= !response.wants_close();
        log::debug!(
            "http: {} {} -> {}",
            request.method,
            request.target(),
            response.status
        );
        let bytes = response.serialize(
            request.is_head(),
            keep_alive,
            request.version,
            date().as_deref(),
        );
        if let Err(error) = conn.write_all(&bytes, limits.read_timeout) {
            log::debug!("http: write failed: {error}");
            return;
        }
        if !keep_alive {
            let unread = parser.buffered() > 0;
            conn.finish(unread, background);
            return;
        }
    }
}
