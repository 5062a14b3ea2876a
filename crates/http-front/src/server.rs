//! The server: event loops that own the connections (one of them also accepts) and a pool of
//! workers that run the handler on complete requests.

use std::io;
use std::net::{SocketAddr, TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread::{self, JoinHandle};

use crate::buffers::BufferBudget;
use crate::config::ServerConfig;
use crate::event_loop::{EventLoop, LoopHandle, LoopPoll};
use crate::request::Request;
use crate::response::Response;
use crate::workers::Pool;

/// Application code that answers requests. Called concurrently from the worker threads.
pub trait Handler: Send + Sync + 'static {
    /// The response to `request`.
    fn handle(&self, request: &Request) -> Response;

    /// Whether `request` is cheap and never blocks, so that the I/O thread may answer it itself
    /// instead of handing it to a worker (e.g. a health check). Default: no.
    fn runs_inline(&self, _request: &Request) -> bool {
        false
    }
}

impl<F> Handler for F
where
    F: Fn(&Request) -> Response + Send + Sync + 'static,
{
    fn handle(&self, request: &Request) -> Response {
        self(request)
    }
}

/// Counters kept by a running server.
#[derive(Debug, Default)]
pub struct ServerStats {
    /// Connections accepted and served.
    pub connections_accepted: AtomicU64,
    /// Connections answered with 503 and closed because `max_connections` were open.
    pub connections_rejected: AtomicU64,
    /// Requests parsed and handed to the handler (or answered 503 for a full queue).
    pub requests: AtomicU64,
    /// Requests answered 503 because the worker queue was full.
    pub queue_full: AtomicU64,
    /// Requests answered with a protocol error (4xx/5xx from the parser).
    pub protocol_errors: AtomicU64,
    /// Requests cut at their header or body deadline (408).
    pub timeouts: AtomicU64,
    /// Workers currently running the handler.
    pub busy_workers: AtomicU64,
    /// Requests answered 503 without running because they waited in the queue longer than
    /// [`ServerConfig::queue_timeout`].
    pub queue_expired: AtomicU64,
    /// Queued requests not run because their client went away (reset or closed).
    pub cancelled: AtomicU64,
    /// Requests and responses answered 503 because the buffer budget was used up.
    pub buffers_full: AtomicU64,
    /// The bound on buffered bytes ([`ServerConfig::buffer_budget`]).
    pub(crate) buffers: BufferBudget,
}

impl ServerStats {
    fn with_buffer_budget(limit: usize) -> ServerStats {
        ServerStats {
            buffers: BufferBudget::new(limit),
            ..ServerStats::default()
        }
    }

    /// Bytes connection buffers hold now beyond their free allowance.
    pub fn buffered_bytes(&self) -> usize {
        self.buffers.used()
    }

    /// The bound on [`ServerStats::buffered_bytes`].
    pub fn buffer_budget(&self) -> usize {
        self.buffers.limit()
    }
}

/// State shared by the loops and the workers.
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) loops: Arc<Vec<LoopHandle>>,
    pub(crate) stats: Arc<ServerStats>,
    pub(crate) shutdown: Arc<AtomicBool>,
    /// Connections being served (bounded by `max_connections`).
    pub(crate) open: AtomicUsize,
    /// Refused connections still delivering their 503.
    pub(crate) refusing: AtomicUsize,
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
    loops: Arc<Vec<LoopHandle>>,
    thread: Option<JoinHandle<io::Result<()>>>,
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
            stats: Arc::new(ServerStats::with_buffer_budget(config.buffer_budget)),
            config,
            shutdown: Arc::new(AtomicBool::new(false)),
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
        let (first, others, shared, workers) = self.start(handler)?;
        first.run();
        for other in others {
            if other.join().is_err() {
                log::error!("http: an event loop panicked");
            }
        }
        shared.pool.close();
        for worker in workers {
            if worker.join().is_err() {
                log::error!("http: a worker thread panicked");
            }
        }
        log::info!("http: server stopped");
        Ok(())
    }

    /// Creates the loops and the workers; returns the first loop (which accepts) to run on the
    /// calling thread, the other loops' threads, and the workers' threads.
    #[allow(clippy::type_complexity)]
    fn start(
        self,
        handler: impl Handler,
    ) -> io::Result<(
        EventLoop,
        Vec<JoinHandle<()>>,
        Arc<Shared>,
        Vec<JoinHandle<()>>,
    )> {
        let Server {
            listener,
            config,
            shutdown,
            stats,
        } = self;
        listener.set_nonblocking(true)?;
        deepen_accept_queue(&listener);
        let listener = mio::net::TcpListener::from_std(listener);
        let io_threads = config.io_threads.max(1);
        let mut polls = Vec::with_capacity(io_threads);
        let mut handles = Vec::with_capacity(io_threads);
        for _ in 0..io_threads {
            let (poll, handle) = LoopPoll::new()?;
            polls.push(poll);
            handles.push(handle);
        }
        let loops = Arc::new(handles);
        let handler: Arc<dyn Handler> = Arc::new(handler);
        let shared = Arc::new(Shared {
            pool: Pool::new(config.queue_capacity),
            config,
            handler: Arc::clone(&handler),
            loops: Arc::clone(&loops),
            stats: Arc::clone(&stats),
            shutdown,
            open: AtomicUsize::new(0),
            refusing: AtomicUsize::new(0),
        });
        let workers = shared.pool.start(
            shared.config.workers,
            shared.config.worker_stack_size,
            shared.config.queue_timeout,
            handler,
            Arc::clone(&loops),
            stats,
        )?;
        let mut polls = polls.into_iter();
        let first_poll = polls
            .next()
            .ok_or_else(|| io::Error::other("no event loop"))?;
        let mut others = Vec::new();
        for (index, poll) in polls.enumerate() {
            let event_loop = EventLoop::new(index + 1, poll, None, Arc::clone(&shared))?;
            others.push(
                thread::Builder::new()
                    .name(format!("http-io-{}", index + 1))
                    .spawn(move || event_loop.run())?,
            );
        }
        let address = listener
            .local_addr()
            .map_or_else(|_| "its port".to_string(), |a| a.to_string());
        log::info!(
            "http: serving on {address}: {io_threads} I/O threads, {} workers, queue {}, \
             at most {} connections",
            shared.config.workers.max(1),
            shared.config.queue_capacity,
            shared.config.max_connections
        );
        let first = EventLoop::new(0, first_poll, Some(listener), Arc::clone(&shared))?;
        Ok((first, others, shared, workers))
    }

    /// Serves on a background thread; the handle stops it.
    pub fn spawn(self, handler: impl Handler) -> io::Result<ServerHandle> {
        let local_addr = self.local_addr()?;
        let shutdown = Arc::clone(&self.shutdown);
        let stats = Arc::clone(&self.stats);
        let (first, others, shared, workers) = self.start(handler)?;
        let loops = Arc::clone(&shared.loops);
        let thread = thread::Builder::new()
            .name("http-io-0".to_string())
            .spawn(move || {
                first.run();
                for other in others {
                    let _ = other.join();
                }
                shared.pool.close();
                for worker in workers {
                    let _ = worker.join();
                }
                Ok(())
            })?;
        Ok(ServerHandle {
            local_addr,
            shutdown,
            stats,
            loops,
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

    /// Stops accepting, closes idle connections, lets requests in progress finish (bounded by
    /// a grace period) and waits for all threads.
    pub fn shutdown(mut self) -> io::Result<()> {
        self.signal_stop();
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(io::Error::other("event loop thread panicked"))),
            None => Ok(()),
        }
    }

    fn signal_stop(&self) {
        if self.shutdown.swap(true, Ordering::SeqCst) {
            return;
        }
        for handle in self.loops.iter() {
            handle.wake();
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

/// Connections the kernel may hold completed for us before we accept them (natively).
#[cfg(all(unix, not(target_os = "hermit")))]
const ACCEPT_QUEUE: libc::c_int = 1024;

/// std listens with a backlog of 128, which a burst of new connections overflows while the I/O
/// thread is busy: the kernel then drops SYNs and each client waits a second to retransmit.
/// Linux takes a second `listen` on a listening socket as its new backlog (capped by
/// `net.core.somaxconn`). Under hermit the kernel keeps its own bound (kernel/patches/0021).
#[cfg(all(unix, not(target_os = "hermit")))]
fn deepen_accept_queue(listener: &TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket this server owns; no memory is passed.
    if unsafe { libc::listen(listener.as_raw_fd(), ACCEPT_QUEUE) } != 0 {
        log::debug!(
            "http: keeping the default accept queue: {}",
            io::Error::last_os_error()
        );
    }
}

#[cfg(not(all(unix, not(target_os = "hermit"))))]
fn deepen_accept_queue(_listener: &TcpListener) {}
